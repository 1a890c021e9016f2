"""The sweep figures: one metric against the number of users, one line per configuration.

Error bars are the 95% interval across repetitions. Matplotlib runs headless (Agg) and each
figure is written as a PNG; ``FIGURES`` lists them in the order the HTML report shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from expert_router.bench.summary import get_path  # noqa: E402

Series = Mapping[str, Sequence[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Figure:
    """One metric-vs-users figure: which summary keys, which unit, which file."""

    file: str
    title: str
    ylabel: str
    keys: tuple[tuple[str, str], ...]
    """(summary key, label suffix) pairs; the first is drawn solid, the next dashed."""
    scale: float = 1.0


FIGURES = (
    Figure("ttft.png", "Time to first token", "TTFT (ms)",
           (("ttft.base.mean", "base"), ("ttft.continuation.mean", "continuation")), 1e3),
    Figure("tpot.png", "Time per output token", "TPOT (ms)", (("tpot.mean", ""),), 1e3),
    Figure("user_throughput.png", "User throughput (mean over users)", "tokens/s per user",
           (("user_throughput.mean", ""),)),
    Figure("p99_response_time.png", "p99 response time", "seconds",
           (("p99_response_time", ""),)),
    Figure("session_throughput.png", "Session throughput (n99 users)", "tokens/s",
           (("session_throughput", ""),)),
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
    f, ax = plt.subplots(figsize=(7, 4.2))
    top = 0.0
    for ci, (name, summaries) in enumerate(series.items()):
        color = f"C{ci % 10}"
        ordered = sorted(summaries, key=lambda s: int(s["users"]))
        for si, (key, suffix) in enumerate(fig.keys):
            pts = [(int(s["users"]), _point(s, key, fig.scale)) for s in ordered]
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
    ax.set_ylabel(fig.ylabel)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def plot_time_buckets(path: Path, series: Series) -> None:
    """Throughput over time (tokens/s per window), one panel per configuration and one line
    per user count."""
    n = max(1, len(series))
    f, axes = plt.subplots(n, 1, figsize=(7, 3.2 * n), squeeze=False, sharex=True)
    cmap = plt.get_cmap("viridis")
    for ax, (name, summaries) in zip(axes[:, 0], series.items(), strict=False):
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
            ax.step(xs, ys, where="post", color=color, label=f"{s['users']} users")
        ax.set_title(f"Time-bucket throughput{f' ({name})' if len(series) > 1 else ''}")
        ax.set_ylabel("tokens/s")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("seconds since run start")
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def plot_all(out_dir: Path, series: Series) -> list[str]:
    """Write every figure under ``out_dir``; returns the file names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for fig in FIGURES:
        plot_metric(out_dir / fig.file, series, fig)
    plot_time_buckets(out_dir / TIME_BUCKETS_FILE, series)
    return [fig.file for fig in FIGURES] + [TIME_BUCKETS_FILE]
