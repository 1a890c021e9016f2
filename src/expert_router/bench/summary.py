"""The content of ``summary.json``: every metric of one user count, across its repetitions.

Each repetition is summarised on its own (session throughput and time buckets are properties
of one run); the top-level values are their means, and ``across_repetitions`` gives mean, sd
and a 95% Student-t interval of every headline scalar. Times in seconds, rates in tokens/s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from scipy import stats as sps

from expert_router.bench import metrics as m
from expert_router.bench.records import RequestRecord

SCHEMA_VERSION = 1

# Headline scalars: a column of sweep.csv each, with mean / sd / 95% interval across reps.
HEADLINE = (
    "ttft.mean",
    "ttft.p99",
    "ttft.base.mean",
    "ttft.continuation.mean",
    "tpot.mean",
    "tpot.p99",
    "user_throughput.mean",
    "user_throughput.sd",
    "response_time.p50",
    "response_time.p90",
    "response_time.p99",
    "p99_response_time",
    "session_throughput",
    "session.n99",
    "throughput",
    "requests",
    "errors",
    "error_rate",
    "token_shortfalls",
    "gateway_overhead.mean",
)


def _breakdown(
    records: Sequence[RequestRecord], key: Callable[[RequestRecord], Any]
) -> dict[str, Any]:
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        k = key(r)
        if k is not None:
            groups[str(k)].append(r)
    out: dict[str, Any] = {}
    for name in sorted(groups, key=lambda s: (len(s), s)):
        rs = groups[name]
        out[name] = {
            "requests": len(rs),
            "errors": sum(r.status == "error" for r in rs),
            "tokens": sum(r.output_tokens for r in rs),
            "ttft_mean": m.describe(m.ttfts(rs))["mean"],
            "tpot_mean": m.describe(m.tpots(rs))["mean"],
            "response_time_p99": m.percentile(m.response_times(rs), 99),
        }
    return out


def _routing_agreement(records: Sequence[RequestRecord]) -> float | None:
    pairs = [(r.cluster, r.routed_cluster) for r in records if r.routed_cluster is not None]
    pairs = [(a, b) for a, b in pairs if a is not None]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def summarize_run(records: Sequence[RequestRecord], *, window_s: float = 60.0) -> dict[str, Any]:
    """Every metric of one run (one repetition of one user count)."""
    ttft = m.describe(m.ttfts(records))
    session = m.session_throughput(records)
    overheads = [v for v in (m.gateway_overhead(r) for r in records) if v is not None]
    timing_names = sorted({k for r in records for k in r.server_timing})
    return {
        "requests": len(records),
        "ttft": {
            **ttft,
            "base": m.describe(m.ttfts(records, turn=0)),
            "continuation": m.describe(m.ttfts(records, turn=1)),
        },
        "tpot": m.describe(m.tpots(records)),
        "user_throughput": m.describe(m.user_throughputs(records)),
        "response_time": m.describe(m.response_times(records)),
        "p99_response_time": session.p99_response_time,
        "session_throughput": session.tokens_per_s,
        "session": {
            "n99": session.n99,
            "tokens": session.tokens,
            "t_start": session.t_start,
            "t_end": session.t_end,
        },
        "throughput": m.throughput(records),
        "time_buckets": {"window_s": window_s, **m.time_buckets(records, window_s)},
        "errors": sum(r.status == "error" for r in records),
        "error_rate": m.error_rate(records),
        "error_messages": _error_messages(records),
        "output_tokens": {
            "requested": sum(r.max_tokens for r in records),
            "received": sum(r.output_tokens for r in records),
        },
        "token_shortfalls": m.token_shortfalls(records),
        "gateway_overhead": {
            **m.describe(overheads),
            "unit": "ms",
            "entries": {
                name: m.describe(
                    [r.server_timing[name] for r in records if name in r.server_timing]
                )
                for name in timing_names
            },
        },
        "routing_agreement": _routing_agreement(records),
        "clusters": _breakdown(records, lambda r: r.cluster),
        "replicas": _breakdown(records, lambda r: r.replica),
    }


def _error_messages(records: Sequence[RequestRecord], top: int = 10) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        if r.status == "error":
            counts[(r.error or "unknown")[:200]] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


def _summed(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    """Counts per key added over repetitions, the largest first."""
    total: dict[str, int] = defaultdict(int)
    for c in counts:
        for key, n in c.items():
            total[key] += int(n)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def get_path(tree: dict[str, Any], dotted: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; ``None`` when a part is missing."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample sd (ddof=1) and the 95% Student-t interval of the mean of ``values``.

    >>> interval([1.0, 3.0])["mean"]
    2.0
    """
    xs = [v for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95_low": None, "ci95_high": None}
    mean = sum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": 0.0, "ci95_low": mean, "ci95_high": mean}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}


def mean_tree(trees: Sequence[Any]) -> Any:
    """The element-wise mean of nested dicts/lists of numbers (missing entries are skipped)."""
    present = [t for t in trees if t is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for t in present if isinstance(t, dict) for k in t))
        return {k: mean_tree([t.get(k) for t in present if isinstance(t, dict)]) for k in keys}
    if isinstance(first, list):
        length = max(len(t) for t in present if isinstance(t, list))
        lists = [t for t in present if isinstance(t, list)]
        return [mean_tree([t[i] for t in lists if i < len(t)]) for i in range(length)]
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    nums = [float(t) for t in present if isinstance(t, int | float)]
    mean = sum(nums) / len(nums)
    return int(mean) if all(isinstance(t, int) for t in present) and mean.is_integer() else mean


def summarize(
    records: Sequence[RequestRecord], *, users: int, window_s: float = 60.0
) -> dict[str, Any]:
    """The ``summary.json`` of one user count: per-repetition metrics, their means and spread.

    Keys include ``users``, ``ttft``, ``tpot``, ``user_throughput``, ``p99_response_time``,
    ``session_throughput`` and ``errors`` (see docs/metrics.md for every key).
    """
    by_rep: dict[int, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_rep[r.repetition].append(r)
    per_rep = {k: summarize_run(by_rep[k], window_s=window_s) for k in sorted(by_rep)}
    return combine(per_rep, users=users, window_s=window_s)


def combine(per_rep: dict[int, dict[str, Any]], *, users: int, window_s: float) -> dict[str, Any]:
    """``summarize`` from the ``summarize_run`` of each repetition (keyed by its index), so a
    long sweep need not keep every repetition's records in memory."""
    runs = [per_rep[k] for k in sorted(per_rep)]
    merged: dict[str, Any] = mean_tree(runs) if runs else summarize_run([], window_s=window_s)
    return {
        "schema": SCHEMA_VERSION,
        "users": users,
        "repetitions": len(runs),
        **merged,
        "window_s": window_s,
        "totals": {
            "requests": sum(int(s["requests"]) for s in runs),
            "errors": sum(int(s["errors"]) for s in runs),
            "output_tokens": sum(int(s["output_tokens"]["received"]) for s in runs),
            "errors_by_reason": _summed([s.get("error_messages") or {} for s in runs]),
        },
        "across_repetitions": {key: interval([get_path(s, key) for s in runs]) for key in HEADLINE},
        "per_repetition": [
            {"repetition": k, **{key: get_path(per_rep[k], key) for key in HEADLINE}}
            for k in sorted(per_rep)
        ],
    }
