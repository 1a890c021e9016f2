"""A fleet's predicted metrics, composed from its pools' simulated requests.

Clusters share no replica (the plan's gateway never spills at the planned load), so the
fleet's run is the union of its pools' runs: ``predict`` joins their per-request arrays and
computes the summary's metrics on them (same keys and definitions as ``bench.summary``;
``bench.metrics`` for the percentiles), plus the share of requests within per-request targets.
With several draws of users over clusters, each draw is one run and metrics are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from expert_router.bench import metrics as m
from expert_router.bench.summary import mean_tree
from expert_router.planner.pricing import PoolResult, Requests

PER_REQUEST = ("response", "ttft", "tpot")
"""Per-request quantities a target may bound (``slo``): response time, TTFT, TPOT."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a fleet is predicted to deliver."""

    metrics: dict[str, Any]
    """Summary-shaped (``ttft.p99``, ``p99_response_time``, ``session_throughput``, ...)."""
    attainment: float | None
    """Share of requests within every per-request target (None without such targets)."""
    clusters: list[dict[str, Any]] = field(default_factory=list)
    """Per cluster: users, replicas, p99 response, TTFT p99, tokens/s per replica, ..."""


def join(pools: Sequence[PoolResult]) -> Requests:
    """Every pool's requests in one set of arrays (users numbered across pools)."""
    offsets = np.cumsum([0] + [p.users for p in pools])[:-1]
    parts = [p.requests for p in pools]
    cat = np.concatenate
    return Requests(
        user=cat([q.user + off for q, off in zip(parts, offsets, strict=True)]),
        turn=cat([q.turn for q in parts]),
        start=cat([q.start for q in parts]),
        end=cat([q.end for q in parts]),
        ttft=cat([q.ttft for q in parts]),
        tpot=cat([q.tpot for q in parts]),
        tokens=cat([q.tokens for q in parts]),
        ok=cat([q.ok for q in parts]),
    )


def _finite(a: np.ndarray) -> np.ndarray:
    return np.asarray(a[np.isfinite(a)], dtype=np.float64)


def _session(j: Requests, p99: float | None) -> dict[str, Any]:
    """``bench.metrics.session_throughput`` on arrays: the n99 users' tokens over their span."""
    if p99 is None:
        return {"session_throughput": None, "session": {"n99": 0, "tokens": 0}}
    n_users = int(j.user.max()) + 1
    bad = ~j.ok | (j.end - j.start > p99)
    user_bad = np.bincount(j.user, weights=bad, minlength=n_users) > 0
    present = np.bincount(j.user, minlength=n_users) > 0
    inside = ~user_bad[j.user]
    n99 = int((present & ~user_bad).sum())
    if not inside.any():
        return {"session_throughput": None, "session": {"n99": 0, "tokens": 0}}
    t_s, t_e = float(j.start[inside].min()), float(j.end[inside].max())
    tokens = int(j.tokens[inside].sum())
    th = tokens / (t_e - t_s) if t_e > t_s else None
    return {"session_throughput": th, "session": {"n99": n99, "tokens": tokens}}


def _user_throughputs(j: Requests) -> np.ndarray:
    """``bench.metrics.user_throughputs`` on arrays."""
    order = np.argsort(j.user, kind="stable")
    users = j.user[order]
    firsts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    first = np.minimum.reduceat(j.start[order], firsts)
    last = np.maximum.reduceat(j.end[order], firsts)
    tokens = np.add.reduceat(j.tokens[order], firsts)
    span = last - first
    keep = span > 0
    return np.asarray(tokens[keep] / span[keep], dtype=np.float64)


def run_metrics(j: Requests) -> dict[str, Any]:
    """The summary's headline metrics of one run."""
    if j.start.size == 0:
        return {"requests": 0, "errors": 0, "error_rate": 0.0}
    ok = j.ok
    resp = (j.end - j.start)[ok]
    p99 = m.nearest_rank(resp, 99)
    span = float(j.end.max() - j.start.min())
    return {
        "requests": int(ok.size),
        "errors": int((~ok).sum()),
        "error_rate": float((~ok).mean()),
        "ttft": {
            **m.describe(_finite(j.ttft[ok])),
            "base": m.describe(_finite(j.ttft[ok & (j.turn == 0)])),
            "continuation": m.describe(_finite(j.ttft[ok & (j.turn != 0)])),
        },
        "tpot": m.describe(_finite(j.tpot[ok])),
        "response_time": m.describe(resp),
        "user_throughput": m.describe(_user_throughputs(j)),
        "p99_response_time": p99,
        **_session(j, p99),
        "throughput": float(j.tokens.sum()) / span if span > 0 else None,
        "virtual_s": span,
    }


def within(j: Requests, thresholds: Mapping[str, float]) -> np.ndarray:
    """Which requests succeeded within every per-request threshold (``PER_REQUEST`` names;
    a request with fewer than two tokens has no TPOT and is not held to one)."""
    meets = j.ok.copy()
    if "response" in thresholds:
        meets &= j.end - j.start <= thresholds["response"]
    if "ttft" in thresholds:
        meets &= np.nan_to_num(j.ttft, nan=np.inf) <= thresholds["ttft"]
    if "tpot" in thresholds:
        meets &= np.nan_to_num(j.tpot, nan=-np.inf) <= thresholds["tpot"]
    return meets


def _mean_rows(draws: Sequence[Sequence[PoolResult]]) -> list[dict[str, Any]]:
    """Per cluster, its rows averaged over the draws (the peak: the largest)."""
    rows = []
    for pools in zip(*draws, strict=True):
        each = [p.row for p in pools]
        row: dict[str, Any] = mean_tree(each)
        row["peak_outstanding"] = max(r["peak_outstanding"] for r in each)
        rows.append(row)
    return rows


def predict(
    draws: Sequence[Sequence[PoolResult]], *, thresholds: Mapping[str, float] | None = None
) -> Prediction:
    """The fleet whose pools (one per cluster) are ``draws[k]`` in each draw ``k`` of users
    over clusters: metrics averaged over the draws, the share of requests within
    ``thresholds`` (``PER_REQUEST`` name -> seconds), per-cluster rows."""
    runs = [join(pools) for pools in draws]
    metrics: dict[str, Any] = mean_tree([run_metrics(r) for r in runs])
    attainment = None
    if thresholds and any(r.start.size for r in runs):
        attainment = float(np.mean([within(r, thresholds).mean() for r in runs if r.start.size]))
    return Prediction(metrics, attainment, _mean_rows(draws))
