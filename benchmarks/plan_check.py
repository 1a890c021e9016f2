"""Live check of a fleet plan: predicted against measured, planned against uniform.

Plans ``--gpus`` replicas of a small emulated expert for a skewed mix (``expert-router
plan``'s search), then runs each allocation live: an emulated fleet with the replica pools
(``expert-router emulate``), the real gateway on the plan's YAML (``serve --config``) and the
real load generator (``expert-router bench``: the bundled prompts, labelled by the bundled
router, drawn by the mix). Prints predicted and measured p99 response time, TTFT and session
throughput with their difference (target: within 10 %), and planned against uniform.
One live run per load-generator seed. Prints, never asserts. About two minutes on two cores.

    python benchmarks/plan_check.py [--users 96] [--gpus 12] [--output-tokens 128]
        [--mix weights:8,4,2,2,1,1,1,1] [--max-batch 8] [--seeds 0,1,2] [--draws 8] [--keep DIR]

Two predictions are shown: the plan's own (averaged over its draws of users over clusters)
and the same model for the users the load generator actually drew (each user's cluster is
random, so one run's busiest cluster gets more or fewer users than the mix says), started
over the milliseconds the live users' first requests spread over; the second isolates the
model's error from the draw's and the start's. The start matters: the plan's users all start
at the same instant, so an idle engine's first iteration prefills a full batch, where live
ones, a few milliseconds apart, find the engine busy with the first arrival's prefill (with
this short two-turn workload, mean TTFT ~7 % lower and TPOT ~8 % higher: docs/benchmarks.md).
The mean over the live runs is set against the plan's own prediction at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from _stack import Stack, expert_router_cmd, free_port
from expert_router.bench.mix import cluster_weights
from expert_router.bench.summary import get_path
from expert_router.bench.workload import (
    ClassifierLabeller,
    Workload,
    WorkloadConfig,
    load_documents,
)
from expert_router.emulator.presets import Preset, get_preset
from expert_router.emulator.virtual import SimWorkload
from expert_router.planner.deploy import config_yaml, gateway_config
from expert_router.planner.measured import read_mix
from expert_router.planner.plan import Plan, PlanInputs, make_plan
from expert_router.planner.predict import predict
from expert_router.planner.pricing import Pricer
from expert_router.planner.search import Point

CLUSTERS = 8  # the bundled router's
KEYS = (("p99_response_time", "p99 response (s)"), ("ttft.p99", "TTFT p99 (s)"),
        ("ttft.mean", "TTFT mean (s)"), ("tpot.mean", "TPOT mean (ms)"),
        ("session_throughput", "session tok/s"))  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=96)
    p.add_argument("--gpus", type=int, default=12)
    p.add_argument("--mix", default="weights:8,4,2,2,1,1,1,1")
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--seeds", default="0,1,2", help="load generator seeds: one live run each")
    p.add_argument("--draws", type=int, default=8, help="the plan's draws of users (--draws)")
    p.add_argument("--keep", type=Path, help="keep configs, logs and bench outputs here")
    return p.parse_args(argv)


def drawn_clusters(args: argparse.Namespace, cfg: WorkloadConfig) -> np.ndarray:
    """The clusters the load generator's users get: ``bench``'s own draw for ``cfg.seed``."""
    workload = Workload(load_documents(None), ClassifierLabeller(None), cfg)
    plans = workload.plan(args.users, seed=args.users * 1000)  # run_sweep's seed, repetition 0
    return np.bincount([int(p.cluster or 0) for p in plans], minlength=CLUSTERS)


def predict_for(plan: Plan, point: Point, users: np.ndarray, ramp_s: float) -> dict[str, Any]:
    """The plan's model for these users per cluster (the same pools, other shares), the users
    starting over ``ramp_s`` as the live run's did."""
    workload = dataclasses.replace(plan.inputs.workload, ramp_s=ramp_s)
    pricer = Pricer(plan.presets, workload)
    pools = [pricer.get((pid, int(u), n)) for (pid, n), u in zip(point.alloc, users, strict=True)]
    return predict([pools]).metrics


def run_live(
    work: Path, preset_file: Path, plan: Plan, point: Point, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """One allocation live: emulated pools, the gateway on the plan's YAML, the bench."""
    stack = Stack(work)
    try:
        n = sum(count for _, count in point.alloc)
        urls, _ = stack.emulator(n, str(preset_file), [])
        first = int(urls[0].rsplit(":", 1)[1])
        config = gateway_config(plan, point, url="http://127.0.0.1:{port}", first_port=first)
        config_file = work / "gateway.yaml"
        config_file.write_text(config_yaml(config, "plan_check"), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = expert_router_cmd("serve", "--config", str(config_file), "--port", str(port))
        stack.start("gateway", cmd, f"{url}/ready")
        out = work / "bench"
        w = plan.inputs.workload
        bench = expert_router_cmd(
            "bench", "--target", url, "--users", str(args.users), "--distribution", args.mix,
            "--output-tokens", str(w.output_tokens), "--base-tokens", str(w.base_tokens),
            "--continuation-tokens", str(w.continuation_tokens), "--jitter", str(w.jitter),
            "--seed", str(seed), "--workers", "1", "--quiet", "--out", str(out),
        )  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(bench, check=True, timeout=1800, capture_output=True)
        summary: dict[str, Any] = json.loads(
            (out / f"users-{args.users}" / "summary.json").read_text()
        )
        summary["wall_s"] = time.perf_counter() - t0
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # the measured mix
            (work / "metrics.txt").write_bytes(resp.read())
        summary["iterations"] = emulator_iterations(urls)
        summary["start_spread_s"] = start_spread(out / f"users-{args.users}")
        return summary
    finally:
        stack.close()


def start_spread(run: Path) -> float:
    """Seconds between the first and the last user's first request in a bench run."""
    import pyarrow.parquet as pq

    starts = [
        row["start"]
        for path in sorted(run.glob("records-rep*.parquet"))
        for row in pq.read_table(path, columns=["turn", "start"]).to_pylist()
        if row["turn"] == 0
    ]
    return float(max(starts) - min(starts))


def emulator_iterations(urls: list[str]) -> dict[str, int]:
    """The emulated engines' iterations, and how many ran so late (past the driver's catch-up,
    50 ms) that the engine's clock was reset: a late iteration stretches the emulated TPOT,
    so a live run with many measures the machine, not the model."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"total": 0, "late": 0}
    names = {"emulator:iterations_total": "total", "emulator:late_iterations_total": "late"}
    for base in urls:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    counts[names[sample.name]] += int(sample.value)
    return counts


def _value(metrics: dict[str, Any], key: str) -> float | None:
    v = get_path(metrics, key)
    if not isinstance(v, int | float):
        return None
    return float(v) * (1e3 if key.startswith("tpot") else 1.0)


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}" if v < 1000 else f"{v:,.0f}"


def report(name: str, plan_pred: dict[str, Any], drawn_pred: dict[str, Any],
           measured: dict[str, Any]) -> None:  # fmt: skip
    it = measured["iterations"]
    print(
        f"\n{name}: measured in {measured['wall_s']:.0f} s; errors {measured['errors']}; "
        f"routing agreement {100 * (measured.get('routing_agreement') or 0):.1f} %; "
        f"{it['late']:,} of {it['total']:,} emulated iterations late past catch-up; users "
        f"started over {1e3 * measured['start_spread_s']:.1f} ms"
    )
    print(
        f"  {'metric':18} {'plan predicts':>14} {'for drawn users':>16} {'measured':>10} "
        f"{'diff (drawn)':>13} {'diff (plan)':>12}"
    )
    for key, label in KEYS:
        a, b, m = (_value(x, key) for x in (plan_pred, drawn_pred, measured))
        d1 = f"{100 * (m / b - 1):+.1f} %" if m and b else "-"
        d2 = f"{100 * (m / a - 1):+.1f} %" if m and a else "-"
        print(f"  {label:18} {_cell(a):>14} {_cell(b):>16} {_cell(m):>10} {d1:>13} {d2:>12}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",")]
    preset: Preset = get_preset("cpu-tiny").with_overrides(
        max_batch=args.max_batch, name="plan-check", model_name="plan-check"
    )
    cfg = WorkloadConfig(output_tokens=args.output_tokens, distribution=args.mix)
    workload = SimWorkload(users=args.users, output_tokens=cfg.output_tokens,
                           base_tokens=cfg.base_tokens, continuation_tokens=cfg.continuation_tokens,
                           jitter=cfg.jitter, clusters=CLUSTERS)  # fmt: skip
    weights = cluster_weights(args.mix, CLUSTERS)
    t0 = time.perf_counter()
    plan = make_plan(PlanInputs(gpus=args.gpus, options=((preset,),) * CLUSTERS,
                                weights=tuple(weights.tolist()), workload=workload, jobs=2,
                                draws=args.draws, mix=args.mix))  # fmt: skip
    print(
        f"plan in {time.perf_counter() - t0:.1f} s: {preset.description}, max_batch "
        f"{preset.max_batch}; {args.users} users, {args.output_tokens} tokens per answer, "
        f"mix {args.mix}, {args.gpus} GPUs"
    )
    points = {"planned": plan.best, "uniform": plan.uniform[plan.best.gpus]}
    for name, point in points.items():
        print(f"  {name:8} replicas {[n for _, n in point.alloc]}")
    print(f"  the plan's draws of users per cluster: {[list(d) for d in plan.space.draws]}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="plan-check-"))
    work.mkdir(parents=True, exist_ok=True)
    preset_file = work / "expert.yaml"
    preset_file.write_text(yaml.safe_dump(preset.model_dump(mode="json")), encoding="utf-8")
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in points}
    for seed in seeds:
        drawn = drawn_clusters(args, dataclasses.replace(cfg, seed=seed))
        print(f"\n== load generator seed {seed}: users per cluster {drawn.tolist()}")
        for name, point in points.items():
            live = run_live(work / f"{name}-{seed}", preset_file, plan, point, args, seed)
            measured[name].append(live)
            ramp = live["start_spread_s"]
            report(name, point.prediction.metrics, predict_for(plan, point, drawn, ramp), live)
    print(f"\nover the {len(seeds)} live runs (mean), against the plan's own prediction:")
    for name, point in points.items():
        print(f"  {name}")
        for key, label in KEYS:
            values = [v for v in (_value(r, key) for r in measured[name]) if v is not None]
            m = float(np.mean(values)) if values else None
            a = _value(point.prediction.metrics, key)
            d = f"{100 * (m / a - 1):+.1f} %" if m and a else "-"
            print(f"    {label:18} plan {_cell(a):>10}  measured {_cell(m):>10}  {d:>8}")
    print("\nplanned against uniform, measured (mean over the live runs):")
    for key, label in KEYS:
        a, b = (float(np.mean([_value(r, key) or 0.0 for r in measured[n]])) for n in points)
        print(f"  {label:18} planned {_cell(a):>10}  uniform {_cell(b):>10}")
    measured_mix(args, work, plan, seeds)
    print(f"\noutputs in {work}")
    return 0


def measured_mix(args: argparse.Namespace, work: Path, plan: Plan, seeds: list[int]) -> None:
    """The mix the gateway counted on its /metrics over the planned runs, and its plan."""
    files = [str(work / f"planned-{s}" / "metrics.txt") for s in seeds]
    mix = read_mix(files)
    weights = mix.weights(CLUSTERS)
    again = make_plan(dataclasses.replace(plan.inputs, weights=tuple(weights), mix=mix.describe()))
    print(
        f"\nthe gateways' /metrics ({mix.describe()}): shares "
        f"{[round(100 * w, 1) for w in weights]} %; planned from it: "
        f"{[n for _, n in again.best.alloc]} (from the mix {args.mix}: "
        f"{[n for _, n in plan.best.alloc]})"
    )


if __name__ == "__main__":
    sys.exit(main())
