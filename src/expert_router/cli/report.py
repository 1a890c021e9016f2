"""``expert-router report``: overlay bench or simulate sweeps in one set of figures and one table.

Each ``NAME=DIR`` is a sweep directory (``DIR/users-<N>/summary.json``), live or simulated;
writes ``sweep.csv``, the PNG figures and ``report.html`` under ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from expert_router.errors import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare bench/simulate sweeps (e.g. router vs baseline) in one report",
        description=(
            "Overlay sweeps (bench or simulate output directories, DIR/users-<N>/summary.json) "
            "in one set of figures and one table: writes sweep.csv, PNGs and report.html."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="NAME=DIR", help="a named sweep directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--title", default="Expert Router: comparison")
    p.set_defaults(func=run)


def parse_runs(items: list[str]) -> dict[str, Path]:
    """``["router=out/a", "baseline=out/b"]`` -> ordered {name: path}; a bare DIR is named by
    its last path component."""
    runs: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or item, item
        if not name or not path:
            raise UsageError(f"expected NAME=DIR, got {item!r}")
        if name in runs:
            raise UsageError(f"run name {name!r} given twice")
        runs[name] = Path(path)
    return runs


def run(args: argparse.Namespace) -> int:
    runs = parse_runs(args.runs)
    from expert_router.bench.report import load_sweep, write_comparison

    series = {name: load_sweep(path) for name, path in runs.items()}
    write_comparison(args.out, series, title=args.title)
    print(f"wrote {args.out / 'report.html'} ({len(series)} runs)")
    return 0
