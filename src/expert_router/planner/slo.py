"""Service-level targets: ``--slo "p99_response<=20s,ttft_p99<=2s"`` parsed and checked.

A target bounds one predicted metric (a summary key). Targets on a percentile of a
per-request quantity (response time, TTFT, TPOT) also bound each request: the share of
requests within all of them is the plan's *attainment* (a p99 target is met when at least
99 % of requests are within it). ``violation`` says by how much a prediction misses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from expert_router.bench.summary import get_path
from expert_router.errors import UsageError


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric a target may name: its summary key, the per-request quantity it is a
    percentile of (None for means and fleet rates), and which way is good."""

    key: str
    per_request: str | None
    higher_is_better: bool = False
    rate: bool = False
    """A rate (tokens/s), not a time."""


def _metrics() -> dict[str, Metric]:
    out = {
        "p99_response": Metric("p99_response_time", "response"),
        "session_throughput": Metric("session_throughput", None, True, True),
        "throughput": Metric("throughput", None, True, True),
    }
    for q, key in (("response", "response_time"), ("ttft", "ttft"), ("tpot", "tpot")):
        for stat in ("p50", "p90", "p99"):
            out[f"{q}_{stat}"] = Metric(f"{key}.{stat}", q)
        out[f"{q}_mean"] = Metric(f"{key}.mean", None)
    out["response_p99"] = out["p99_response"]
    return out


METRICS = _metrics()
_TARGET = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=)\s*([0-9.eE+-]+)\s*(ms|s|tok/s)?\s*$")


@dataclass(frozen=True, slots=True)
class Target:
    """One bound: ``name`` (a ``METRICS`` key) ``op`` ``value`` (seconds, or tokens/s)."""

    name: str
    op: str
    value: float

    @property
    def metric(self) -> Metric:
        return METRICS[self.name]

    def text(self) -> str:
        unit = " tok/s" if self.metric.rate else " s"
        return f"{self.name} {self.op} {self.value:g}{unit}"

    def miss(self, metrics: Mapping[str, Any]) -> float:
        """0 when met, else the relative shortfall (1.0 = twice the bound; inf: no value)."""
        value = get_path(dict(metrics), self.metric.key)
        if not isinstance(value, int | float):
            return float("inf")
        if self.op == "<=":
            return max(0.0, value / self.value - 1.0) if self.value > 0 else float(value > 0)
        return max(0.0, self.value / value - 1.0) if value > 0 else float("inf")


def parse_slo(text: str) -> list[Target]:
    """``"p99_response<=20s,ttft_p99<=2000ms"`` -> targets; ``UsageError`` names the bad part.

    >>> [t.text() for t in parse_slo("p99_response<=20s,ttft_p99<=500ms")]
    ['p99_response <= 20 s', 'ttft_p99 <= 0.5 s']
    """
    targets = []
    for part in [p for p in text.split(",") if p.strip()]:
        found = _TARGET.match(part)
        if not found:
            raise UsageError(f"--slo: expected NAME<=VALUE[s|ms] or NAME>=VALUE, got {part!r}")
        name, op, number, unit = found.groups()
        metric = METRICS.get(name)
        if metric is None:
            raise UsageError(f"--slo: unknown metric {name!r}; choose from {', '.join(METRICS)}")
        try:
            value = float(number)
        except ValueError:
            raise UsageError(f"--slo: {part!r}: {number!r} is not a number") from None
        if not value > 0:
            raise UsageError(f"--slo: {part!r}: the bound must be > 0")
        good = ">=" if metric.higher_is_better else "<="
        if op != good:
            raise UsageError(f"--slo: {name} is bounded with {good}, got {part!r}")
        if metric.rate and unit not in (None, "tok/s") or not metric.rate and unit == "tok/s":
            raise UsageError(f"--slo: {part!r}: wrong unit for {name}")
        targets.append(Target(name, op, value / 1e3 if unit == "ms" else value))
    if not targets:
        raise UsageError("--slo: no target given")
    return targets


def thresholds(targets: Sequence[Target]) -> dict[str, float]:
    """The per-request bounds of ``targets`` (the tightest per quantity), for attainment."""
    out: dict[str, float] = {}
    for t in targets:
        q = t.metric.per_request
        if q is not None:
            out[q] = min(out.get(q, t.value), t.value)
    return out


def violation(targets: Sequence[Target], metrics: Mapping[str, Any]) -> float:
    """The summed relative shortfall of every target (0 when all are met)."""
    return sum(t.miss(metrics) for t in targets)


def met(targets: Sequence[Target], metrics: Mapping[str, Any]) -> bool:
    return violation(targets, metrics) == 0.0
