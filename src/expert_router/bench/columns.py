"""The metrics a report shows, in one place: label, unit, which way is better, what it means.

The HTML report, its figures and the console tables read them from here, so a number carries
the same label and unit wherever it appears. ``unit_for`` picks a unit from the values shown
(seconds once any time reaches 1 s, milliseconds below) and ``fmt`` writes fixed precision with
thousands separators: never scientific notation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from expert_router.bench.summary import get_path

Kind = Literal["time", "ms", "rate", "count", "ratio"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One summary value as a report shows it."""

    key: str
    """Dotted key in ``summary.json`` (``ttft.base.mean``)."""
    label: str
    """Full name, as it starts a sentence."""
    short: str
    """Column header."""
    kind: Kind
    better: Literal["lower", "higher", ""]
    about: str
    """What it means, in one sentence (shown where it appears)."""


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("ttft.base.mean", "TTFT of the base prompt", "TTFT base", "time", "lower",
           "Time to first token: from sending a request to receiving its first token, mean "
           "over requests. Base: each user's first request."),
    Metric("ttft.continuation.mean", "TTFT of the continuation", "TTFT cont.", "time", "lower",
           "Continuation: each user's second request, which carries the first exchange "
           "(a longer prompt)."),
    Metric("tpot.mean", "TPOT", "TPOT", "time", "lower",
           "Time per output token: the mean gap between consecutive tokens after the first, "
           "averaged over requests."),
    Metric("user_throughput.mean", "User throughput", "user tok/s", "rate", "higher",
           "Tokens a user received per second, from its first request to its last token, "
           "mean over users."),
    Metric("p99_response_time", "p99 response time", "p99 resp.", "time", "lower",
           "The 99th percentile (nearest rank) of the response times of all successful "
           "requests; a response time runs from sending the request to its last token."),
    Metric("session_throughput", "Session throughput", "session tok/s", "rate", "higher",
           "The paper's system throughput: tokens delivered to the n99 users divided by the "
           "time from their first request to their last token."),
    Metric("session.n99", "n99 users", "n99", "count", "",
           "n99: the users all of whose requests succeeded within the p99 response time; "
           "only they count towards session throughput."),
    Metric("error_rate", "Error rate", "errors", "ratio", "lower",
           "Failed requests as a share of all requests."),
    Metric("gateway_overhead.mean", "Gateway overhead", "gateway", "ms", "lower",
           "Time the gateway spent on a request before forwarding it (classifying and "
           "choosing a replica), from its Server-Timing header; measured live only."),
)}  # fmt: skip

HEADLINE_KEYS = (
    "ttft.base.mean",
    "ttft.continuation.mean",
    "tpot.mean",
    "user_throughput.mean",
    "p99_response_time",
    "session_throughput",
)
"""The metrics the headline speaks of, one sentence each."""


@dataclass(frozen=True, slots=True)
class Unit:
    """How to print values of one column: name, scale from the summary's unit, decimals."""

    name: str
    scale: float = 1.0
    digits: int = 0


def unit_for(metric: Metric, values: Iterable[Any]) -> Unit:
    """The unit of a column: seconds once any time reaches 1 s, else milliseconds; tokens/s
    without decimals from 100 on; percent for ratios.

    >>> unit_for(METRICS["tpot.mean"], [0.008, 0.04]), unit_for(METRICS["tpot.mean"], [39.3])
    (Unit(name='ms', scale=1000.0, digits=1), Unit(name='s', scale=1.0, digits=2))
    """
    nums = [abs(float(v)) for v in values if isinstance(v, int | float)]
    top = max(nums, default=0.0)
    if metric.kind == "time":
        return Unit("s", 1.0, 2) if top >= 1.0 else Unit("ms", 1e3, 1)
    if metric.kind == "ms":
        return Unit("ms", 1.0, 2)
    if metric.kind == "rate":
        return Unit("tok/s", 1.0, 0 if top >= 100 else 1)
    if metric.kind == "ratio":
        return Unit("%", 100.0, 1)
    return Unit("", 1.0, 0)


def fmt(value: Any, unit: Unit, *, with_unit: bool = False) -> str:
    """``value`` in ``unit`` at fixed precision (``–`` when missing).

    >>> fmt(10486.04, Unit("tok/s")), fmt(0.0398, Unit("s", 1.0, 2), with_unit=True)
    ('10,486', '0.04 s')
    """
    if not isinstance(value, int | float):
        return "–"
    text = f"{value * unit.scale:,.{unit.digits}f}"
    return f"{text} {unit.name}" if with_unit and unit.name else text


Series = Mapping[str, Sequence[dict[str, Any]]]


def values(series: Series, key: str) -> list[Any]:
    """Every value of ``key`` over all configurations and user counts."""
    return [get_path(s, key) for summaries in series.values() for s in summaries]


SHARED_UNIT = {"ttft.base.mean": "ttft", "ttft.continuation.mean": "ttft"}
"""Metrics shown side by side, in one unit."""


def units(series: Series, keys: Iterable[str]) -> dict[str, Unit]:
    """The unit of each metric for this set of runs (shared by tables, figures, console):
    the metrics of one ``SHARED_UNIT`` group get the unit of all their values together."""
    out = {}
    for k in keys:
        group = [g for g, name in SHARED_UNIT.items() if name == SHARED_UNIT.get(k)] or [k]
        out[k] = unit_for(METRICS[k], [v for g in group for v in values(series, g)])
    return out


def header(key: str, unit: Unit) -> str:
    """``TTFT base (s)``: a column header with its unit."""
    short = METRICS[key].short
    return f"{short} ({unit.name})" if unit.name and unit.name not in short.split() else short


def short_name(name: str) -> str:
    """The configuration's short name: ``A`` for ``A: 70B FP16 TP8 (direct)``."""
    head, sep, _ = name.partition(":")
    return head.strip() if sep and head.strip() else name
