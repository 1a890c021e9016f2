"""Console tables with the report's columns: the same labels, units and precision as
``report.html`` (``bench.columns``), so a number read in the terminal is found in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

from expert_router.bench.columns import Series, Unit, fmt, header, short_name, units
from expert_router.bench.summary import get_path

SIM_KEYS = (
    "ttft.base.mean",
    "ttft.continuation.mean",
    "tpot.mean",
    "session_throughput",
    "p99_response_time",
)
"""The columns the console shows for a sweep (the report has more)."""

Extra = tuple[str, Callable[[dict[str, Any]], str]]


def sweep_table(
    series: Series,
    keys: Sequence[str] = SIM_KEYS,
    *,
    pick: Callable[[Sequence[dict[str, Any]]], Sequence[dict[str, Any]]] = lambda ss: ss,
    extra: Sequence[Extra] = (),
    unit_of: dict[str, Unit] | None = None,
    title: str | None = None,
) -> Table:
    """One row per configuration and user count (``pick`` chooses which user counts), a
    column per metric in the unit the report uses for the whole ``series``, then ``extra``
    columns (header, cell function)."""
    unit_of = unit_of or units(series, keys)
    columns = ["users", *(header(k, unit_of[k]) for k in keys), *(h for h, _ in extra)]
    if len(series) > 1:
        columns.insert(0, "config")
    table = Table(*columns, title=title, title_justify="left")
    for name, summaries in series.items():
        ordered = sorted(summaries, key=lambda s: int(s["users"]))
        for s in pick(ordered):
            cells = [str(s["users"]), *(fmt(get_path(s, k), unit_of[k]) for k in keys)]
            cells += [cell(s) for _, cell in extra]
            table.add_row(*([short_name(name)] if len(series) > 1 else []), *cells)
    return table


def first_and_last(summaries: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The smallest and the largest user count (for a short table)."""
    return [summaries[0], summaries[-1]] if len(summaries) > 1 else summaries
