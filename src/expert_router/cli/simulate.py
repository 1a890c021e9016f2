"""``expert-router simulate``: the user sweep in virtual time against emulated experts.

Writes the live bench's layout: ``DIR/users-<N>/{records.parquet,summary.json}`` per user
count, then ``DIR/sweep.csv``, the figures and ``report.html``.
"""

from __future__ import annotations

import argparse
from typing import Any

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.cli.args import parse_users
from expert_router.cli.emulate import add_overrides, overrides
from expert_router.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run the user sweep against emulated experts in virtual time",
        description="Simulate users against emulated experts in virtual time (seconds of wall "
        "time for hours of serving); writes the same records and summaries as `bench`.",
    )
    p.add_argument("--preset", required=True, help="A, B, C, D, ... or a preset YAML file")
    p.add_argument("--users", default="1,100,200,...,1000", help="user counts, e.g. 1,100,...,1000")
    p.add_argument(
        "--output-tokens", type=int, default=OUTPUT_TOKENS, help="tokens per answer (%(default)s)"
    )
    p.add_argument("--base-tokens", type=int, default=BASE_TOKENS, help="base prompt (%(default)s)")
    p.add_argument(
        "--continuation-tokens",
        type=int,
        default=CONTINUATION_TOKENS,
        help="continuation (%(default)s)",
    )
    p.add_argument("--jitter", type=int, default=JITTER, help="± tokens (%(default)s)")
    p.add_argument("--turns", type=int, default=2, help="requests per user (2: base + cont.)")
    p.add_argument("--repeat", type=int, default=1, help="repetitions per user count")
    p.add_argument("--distribution", default="uniform", help="uniform | normal | weights:...")
    p.add_argument("--clusters", type=int, default=8, help="topic clusters (8)")
    p.add_argument("--experts", type=int, help="engines (default: 1 for tp>1 presets, else 8)")
    p.add_argument("--ramp", type=float, default=0.0, help="spread user starts over S seconds")
    p.add_argument("--paper-gateway", action="store_true",
                   help="add the paper's gateway latency (log-normal, 442 +- 302 ms) to every "
                   "request")  # fmt: skip
    p.add_argument("--window", type=float, default=60.0, help="time-bucket width in s (60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="name of the configuration in the report (default: preset)")
    p.add_argument("--out", required=True, help="output directory")
    add_overrides(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from expert_router.emulator.delay import PAPER_GATEWAY
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.sweep import simulate_sweep
    from expert_router.emulator.virtual import SimWorkload, default_experts

    preset = get_preset(args.preset, **overrides(args))
    users = parse_users(args.users)
    experts = args.experts or default_experts(preset)
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    out = Path(args.out)
    console = Console(stderr=True)
    workload = SimWorkload(
        users=users[0],
        output_tokens=args.output_tokens,
        base_tokens=args.base_tokens,
        continuation_tokens=args.continuation_tokens,
        jitter=args.jitter,
        turns=args.turns,
        distribution=args.distribution,
        clusters=args.clusters,
        ramp_s=args.ramp,
        gateway=PAPER_GATEWAY if args.paper_gateway else None,
        seed=args.seed,
    )
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {preset.name}", total=len(users))
        summaries = simulate_sweep(
            preset,
            workload,
            users,
            out,
            experts=experts,
            repetitions=args.repeat,
            window_s=args.window,
            name=args.name,
            on_step=lambda _n: progress.advance(task),
        )
    wall = time.perf_counter() - started
    console.print(f"{len(users)} user counts x {args.repeat} in {wall:.1f} s wall -> {out}")
    table = Table("users", "TTFT s", "TPOT ms", "throughput tok/s", "virtual s", "wall s")
    for s in summaries:
        sim = s["simulation"]
        table.add_row(
            str(s["users"]),
            f"{s['ttft'].get('mean') or 0:.3f}",
            f"{1e3 * (s['tpot'].get('mean') or 0):.2f}",
            f"{s.get('throughput') or 0:.0f}",
            f"{sim['virtual_s']:.1f}",
            f"{sim['wall_s']:.2f}",
        )
    Console().print(table)
    return 0
