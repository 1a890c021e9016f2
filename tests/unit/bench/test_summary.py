"""summary.json: keys, per-repetition metrics, their means and 95% intervals."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from expert_router.bench.records import RequestRecord
from expert_router.bench.summary import HEADLINE, interval, mean_tree, summarize


def test_interval_by_hand() -> None:
    iv = interval([2.0, 4.0, 6.0])
    assert iv["n"] == 3 and iv["mean"] == 4.0 and iv["sd"] == pytest.approx(2.0)
    half = 4.302652729911275 * 2.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert iv["ci95_low"] == pytest.approx(4.0 - half)
    assert iv["ci95_high"] == pytest.approx(4.0 + half)
    assert interval([5.0]) == {"n": 1, "mean": 5.0, "sd": 0.0, "ci95_low": 5.0, "ci95_high": 5.0}
    assert interval([])["mean"] is None


def test_mean_tree() -> None:
    a = {"x": 1, "y": [1.0, 2.0], "z": {"k": 2.0}, "name": "a", "none": None}
    b = {"x": 3, "y": [3.0], "z": {"k": 4.0, "j": 1.0}, "name": "b", "none": 5.0}
    assert mean_tree([a, b]) == {
        "x": 2,
        "y": [2.0, 2.0],
        "z": {"k": 3.0, "j": 1.0},
        "name": "a",
        "none": 5.0,
    }


def _run(rec: Callable[..., RequestRecord], rep: int, scale: float) -> list[RequestRecord]:
    # Two users, each base + continuation; every time scaled by ``scale``.
    out = []
    for u in range(2):
        out.append(
            rec(user=u, turn=0, repetition=rep, users=2, start=0.0, end=1.0 * scale,
                times=[0.2 * scale, 0.6 * scale, 1.0 * scale], cluster=u, replica=f"r{u}",
                routed_cluster=u, server_timing={"classify": 0.1, "route": 0.1})
        )  # fmt: skip
        out.append(
            rec(user=u, turn=1, repetition=rep, users=2, start=1.0 * scale, end=2.0 * scale,
                times=[1.1 * scale, 2.0 * scale], cluster=u, replica="r0", routed_cluster=0)
        )  # fmt: skip
    return out


def test_summarize_one_repetition(rec: Callable[..., RequestRecord]) -> None:
    s = summarize(_run(rec, 0, 1.0), users=2, window_s=1.0)
    for key in ("users", "ttft", "tpot", "user_throughput", "p99_response_time",
                "session_throughput", "errors", "response_time", "time_buckets",
                "clusters", "replicas", "error_rate", "gateway_overhead"):  # fmt: skip
        assert key in s
    assert s["users"] == 2 and s["repetitions"] == 1 and s["requests"] == 4
    assert s["ttft"]["base"]["mean"] == pytest.approx(0.2)
    assert s["ttft"]["continuation"]["mean"] == pytest.approx(0.1)
    assert s["tpot"]["mean"] == pytest.approx((0.4 + 0.9) / 2)
    # each user: 5 tokens over 2 s
    assert s["user_throughput"]["mean"] == pytest.approx(2.5)
    assert s["p99_response_time"] == pytest.approx(1.0)
    assert s["session_throughput"] == pytest.approx(10 / 2.0)
    assert s["session"]["n99"] == 2
    assert s["errors"] == 0 and s["error_rate"] == 0.0
    assert s["time_buckets"]["tokens"] == [4, 6]
    assert s["clusters"]["0"]["requests"] == 2 and s["clusters"]["1"]["tokens"] == 5
    assert s["replicas"]["r0"]["requests"] == 3
    # base turns go where they were labelled; user 1's continuation went to cluster 0
    assert s["routing_agreement"] == pytest.approx(3 / 4)
    assert s["gateway_overhead"]["mean"] == pytest.approx(0.2)
    assert s["gateway_overhead"]["entries"]["classify"]["n"] == 2


def test_summarize_aggregates_repetitions(rec: Callable[..., RequestRecord]) -> None:
    records = _run(rec, 0, 1.0) + _run(rec, 1, 2.0)
    s = summarize(records, users=2, window_s=1.0)
    assert s["repetitions"] == 2 and s["totals"]["requests"] == 8
    iv = s["across_repetitions"]["session_throughput"]
    assert iv["mean"] == pytest.approx((5.0 + 2.5) / 2)
    assert iv["sd"] == pytest.approx(math.sqrt(2 * 1.25**2))
    assert s["session_throughput"] == pytest.approx(3.75)
    assert s["ttft"]["base"]["mean"] == pytest.approx(0.3)
    assert [r["session_throughput"] for r in s["per_repetition"]] == pytest.approx([5.0, 2.5])
    assert set(HEADLINE) == set(s["across_repetitions"])


def test_summarize_counts_errors_and_empty(rec: Callable[..., RequestRecord]) -> None:
    records = [rec(start=0.0, end=0.5, times=[], status="error", error="boom", max_tokens=4)]
    s = summarize(records, users=1)
    assert s["errors"] == 1 and s["error_rate"] == 1.0 and s["error_messages"] == {"boom": 1}
    assert s["ttft"]["mean"] is None and s["session_throughput"] is None
    empty = summarize([], users=3)
    assert empty["users"] == 3 and empty["requests"] == 0
