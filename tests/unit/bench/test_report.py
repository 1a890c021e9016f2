"""Sweep outputs: CSV with intervals, PNG figures, HTML; overlays of several runs."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expert_router.bench.records import RequestRecord
from expert_router.bench.report import load_sweep, users_dir, write_comparison, write_sweep
from expert_router.bench.store import write_run
from expert_router.bench.summary import summarize
from expert_router.errors import ConfigError

PNGS = ("ttft.png", "tpot.png", "user_throughput.png", "p99_response_time.png",
        "session_throughput.png", "time_buckets.png")  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with (path / "sweep.csv").open() as fh:
        return list(csv.DictReader(fh))


def _summaries(rec: Callable[..., RequestRecord], slow: float = 1.0) -> list[dict[str, Any]]:
    out = []
    for users in (1, 3):
        records = [
            rec(user=u, repetition=rep, users=users, start=0.0, end=slow * (1 + u),
                times=[0.1 * slow, 0.5 * slow, slow * (1 + u)])
            for rep in range(2) for u in range(users)
        ]  # fmt: skip
        out.append(summarize(records, users=users, window_s=1.0))
    return out


def test_write_sweep(tmp_path: Path, rec: Callable[..., RequestRecord]) -> None:
    summaries = _summaries(rec)
    for s in summaries:
        write_run(users_dir(tmp_path, s["users"]), [], s)
    write_sweep(tmp_path, summaries, name="router")
    for name in (*PNGS, "report.html", "sweep.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "ttft.png").read_bytes()[:4] == b"\x89PNG"
    rows = _rows(tmp_path)
    assert [(r["config"], r["users"], r["repetitions"]) for r in rows] == [
        ("router", "1", "2"), ("router", "3", "2")]  # fmt: skip
    assert float(rows[0]["ttft.mean"]) == pytest.approx(0.1)
    assert float(rows[0]["ttft.mean.sd"]) == pytest.approx(0.0)
    assert "session_throughput.ci95_high" in rows[0]
    assert "router" in (tmp_path / "report.html").read_text()
    assert [s["users"] for s in load_sweep(tmp_path)] == [1, 3]


def test_comparison_overlays_configs(tmp_path: Path, rec: Callable[..., RequestRecord]) -> None:
    write_comparison(tmp_path, {"router": _summaries(rec), "baseline": _summaries(rec, 2.0)})
    rows = _rows(tmp_path)
    assert [r["config"] for r in rows] == ["router", "router", "baseline", "baseline"]
    assert float(rows[2]["ttft.mean"]) == pytest.approx(2 * float(rows[0]["ttft.mean"]))
    html = (tmp_path / "report.html").read_text()
    assert all(p in html for p in PNGS) and "baseline" in html


def test_load_sweep_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="summary.json"):
        load_sweep(tmp_path)
