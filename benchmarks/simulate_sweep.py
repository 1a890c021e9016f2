"""Wall time of the paper's full sweep in virtual time, per configuration. Prints; asserts nothing.

    .venv/bin/python benchmarks/simulate_sweep.py [--presets A,B,C,D] [--repeat 1] [--write]

Sweep: users 1, 100..1000; base (335 ± 30) + continuation (1535 ± 30) prompts; 1200 output
tokens each; uniform topic mix; 8 experts for B-D, one TP-8 engine for A. ``--write`` also
writes records, summaries, CSV and plots as ``expert-router simulate`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from typing import Any

from expert_router.bench.summary import summarize
from expert_router.cli.main import main as cli
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import SimWorkload, default_experts, simulate_repetitions

USERS = [1, *range(100, 1001, 100)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default="A,B,C,D")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="time the full CLI with outputs too")
    args = ap.parse_args()
    print(f"{'preset':8} {'sim s':>7} {'summary s':>10} {'total s':>8} {'virtual h':>10}"
          f" {'tokens':>11} {'TPOT@1000 ms':>13} {'tok/s@1000':>11}")  # fmt: skip
    for name in args.presets.split(","):
        preset = get_preset(name)
        sim_s = sum_s = virtual = 0.0
        tokens = 0
        last: dict[str, Any] = {}
        for n in USERS:
            t0 = time.perf_counter()
            records = simulate_repetitions(
                preset, SimWorkload(users=n), n_engines=default_experts(preset),
                repetitions=args.repeat,
            )  # fmt: skip
            t1 = time.perf_counter()
            last = summarize(records, users=n)
            sim_s += t1 - t0
            sum_s += time.perf_counter() - t1
            virtual += max(r.end for r in records)
            tokens += sum(r.output_tokens for r in records)
        print(
            f"{name:8} {sim_s:7.2f} {sum_s:10.2f} {sim_s + sum_s:8.2f} {virtual / 3600:10.2f}"
            f" {tokens:11,d} {last['tpot']['mean'] * 1e3:13.2f} {last['throughput']:11.0f}"
        )
        if args.write:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                sink = io.StringIO()
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    cli(["simulate", "--preset", name, "--repeat", str(args.repeat), "--out", tmp])
                print(f"  expert-router simulate --preset {name} (records, summaries, CSV, "
                      f"plots): {time.perf_counter() - t0:.1f} s wall")  # fmt: skip


if __name__ == "__main__":
    main()
