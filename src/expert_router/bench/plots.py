"""The sweep figures: one metric against the number of users, one line per configuration.

Error bars are the 95% interval across repetitions (none for one repetition); units are the
report's (``bench.columns``). Matplotlib runs headless (Agg) and each figure is written as a
PNG; ``FIGURES`` lists them, and the report's sections, in the order the HTML page shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from expert_router.bench.columns import METRICS, units  # noqa: E402
from expert_router.bench.summary import get_path  # noqa: E402

Series = Mapping[str, Sequence[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Figure:
    """One metric-vs-users figure and the report section around it: which summary keys it
    draws (``bench.columns.METRICS``; the first solid, the next dashed) and which the
    section's table adds."""

    file: str
    title: str
    keys: tuple[tuple[str, str], ...]
    """(summary key, label suffix) pairs."""
    table_extra: tuple[str, ...] = ()

    @property
    def table_keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys) + self.table_extra


FIGURES = (
    Figure("ttft.png", "Time to first token (TTFT)",
           (("ttft.base.mean", "base"), ("ttft.continuation.mean", "continuation"))),
    Figure("tpot.png", "Time per output token (TPOT)", (("tpot.mean", ""),)),
    Figure("user_throughput.png", "User throughput (mean over users)",
           (("user_throughput.mean", ""),)),
    Figure("p99_response_time.png", "p99 response time", (("p99_response_time", ""),)),
    Figure("session_throughput.png", "Session throughput (n99 users)",
           (("session_throughput", ""),), ("session.n99",)),
)  # fmt: skip

TIME_BUCKETS_FILE = "time_buckets.png"
_STYLES = ("-", "--", ":", "-.")


def _point(summary: dict[str, Any], key: str, scale: float) -> tuple[float, float, float] | None:
    """(mean, lower error, upper error) of ``key`` scaled, from the across-repetition interval."""
    stats = get_path(summary, "across_repetitions")
    iv = stats.get(key) if isinstance(stats, dict) else None
    mean = iv.get("mean") if isinstance(iv, dict) else get_path(summary, key)
    if not isinstance(mean, int | float):
        return None
    lo = iv.get("ci95_low") if isinstance(iv, dict) else None
    hi = iv.get("ci95_high") if isinstance(iv, dict) else None
    lo = mean if lo is None else lo
    hi = mean if hi is None else hi
    return mean * scale, (mean - lo) * scale, (hi - mean) * scale


def plot_metric(path: Path, series: Series, fig: Figure) -> None:
    """Draw ``fig`` for every configuration in ``series`` and save it to ``path``."""
    unit = units(series, [k for k, _ in fig.keys])[fig.keys[0][0]]
    f, ax = plt.subplots(figsize=(6.4, 3.8))
    top = 0.0
    for ci, (name, summaries) in enumerate(series.items()):
        color = f"C{ci % 10}"
        ordered = sorted(summaries, key=lambda s: int(s["users"]))
        for si, (key, suffix) in enumerate(fig.keys):
            pts = [(int(s["users"]), _point(s, key, unit.scale)) for s in ordered]
            xs = [u for u, p in pts if p is not None]
            ys = [p[0] for _, p in pts if p is not None]
            err = [[p[1] for _, p in pts if p is not None], [p[2] for _, p in pts if p is not None]]
            if not xs:
                continue
            top = max([top] + [y + e for y, e in zip(ys, err[1], strict=True)])
            label = " ".join(x for x in (name if len(series) > 1 else "", suffix) if x) or None
            ax.errorbar(xs, ys, yerr=err, color=color, linestyle=_STYLES[si % len(_STYLES)],
                        marker="o", markersize=3, capsize=2, label=label)  # fmt: skip
    ax.set_title(fig.title)
    ax.set_xlabel("concurrent users")
    short = METRICS[fig.keys[0][0]].short if len(fig.keys) == 1 else fig.title.split(" (")[0]
    ax.set_ylabel(f"{short} ({unit.name})" if unit.name not in short.split() else short)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.{d}f}".replace(
        "{d}", str(_tick_digits(top)))))  # fmt: skip
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _tick_digits(top: float) -> int:
    """Decimals on the y axis: none from 10 on, one from 1, two below."""
    return 0 if top >= 10 else 1 if top >= 1 else 2


def plot_time_buckets(path: Path, series: Series) -> None:
    """Throughput over time (tokens/s per window), one panel per configuration (two panels a
    row) and one line per user count."""
    n = max(1, len(series))
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    f, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.0 * rows + 0.4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (name, summaries) in zip(axes.flat, series.items(), strict=False):
        ordered = sorted(summaries, key=lambda s: int(s["users"]))
        for i, s in enumerate(ordered):
            tb = s.get("time_buckets") or {}
            starts, rates = tb.get("start") or [], tb.get("tokens_per_s") or []
            if not starts:
                continue
            color = cmap(i / max(1, len(ordered) - 1))
            lengths = tb.get("seconds") or []
            last = lengths[-1] if lengths else float(tb.get("window_s") or 60.0)
            xs, ys = [*starts, starts[-1] + last], [*rates, rates[-1]]
            ax.step(xs, ys, where="post", color=color, label=str(s["users"]))
        ax.set_title(name if len(series) > 1 else "Throughput over time", fontsize=10)
        ax.set_ylabel("tokens/s")
        ax.set_xlabel("seconds since the run started")
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles, labels = max(
        (ax.get_legend_handles_labels() for ax in axes.flat), key=lambda h: len(h[1])
    )
    if labels:  # one legend for every panel: the user counts are the same
        f.legend(handles, labels, title="users", loc="center right", fontsize=8)
    f.tight_layout(rect=(0, 0, 0.9 if cols == 2 else 0.84, 1))
    f.savefig(path, dpi=110)
    plt.close(f)


def plot_all(out_dir: Path, series: Series) -> list[str]:
    """Write every figure under ``out_dir``; returns the file names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for fig in FIGURES:
        plot_metric(out_dir / fig.file, series, fig)
    plot_time_buckets(out_dir / TIME_BUCKETS_FILE, series)
    return [fig.file for fig in FIGURES] + [TIME_BUCKETS_FILE]
