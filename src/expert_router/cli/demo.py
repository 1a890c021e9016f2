"""``expert-router demo``: emulated fleet + gateway + live sweep + the paper's sweep simulated,
with an HTML report; no arguments needed, a few minutes on two cores."""

from __future__ import annotations

import argparse
from typing import Any

from expert_router.cli.args import positive_int, preset, users


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="see the whole system work in a few minutes (no GPU, no arguments)",
        description="Start 8 emulated experts and the gateway, run a short live sweep through "
        "the gateway, simulate the paper's sweep for configurations A-D and write an HTML "
        "report. Every server it starts stops when it ends, fails or is interrupted.",
    )
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--quick", action="store_true", help="fewer user counts (under a minute)")
    p.add_argument(
        "--live-users", type=users, default=None, help="live user counts (default 1,8,32,64)"
    )
    p.add_argument("--output-tokens", type=positive_int, default=32, help="live answer length (32)")
    p.add_argument(
        "--preset", type=preset, default="cpu-tiny", help="emulator preset of the live fleet"
    )
    p.set_defaults(func=run)


LIVE_KEYS = (
    "ttft.base.mean",
    "ttft.continuation.mean",
    "tpot.mean",
    "session_throughput",
    "gateway_overhead.mean",
)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from expert_router.bench.tables import Extra, first_and_last, sweep_table
    from expert_router.cli.args import parse_users
    from expert_router.console import make_console
    from expert_router.experiment.demo import DemoSettings, run_demo
    from expert_router.experiment.paper import Protocol

    live_users = parse_users(args.live_users or ("1,8" if args.quick else "1,8,32,64"))
    sim_users = (1, 100, 500, 1000) if args.quick else None
    settings = DemoSettings(
        out=Path(args.out),
        preset=args.preset,
        live=Protocol(
            users=tuple(live_users), repeat=1, output_tokens=args.output_tokens, window_s=1.0
        ),
    )
    if sim_users:
        settings.simulate = Protocol(users=sim_users, repeat=1)
    console = make_console()
    result = run_demo(settings, console)
    live = {"live": result.live_summaries}
    errors: Extra = ("errors", lambda s: str(s.get("errors", 0)))
    title = f"live, through the gateway ({result.live_report})"
    console.print(sweep_table(live, LIVE_KEYS, extra=[errors], title=title))
    title = f"modelled, smallest and largest user count ({result.report})"
    console.print(sweep_table(result.sim_summaries, pick=first_and_last, title=title))
    t = result.timings
    console.print(
        f"done in {t['total']:.0f} s (servers {t['start']:.1f} s, live {t['live']:.0f} s, "
        f"simulate {t['simulate']:.0f} s, report {t['report']:.1f} s); all servers stopped"
    )
    console.print(f"report: [bold]{result.index}[/bold] (what ran, the headline and links to "
                  f"every report)")  # fmt: skip
    return 0
