"""How long ``expert-router plan`` takes, and how its composed predictions compare with
simulations of the whole fleet. Prints; asserts nothing.

    python benchmarks/plan_timing.py [--presets v2-70b-awq,v2-8b] [--mixes normal,uniform]
        [--gpus 64] [--users 1000] [--jobs 1,2] [--check-seeds 3]

Timing: the whole command (search from 8 to ``--gpus`` GPUs for 8 clusters, both baselines,
every output file), wall clock, per preset, mix and process count.

Approximation: at a few GPU counts of the frontier, the plan's prediction (each cluster's
pool simulated alone for its exact share of users, then composed) against one simulation of
the whole fleet (users' clusters drawn at random, every pool in one event loop, routed as the
gateway routes), for ``--check-seeds`` draws.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from expert_router.bench.summary import get_path, summarize_run
from expert_router.cli.main import main as cli
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import Simulation, SimWorkload
from expert_router.planner.pricing import FleetRouter

KEYS = (("p99_response_time", "p99 resp. s"), ("ttft.p99", "TTFT p99 s"),
        ("session_throughput", "session tok/s"))  # fmt: skip


def time_plan(preset: str, mix: str, gpus: int, users: int, jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["plan", "--gpus", str(gpus), "--preset", preset, "--mix", mix, "--users",
                str(users), "--jobs", str(jobs), "--quiet", "--out", tmp]  # fmt: skip
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli(argv)
        wall = time.perf_counter() - t0
        doc: dict[str, Any] = json.loads((Path(tmp) / "plan.json").read_text())
    return {"code": code, "wall": wall, **doc["search"], "doc": doc}


def whole_fleet(preset_name: str, mix: str, replicas: list[int], users: int,
                seed: int) -> dict[str, Any]:  # fmt: skip
    w = SimWorkload(users=users, distribution=mix, seed=seed)
    sim = Simulation(get_preset(preset_name), w, n_engines=sum(replicas))
    drawn = np.bincount(sim.clusters, minlength=len(replicas)).tolist()
    sim.router = FleetRouter(replicas, drawn, seed)
    return summarize_run(sim.run())


def check(preset: str, mix: str, doc: dict[str, Any], users: int, seeds: int) -> None:
    frontier = doc["frontier"]
    picks = [frontier[0], frontier[len(frontier) // 2], frontier[-1]]
    print(f"\n  composed prediction vs whole-fleet simulation ({preset}, {mix}, {users} users)")
    print(f"  {'GPUs':>5} {'metric':14} {'composed':>10} {'whole fleet (seeds)':>28} {'diff':>8}")
    for point in picks:
        replicas = [point["replicas"][str(c)] for c in range(len(point["replicas"]))]
        runs = [whole_fleet(preset, mix, replicas, users, s) for s in range(seeds)]
        for key, label in KEYS:
            ours = get_path(point["predicted"], key)
            theirs = [get_path(r, key) for r in runs]
            mean = float(np.mean(theirs))
            spread = f"{mean:,.2f} ({min(theirs):,.2f}-{max(theirs):,.2f})"
            print(
                f"  {point['gpus']:>5} {label:14} {ours:>10,.2f} {spread:>28} "
                f"{100 * (ours / mean - 1):>+7.1f}%"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="v2-70b-awq,v2-8b")
    p.add_argument("--mixes", default="normal,uniform")
    p.add_argument("--gpus", type=int, default=64)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--jobs", default="1,2")
    p.add_argument("--check-seeds", type=int, default=3)
    args = p.parse_args(argv)
    print(
        f"expert-router plan --gpus {args.gpus} --users {args.users} (8 clusters, frontier "
        f"from 8 GPUs), wall seconds"
    )
    print(
        f"  {'preset':12} {'mix':8} {'jobs':>4} {'wall s':>7} {'pools':>6} {'pool cpu s':>10} "
        f"{'allocations':>11}"
    )
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for preset in args.presets.split(","):
        for mix in args.mixes.split(","):
            for jobs in (int(j) for j in args.jobs.split(",")):
                r = time_plan(preset, mix, args.gpus, args.users, jobs)
                docs[(preset, mix)] = r["doc"]
                print(
                    f"  {preset:12} {mix:8} {jobs:>4} {r['wall']:>7.1f} "
                    f"{r['pools_simulated']:>6} {r['pool_sim_cpu_s']:>10.1f} "
                    f"{r['allocations_priced']:>11,}"
                )
    if args.check_seeds > 0:
        for (preset, mix), doc in docs.items():
            check(preset, mix, doc, args.users, args.check_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
