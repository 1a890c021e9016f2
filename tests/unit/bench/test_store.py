"""Records survive a Parquet round trip; summary.json is strict JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from expert_router.bench.records import RequestRecord
from expert_router.bench.store import (
    read_records,
    read_summary,
    rep_records_file,
    write_records,
    write_run,
)
from expert_router.errors import ConfigError


def test_round_trip(tmp_path: Path, rec: Callable[..., RequestRecord]) -> None:
    records = [
        rec(user=0, start=0.25, end=2.0, times=[0.5, 0.5000013, 1.9999999], cluster=3,
            replica="gpu-1", routed_cluster=3, server_timing={"classify": 0.12}, http_status=200),
        rec(user=1, turn=1, start=0.0, end=0.1, times=[], status="error", error="refused",
            cluster=None),
    ]  # fmt: skip
    write_run(tmp_path / "run", records, {"users": 2, "nan": float("nan")})
    back = read_records(tmp_path / "run")
    assert len(back) == 2
    a, b = back
    assert a.token_times == pytest.approx(records[0].token_times, abs=1e-6)
    assert (a.cluster, a.replica, a.routed_cluster, a.http_status) == (3, "gpu-1", 3, 200)
    assert a.server_timing == {"classify": 0.12} and a.first_token == 0.5
    assert (b.status, b.error, b.cluster, b.first_token, b.token_times) == (
        "error", "refused", None, None, [])  # fmt: skip
    assert b.server_timing == {} and b.turn == 1
    raw = (tmp_path / "run" / "summary.json").read_text()
    assert json.loads(raw)["nan"] is None  # NaN is written as null
    assert read_summary(tmp_path / "run")["users"] == 2


def test_large_run_is_compact(tmp_path: Path, rec: Callable[..., RequestRecord]) -> None:
    records = [
        rec(user=u, start=0.0, end=130.0, times=[0.1 * k + u * 1e-4 for k in range(1200)])
        for u in range(200)
    ]
    write_run(tmp_path, records, {"users": 200})
    # 240k token times in well under 8 bytes each
    assert (tmp_path / "records.parquet").stat().st_size < 240_000 * 2


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="records"):
        read_records(tmp_path / "missing.parquet")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a bench summary"):
        read_summary(tmp_path)


def test_directory_with_one_file_per_repetition(
    tmp_path: Path, rec: Callable[..., RequestRecord]
) -> None:
    for rep in (0, 1, 10):
        write_records(tmp_path / rep_records_file(rep), [rec(repetition=rep, times=[0.5])])
    assert [r.repetition for r in read_records(tmp_path)] == [0, 1, 10]
    with pytest.raises(ConfigError, match="cannot read records"):
        read_records(tmp_path / "missing.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no records"):
        read_records(tmp_path / "empty")
