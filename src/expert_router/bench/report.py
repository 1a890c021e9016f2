"""Sweep outputs: the CSV table, the PNG figures and one HTML page, for one or several runs.

``write_sweep`` writes the outputs of one configuration; ``write_comparison`` overlays several
(e.g. router vs baseline) in the same figures and tables (the page: ``bench.html``).
``load_sweep`` reads a sweep directory (``DIR/users-<N>/summary.json``) back.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from expert_router.bench import plots
from expert_router.bench.html import report_page
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


def write_comparison(
    out_dir: Path,
    series: Mapping[str, Sequence[dict[str, Any]]],
    *,
    title: str = "Expert Router bench",
    sources: Mapping[str, Path] | None = None,
) -> None:
    """Write ``sweep.csv``, the PNG figures and ``report.html`` overlaying every configuration.

    ``sources`` maps a configuration to its own sweep directory, whose report the page links.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sweep_rows(series)
    write_csv(out_dir / CSV_FILE, rows)
    plots.plot_all(out_dir, series)
    links = {
        name: Path(os.path.relpath(Path(d) / HTML_FILE, out_dir)).as_posix()
        for name, d in (sources or {}).items()
    }
    text = report_page(title, series, out_dir, csv_file=CSV_FILE, sources=links)
    (out_dir / HTML_FILE).write_text(text, encoding="utf-8")


def write_sweep(out_dir: Path, summaries: Sequence[dict[str, Any]], *, name: str = "run") -> None:
    """The outputs of one configuration's sweep (one summary per user count) under ``out_dir``."""
    write_comparison(Path(out_dir), {name: summaries}, title=f"Expert Router bench: {name}")
