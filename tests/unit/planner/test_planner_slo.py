"""``--slo`` targets: parsing (units, directions, one-line errors) and how they are judged."""

from __future__ import annotations

import pytest

from expert_router.errors import UsageError
from expert_router.planner.slo import parse_slo, thresholds, violation


def test_parse_units_and_names() -> None:
    got = parse_slo("p99_response<=20s, ttft_p99 <= 500ms,session_throughput>=1000 tok/s")
    assert [(t.name, t.op, t.value) for t in got] == [
        ("p99_response", "<=", 20.0),
        ("ttft_p99", "<=", 0.5),
        ("session_throughput", ">=", 1000.0),
    ]
    assert parse_slo("tpot_mean<=0.05")[0].metric.key == "tpot.mean"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("p99_response<20s", "expected NAME<=VALUE"),
        ("latency<=2s", "unknown metric 'latency'"),
        ("p99_response>=2s", "bounded with <="),
        ("session_throughput<=5", "bounded with >="),
        ("ttft_p99<=0s", "must be > 0"),
        ("ttft_p99<=2tok/s", "wrong unit"),
        ("", "no target"),
    ],
)
def test_bad_targets_are_one_line_usage_errors(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as exc:
        parse_slo(text)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("--slo")


def test_violation_is_the_summed_relative_shortfall() -> None:
    targets = parse_slo("p99_response<=10s,ttft_p99<=1s,session_throughput>=100")
    metrics = {"p99_response_time": 15.0, "ttft": {"p99": 0.5}, "session_throughput": 50.0}
    assert violation(targets, metrics) == pytest.approx(0.5 + 0.0 + 1.0)
    assert violation(targets[1:2], metrics) == 0.0
    assert violation(targets, {"ttft": {"p99": 0.5}}) == float("inf")  # no value: unmet


def test_thresholds_bound_each_request_by_the_tightest_target() -> None:
    targets = parse_slo("p99_response<=20s,response_p90<=12s,ttft_p99<=2s,ttft_mean<=1s")
    assert thresholds(targets) == {"response": 12.0, "ttft": 2.0}  # means bound no request
