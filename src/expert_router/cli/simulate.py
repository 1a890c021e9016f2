"""``expert-router simulate``: the user sweep in virtual time against emulated experts.

Writes the live bench's layout: ``DIR/users-<N>/{records.parquet,summary.json}`` per user
count, then ``DIR/sweep.csv``, the figures and ``report.html``.
"""

from __future__ import annotations

import argparse
from typing import Any

from expert_router.cli import args as types
from expert_router.cli.emulate import add_overrides, overrides


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run the user sweep against emulated experts in virtual time",
        description="Simulate users against emulated experts in virtual time (seconds of wall "
        "time for hours of serving); writes the same records and summaries as `bench`.",
        formatter_class=types.DefaultsFormatter,
    )
    p.add_argument(
        "--preset", required=True, type=types.preset, help="A, B, C, D, ... or a preset YAML file"
    )
    p.add_argument(
        "--users",
        type=types.users,
        default="1,100,200,...,1000",
        help="user counts, e.g. 1,100,...,1000",
    )
    types.add_workload_flags(p)
    p.add_argument(
        "--turns",
        type=types.positive_int,
        default=2,
        help="requests per user (2: base prompt and continuation)",
    )
    p.add_argument(
        "--repeat", type=types.positive_int, default=1, help="repetitions per user count"
    )
    p.add_argument("--clusters", type=types.positive_int, default=8, help="topic clusters")
    p.add_argument(
        "--experts", type=types.positive_int, help="engines (default: 1 for tp>1 presets, else 8)"
    )
    p.add_argument(
        "--ramp",
        type=types.non_negative_float,
        default=0.0,
        help="spread user starts over S seconds",
    )
    p.add_argument("--window", type=types.positive_float, default=60.0, help="time-bucket width, s")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="workload seed")
    p.add_argument(
        "--paper-gateway",
        action="store_true",
        help="add the paper's gateway latency (log-normal, 442 +- 302 ms) to every request",
    )
    p.add_argument("--name", help="name of the configuration in the report (default: preset)")
    p.add_argument("--out", required=True, help="output directory")
    add_overrides(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    types.check_distribution(args.distribution, args.clusters)

    from rich.progress import Progress

    from expert_router.bench.tables import Extra, sweep_table
    from expert_router.console import make_console
    from expert_router.emulator.delay import PAPER_GATEWAY
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.sweep import simulate_sweep
    from expert_router.emulator.virtual import SimWorkload, default_experts

    preset = get_preset(args.preset, **overrides(args))
    users = types.parse_users(args.users)
    experts = args.experts or default_experts(preset)
    out = Path(args.out)
    console = make_console(stderr=True)
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
    extra: list[Extra] = [
        ("virtual s", lambda s: f"{s['simulation']['virtual_s']:,.1f}"),
        ("wall s", lambda s: f"{s['simulation']['wall_s']:,.2f}"),
    ]
    table = sweep_table({args.name or preset.name: summaries}, extra=extra)
    make_console().print(table)
    return 0
