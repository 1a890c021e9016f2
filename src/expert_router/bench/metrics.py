"""The paper's user- and system-centric metrics, as pure functions over request records.

Every function takes plain ``RequestRecord`` objects (times in seconds since run start) and
returns plain numbers; docs/metrics.md defines each one and tests/unit/bench/test_metrics.py
computes each by hand on a tiny example. Percentiles use numpy's default (linear) method.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from expert_router.bench.records import RequestRecord

Stats = dict[str, float | int | None]


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation); ``None`` for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def nearest_rank(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile by nearest rank: the ``ceil(q/100 * n)``-th smallest value.

    Always one of the values; at least ``q`` % of the values are <= it.

    >>> nearest_rank([5.0, 1.0, 3.0], 99), nearest_rank([1.0, 2.0, 3.0, 4.0], 50)
    (5.0, 2.0)
    """
    if len(values) == 0:
        return None
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    rank = max(1, math.ceil(q / 100 * len(ordered) - 1e-9))
    return float(ordered[rank - 1])


def describe(values: Sequence[float] | np.ndarray) -> Stats:
    """Count, mean, population sd, min, p50, p90, p99 and max of ``values`` (``None`` if empty)."""
    if len(values) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "p50": None, "p90": None,
                "p99": None, "max": None}  # fmt: skip
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = (float(x) for x in np.percentile(arr, [50, 90, 99]))
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "sd": float(arr.std()),
        "min": float(arr.min()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": float(arr.max()),
    }


def ok(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """The records of successful requests."""
    return [r for r in records if r.status == "ok"]


def ttft(record: RequestRecord) -> float | None:
    """Time to first token: ``first_token - start`` (``None`` when no token arrived)."""
    if record.first_token is None:
        return None
    return record.first_token - record.start


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first: ``(t_last - t_first) / (n - 1)``.

    ``t_first`` and ``t_last`` are the arrival times of the first and last token and ``n`` the
    number of tokens (a chunk of k tokens counts k). ``None`` with fewer than two tokens.
    """
    times = record.token_times
    if len(times) < 2:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)


def response_time(record: RequestRecord) -> float:
    """Time from sending the request to the end of its response: ``end - start``."""
    return record.end - record.start


def ttfts(records: Iterable[RequestRecord], turn: int | None = None) -> list[float]:
    """TTFT of every successful request (of ``turn`` only, when given)."""
    out = []
    for r in ok(records):
        if turn is not None and (r.turn == 0) != (turn == 0):
            continue
        v = ttft(r)
        if v is not None:
            out.append(v)
    return out


def tpots(records: Iterable[RequestRecord]) -> list[float]:
    """TPOT of every successful request that received at least two tokens."""
    return [v for v in (tpot(r) for r in ok(records)) if v is not None]


def response_times(records: Iterable[RequestRecord]) -> list[float]:
    """Response time of every successful request."""
    return [response_time(r) for r in ok(records)]


def user_throughputs(records: Iterable[RequestRecord]) -> list[float]:
    """Per user: tokens received over all its requests / (last end - first start), tokens/s.

    Users are told apart by ``(repetition, user)``; failed requests count with the tokens they
    delivered and the time they took. Users whose span is zero are left out.
    """
    spans: dict[tuple[int, int], list[float]] = {}
    for r in records:
        key = (r.repetition, r.user)
        s = spans.get(key)
        if s is None:
            spans[key] = [r.start, r.end, float(r.output_tokens)]
        else:
            s[0] = min(s[0], r.start)
            s[1] = max(s[1], r.end)
            s[2] += r.output_tokens
    return [tok / (end - start) for start, end, tok in spans.values() if end > start]


@dataclass(frozen=True, slots=True)
class SessionThroughput:
    """The paper's session throughput and the quantities it is made of."""

    tokens_per_s: float | None
    n99: int
    tokens: int
    t_start: float | None
    t_end: float | None
    p99_response_time: float | None


def session_throughput(records: Sequence[RequestRecord]) -> SessionThroughput:
    """Throughput of the n99 users whose every response finished within the p99 response time.

    p99 is the nearest-rank 99th percentile of the response times of all successful requests
    (an observed response time). A user belongs to the n99 set when all its requests
    succeeded and each took at most p99. Over that set,
    ``t_S = min start``, ``t_E = max end`` and ``Th = sum(tokens) / (t_E - t_S)``.
    """
    p99 = nearest_rank(response_times(records), 99)
    if p99 is None:
        return SessionThroughput(None, 0, 0, None, None, None)
    by_user: dict[tuple[int, int], list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_user[(r.repetition, r.user)].append(r)
    inside = [
        rs
        for rs in by_user.values()
        if all(r.status == "ok" and response_time(r) <= p99 for r in rs)
    ]
    if not inside:
        return SessionThroughput(None, 0, 0, None, None, p99)
    t_s = min(r.start for rs in inside for r in rs)
    t_e = max(r.end for rs in inside for r in rs)
    tokens = sum(r.output_tokens for rs in inside for r in rs)
    th = tokens / (t_e - t_s) if t_e > t_s else None
    return SessionThroughput(th, len(inside), tokens, t_s, t_e, p99)


def time_buckets(
    records: Iterable[RequestRecord], window_s: float = 60.0
) -> dict[str, list[float]]:
    """Tokens arriving in each window ``[k*w, (k+1)*w)`` of the run, regardless of user.

    Returns ``start`` (window start, s), ``seconds`` (window length: ``window_s`` except the last
    window, which ends at the run's last ``end`` and may be shorter), ``tokens`` (count) and
    ``tokens_per_s`` (count / length).
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    records = list(records)
    chunks = [np.asarray(r.token_times, dtype=np.float64) for r in records if r.token_times]
    if not chunks:
        return {"start": [], "seconds": [], "tokens": [], "tokens_per_s": []}
    times = np.concatenate(chunks)
    run_end = max(float(times.max()), max(r.end for r in records))
    n = max(1, math.ceil(run_end / window_s - 1e-12))
    idx = np.clip(np.floor(times / window_s).astype(np.int64), 0, n - 1)
    counts = np.bincount(idx, minlength=n)
    starts = [k * window_s for k in range(n)]
    lengths = [min(window_s, run_end - s) if k == n - 1 else window_s for k, s in enumerate(starts)]
    return {
        "start": starts,
        "seconds": lengths,
        "tokens": [float(c) for c in counts],
        "tokens_per_s": [
            float(c) / ln if ln > 0 else 0.0 for c, ln in zip(counts, lengths, strict=True)
        ],
    }


def throughput(records: Sequence[RequestRecord]) -> float | None:
    """All tokens received / (last end - first start): the run's overall output rate."""
    if not records:
        return None
    span = max(r.end for r in records) - min(r.start for r in records)
    return sum(r.output_tokens for r in records) / span if span > 0 else None


def error_rate(records: Sequence[RequestRecord]) -> float:
    """Failed requests / all requests (0 for no requests)."""
    return sum(r.status == "error" for r in records) / len(records) if records else 0.0


def token_shortfalls(records: Iterable[RequestRecord]) -> int:
    """Successful requests that received a different number of tokens than they asked for."""
    return sum(1 for r in ok(records) if r.output_tokens != r.max_tokens)


def gateway_overhead(record: RequestRecord) -> float | None:
    """The gateway's own time for a request, in ms, from its ``Server-Timing`` header.

    The ``gateway`` entry when present, else ``total``, else the sum of all entries except
    ``upstream`` (time spent waiting on the expert is not overhead); ``None`` without a header.
    """
    st = record.server_timing
    if not st:
        return None
    for name in ("gateway", "total"):
        if name in st:
            return st[name]
    return sum(v for k, v in st.items() if k != "upstream")
