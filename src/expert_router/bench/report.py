"""Sweep outputs: the CSV table, the PNG figures and one HTML page, for one or several runs.

``write_sweep`` writes the outputs of one configuration; ``write_comparison`` overlays several
(e.g. router vs baseline) in the same figures and one table. ``load_sweep`` reads a sweep
directory (``DIR/users-<N>/summary.json``) back.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expert_router.bench import plots
from expert_router.bench.store import SUMMARY_FILE, read_summary
from expert_router.bench.summary import HEADLINE, get_path
from expert_router.errors import ConfigError

CSV_FILE = "sweep.csv"
HTML_FILE = "report.html"


def users_dir(out_dir: Path, users: int) -> Path:
    """Where the outputs of one user count go: ``out_dir/users-<N>``."""
    return Path(out_dir) / f"users-{users}"


def load_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """The per-user-count summaries of a sweep directory, sorted by user count."""
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.glob(f"users-*/{SUMMARY_FILE}"))
    if not paths and (sweep_dir / SUMMARY_FILE).is_file():
        paths = [sweep_dir / SUMMARY_FILE]
    if not paths:
        raise ConfigError(f"no users-*/summary.json under {sweep_dir}")
    return sorted((read_summary(p) for p in paths), key=lambda s: int(s["users"]))


def sweep_rows(series: Mapping[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (configuration, user count): each headline metric's mean, sd and interval."""
    rows = []
    for name, summaries in series.items():
        for s in sorted(summaries, key=lambda s: int(s["users"])):
            row: dict[str, Any] = {
                "config": name,
                "users": s["users"],
                "repetitions": s.get("repetitions", 1),
            }
            for key in HEADLINE:
                iv = (s.get("across_repetitions") or {}).get(key)
                if isinstance(iv, dict):
                    row[key] = iv.get("mean")
                    row[f"{key}.sd"] = iv.get("sd")
                    row[f"{key}.ci95_low"] = iv.get("ci95_low")
                    row[f"{key}.ci95_high"] = iv.get("ci95_high")
                else:
                    value = get_path(s, key)
                    row[key] = value if isinstance(value, int | float) else None
                    row[f"{key}.sd"] = row[f"{key}.ci95_low"] = row[f"{key}.ci95_high"] = None
            rows.append(row)
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV (empty cells for missing values)."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


_TABLE_COLUMNS = (
    ("ttft.base.mean", "TTFT base (ms)", 1e3),
    ("ttft.continuation.mean", "TTFT cont. (ms)", 1e3),
    ("tpot.mean", "TPOT (ms)", 1e3),
    ("user_throughput.mean", "user tok/s", 1.0),
    ("p99_response_time", "p99 resp. (s)", 1.0),
    ("session_throughput", "session tok/s", 1.0),
    ("session.n99", "n99", 1.0),
    ("error_rate", "error rate", 1.0),
    ("gateway_overhead.mean", "gateway (ms)", 1.0),
)


def _cell(row: dict[str, Any], key: str, scale: float) -> str:
    mean, sd = row.get(key), row.get(f"{key}.sd")
    if not isinstance(mean, int | float):
        return "–"
    text = f"{mean * scale:.4g}"
    if isinstance(sd, int | float) and sd > 0 and (row.get("repetitions") or 1) > 1:
        text += f" ± {sd * scale:.2g}"
    return text


def write_html(
    path: Path, title: str, rows: Sequence[dict[str, Any]], images: Sequence[str]
) -> None:
    """A self-contained page: the table (mean ± sd across repetitions) and the figures."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["config", "users", "reps"])
    head += "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in _TABLE_COLUMNS)
    body = []
    for row in rows:
        cells = [html.escape(str(row["config"])), str(row["users"]), str(row["repetitions"])]
        cells += [_cell(row, key, scale) for key, _, scale in _TABLE_COLUMNS]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    figures = "\n".join(
        f'<img src="{html.escape(img)}" alt="{html.escape(img)}">' for img in images
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:48%;margin:4px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Mean ± sample sd across repetitions; figures show 95% intervals. Metric definitions:
docs/metrics.md. Full table: <a href="{CSV_FILE}">{CSV_FILE}</a>.</p>
<table><tr>{head}</tr>
{chr(10).join(body)}
</table>
{figures}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_comparison(
    out_dir: Path,
    series: Mapping[str, Sequence[dict[str, Any]]],
    *,
    title: str = "Expert Router bench",
) -> None:
    """Write ``sweep.csv``, the PNG figures and ``report.html`` overlaying every configuration."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sweep_rows(series)
    write_csv(out_dir / CSV_FILE, rows)
    images = plots.plot_all(out_dir, series)
    write_html(out_dir / HTML_FILE, title, rows, images)


def write_sweep(out_dir: Path, summaries: Sequence[dict[str, Any]], *, name: str = "run") -> None:
    """The outputs of one configuration's sweep (one summary per user count) under ``out_dir``."""
    write_comparison(Path(out_dir), {name: summaries}, title=f"Expert Router bench: {name}")
