"""Each metric on a tiny example computed by hand (docs/metrics.md gives the definitions)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from expert_router.bench import metrics as m
from expert_router.bench.records import RequestRecord


def test_ttft_tpot_count_tokens_not_chunks(rec: Callable[..., RequestRecord]) -> None:
    # Tokens at 0.5, then a chunk of two tokens at 0.7, then one at 0.9.
    r = rec(start=0.0, times=[0.5, 0.7, 0.7, 0.9], end=1.0)
    assert m.ttft(r) == pytest.approx(0.5)
    assert m.tpot(r) == pytest.approx((0.9 - 0.5) / 3)
    assert m.response_time(r) == pytest.approx(1.0)
    assert m.tpot(rec(times=[0.3])) is None
    assert m.ttft(rec(times=[])) is None


def test_lists_skip_failed_requests_and_split_turns(rec: Callable[..., RequestRecord]) -> None:
    records = [
        rec(user=0, turn=0, start=0.0, times=[0.5, 0.7, 0.7, 0.9], end=1.0),
        rec(user=0, turn=1, start=1.0, times=[1.2, 1.5], end=1.5),
        rec(user=1, turn=0, start=0.0, times=[], end=0.1, status="error"),
    ]
    assert m.ttfts(records) == pytest.approx([0.5, 0.2])
    assert m.ttfts(records, turn=0) == pytest.approx([0.5])
    assert m.ttfts(records, turn=1) == pytest.approx([0.2])
    assert m.tpots(records) == pytest.approx([0.4 / 3, 0.3])
    assert m.response_times(records) == pytest.approx([1.0, 0.5])
    # user 0: 6 tokens over [0, 1.5] -> 4 tok/s; user 1: nothing in 0.1 s -> 0.
    assert sorted(m.user_throughputs(records)) == pytest.approx([0.0, 4.0])
    assert m.error_rate(records) == pytest.approx(1 / 3)
    # all tokens over the whole span: 6 / 1.5
    assert m.throughput(records) == pytest.approx(4.0)


def test_describe_and_percentiles() -> None:
    d = m.describe([1.0, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["min"] == 1.0 and d["max"] == 4.0
    assert d["sd"] == pytest.approx(math.sqrt(1.25))  # population sd
    assert d["p50"] == pytest.approx(2.5)
    assert d["p90"] == pytest.approx(3.7)  # 1 + 0.9 * 3 (linear interpolation)
    assert d["p99"] == pytest.approx(3.97)
    assert m.describe([])["mean"] is None
    assert m.nearest_rank([2.0, 3.0, 2.0, 10.0], 99) == 10.0
    assert m.nearest_rank(list(range(1, 201)), 99) == 198
    assert m.nearest_rank([], 99) is None


def test_session_throughput_small(rec: Callable[..., RequestRecord]) -> None:
    records = [
        rec(user=0, start=0.0, end=2.0, times=[1.0] * 10),
        rec(user=1, start=1.0, end=4.0, times=[2.0] * 10),
        rec(user=2, start=0.5, end=2.5, times=[2.0] * 20),
        rec(user=3, start=0.0, end=10.0, times=[5.0] * 30),
    ]
    s = m.session_throughput(records)
    # nearest-rank p99 of [2, 3, 2, 10] is 10: every user is inside.
    assert s.p99_response_time == 10.0 and s.n99 == 4
    assert (s.t_start, s.t_end, s.tokens) == (0.0, 10.0, 70)
    assert s.tokens_per_s == pytest.approx(7.0)


def test_session_throughput_drops_users_beyond_p99_and_failed_users(
    rec: Callable[..., RequestRecord],
) -> None:
    records = [
        rec(user=i, start=i * 0.01, end=i * 0.01 + 1.0, times=[0.5] * 10) for i in range(100)
    ]
    records.append(rec(user=100, start=0.0, end=50.0, times=[1.0] * 500))
    s = m.session_throughput(records)
    # 101 responses: the 100th smallest (1.0) is p99, the 50 s user is left out.
    assert s.p99_response_time == pytest.approx(1.0)
    assert s.n99 == 100 and s.tokens == 1000
    assert s.t_start == 0.0 and s.t_end == pytest.approx(1.99)
    assert s.tokens_per_s == pytest.approx(1000 / 1.99)
    # A user with one failed request is not in n99 even though its other request was fast.
    records.append(rec(user=0, turn=1, start=1.0, end=1.1, times=[], status="error"))
    assert m.session_throughput(records).n99 == 99
    assert m.session_throughput([]).tokens_per_s is None


def test_time_buckets(rec: Callable[..., RequestRecord]) -> None:
    records = [
        rec(user=0, start=0.0, times=[0.5, 1.5, 1.5, 2.9], end=3.0),
        rec(user=1, start=0.0, times=[0.1, 3.2], end=3.5),
    ]
    tb = m.time_buckets(records, window_s=1.0)
    assert tb["start"] == [0.0, 1.0, 2.0, 3.0]
    assert tb["tokens"] == [2, 2, 1, 1]
    assert tb["seconds"] == pytest.approx([1.0, 1.0, 1.0, 0.5])
    # the last window is [3, 3.5): one token in half a second
    assert tb["tokens_per_s"] == pytest.approx([2.0, 2.0, 1.0, 2.0])
    assert m.time_buckets([], 60.0) == {
        "start": [],
        "seconds": [],
        "tokens": [],
        "tokens_per_s": [],
    }
    with pytest.raises(ValueError):
        m.time_buckets(records, 0.0)


def test_token_shortfalls_and_gateway_overhead(rec: Callable[..., RequestRecord]) -> None:
    records = [rec(times=[0.1] * 3, max_tokens=4), rec(times=[0.1] * 4, max_tokens=4)]
    assert m.token_shortfalls(records) == 1
    st = {"classify": 0.1, "route": 0.05, "upstream": 3.0}
    assert m.gateway_overhead(rec(server_timing=st)) == pytest.approx(0.15)
    assert m.gateway_overhead(rec(server_timing={"total": 1.2, "classify": 0.1})) == 1.2
    assert m.gateway_overhead(rec()) is None
