"""``plan.json``: the plan, its predictions, the baselines and the frontier, as data.

At least ``{"replicas": {cluster: count}, "predicted": {...}, "uniform": {...}}`` (the
command's contract); predictions have ``bench.summary``'s keys, times in seconds, rates in
tokens/s. ``APPROXIMATIONS`` states what the prediction leaves out (docs/planning.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from expert_router.emulator.sweep import timing_source
from expert_router.planner import slo
from expert_router.planner.plan import Plan
from expert_router.planner.search import Point

SCHEMA_VERSION = 1

APPROXIMATIONS = (
    "Each cluster's pool is simulated alone for its share of users and the fleet's metrics are "
    "computed on the union of the pools' requests: exact while no request leaves its nearest "
    "cluster, which the plan's gateway config ensures at the planned load (replicas saturate "
    "only past 1.25x their planned peak).",
    "Users are spread over clusters one standard deviation of a random draw above and below "
    "each cluster's share, in pairs that average to the mix (--draws), and the metrics are "
    "averaged; a live run is one random draw, and its busiest cluster may get more or fewer "
    "users than either.",
    "Pools of the same preset and the same number of users are simulated once and shared "
    "between clusters and draws (the same users' prompt lengths).",
    "The gateway's own latency is left out (about 0.25 ms on the median first token, "
    "docs/benchmarks.md); so are network time and client turnaround beyond the simulator's "
    "1 ms.",
    "Step times come from the preset's GPU step model (or its fixed TTFT/TPOT); its fitted "
    "error is stated under timing.",
)


def _predicted(plan: Plan, point: Point) -> dict[str, Any]:
    pred = point.prediction
    out = dict(pred.metrics)
    out["attainment"] = pred.attainment
    if plan.inputs.targets:
        out["meets_slo"] = plan.meets(point)
        out["slo_violation"] = slo.violation(plan.inputs.targets, pred.metrics)
    return out


def replicas(point: Point) -> dict[str, int]:
    return {str(c): n for c, (_, n) in enumerate(point.alloc)}


def _allocation(plan: Plan, point: Point) -> dict[str, Any]:
    return {
        "gpus": point.gpus,
        "replicas": replicas(point),
        "presets": {str(c): p for c, (p, _) in enumerate(point.alloc)},
        "predicted": _predicted(plan, point),
    }


def _clusters(plan: Plan, point: Point, uniform: Point) -> list[dict[str, Any]]:
    rows = []
    for c, (row, urow) in enumerate(zip(point.prediction.clusters, uniform.prediction.clusters,
                                        strict=True)):  # fmt: skip
        rows.append({
            "cluster": c,
            "share": plan.inputs.weights[c],
            "preset": point.alloc[c][0],
            **row,
            "uniform": {k: urow[k] for k in ("replicas", "users_per_replica",
                                             "p99_response_time", "ttft_p99")},
        })  # fmt: skip
    return rows


def _tensor_parallel(plan: Plan, gpus: int) -> dict[str, Any] | None:
    point = plan.tensor_parallel.get(gpus)
    if point is None:
        return None
    ((pid, engines),) = point.alloc
    return {"preset": pid, "engines": engines, "gpus": point.gpus,
            "predicted": _predicted(plan, point)}  # fmt: skip


def plan_document(plan: Plan, *, gateway_file: str = "gateway.yaml") -> dict[str, Any]:
    """Everything ``plan.json`` holds."""
    inputs, best = plan.inputs, plan.best
    uniform = plan.uniform[best.gpus]
    smallest = plan.smallest_meeting()
    tp_g = max((g for g in plan.tensor_parallel if g <= best.gpus), default=None)
    return {
        "schema": SCHEMA_VERSION,
        "gpus": inputs.gpus,
        "gpus_used": best.gpus,
        "users": inputs.workload.users,
        "clusters": plan.space.clusters,
        "mix": {"source": inputs.mix, "weights": list(inputs.weights),
                "users": list(plan.space.users), "draws": [list(d) for d in plan.space.draws]},
        "workload": dataclasses.asdict(inputs.workload),
        "slo": [t.text() for t in inputs.targets],
        "presets": {pid: {"description": p.description, "tp": p.tp, "model_name": p.model_name,
                          "timing": timing_source(p)} for pid, p in plan.presets.items()},
        "replicas": replicas(best),
        "predicted": _predicted(plan, best),
        "allocation": _allocation(plan, best),
        "per_cluster": _clusters(plan, best, uniform),
        "uniform": _allocation(plan, uniform),
        "tensor_parallel": _tensor_parallel(plan, tp_g) if tp_g is not None else None,
        "smallest_meeting_slo": _allocation(plan, smallest) if smallest else None,
        "frontier": [
            {**_allocation(plan, p), "uniform": _predicted(plan, plan.uniform[p.gpus]),
             "tensor_parallel": _tensor_parallel(plan, p.gpus)}
            for p in plan.frontier
        ],
        "gateway_config": gateway_file,
        "search": plan.timing,
        "approximations": list(APPROXIMATIONS),
    }  # fmt: skip
