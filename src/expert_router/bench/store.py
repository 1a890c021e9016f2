"""Reading and writing a run's records (Parquet) and its ``summary.json``.

Token arrival times are stored as integer microseconds, delta-encoded by Parquet, so a run of
1000 users x 2 turns x 1200 tokens stays a few MB; reading gives seconds back (1 us steps).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from expert_router.bench.records import RequestRecord
from expert_router.errors import ConfigError

RECORDS_FILE = "records.parquet"
SUMMARY_FILE = "summary.json"

_US = 1_000_000

SCHEMA = pa.schema(
    [
        ("users", pa.int32()),
        ("repetition", pa.int32()),
        ("user", pa.int32()),
        ("turn", pa.int16()),
        ("cluster", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("max_tokens", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("first_token", pa.float64()),
        ("token_times_us", pa.list_(pa.int64())),
        ("output_tokens", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("http_status", pa.int32()),
        ("routed_cluster", pa.int32()),
        ("replica", pa.string()),
        ("server_timing", pa.string()),
    ]
)

_PLAIN = [f.name for f in fields(RequestRecord) if f.name not in ("token_times", "server_timing")]


def records_table(records: Sequence[RequestRecord]) -> pa.Table:
    """The records as an Arrow table (schema ``SCHEMA``)."""
    cols: dict[str, list[Any]] = {name: [getattr(r, name) for r in records] for name in _PLAIN}
    cols["token_times_us"] = [[round(t * _US) for t in r.token_times] for r in records]
    cols["server_timing"] = [
        json.dumps(r.server_timing) if r.server_timing else None for r in records
    ]
    return pa.table(cols, schema=SCHEMA)


def write_records(path: Path, records: Sequence[RequestRecord]) -> None:
    """Write ``records`` to the Parquet file ``path`` (zstd, delta-encoded token times)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        records_table(records),
        path,
        compression="zstd",
        use_dictionary=[c for c in SCHEMA.names if c != "token_times_us"],
        column_encoding={"token_times_us": "DELTA_BINARY_PACKED"},
    )


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as indented JSON (NaN written as ``null``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_summary(path: Path) -> dict[str, Any]:
    """Read a ``summary.json`` (a directory holding one is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read summary {path}: {exc}") from exc
    if not isinstance(data, dict) or "users" not in data:
        raise ConfigError(f"{path} is not a bench summary (no 'users' key)")
    return data


def write_run(out_dir: Path, records: Sequence[RequestRecord], summary: dict[str, Any]) -> None:
    """Write ``out_dir/records.parquet`` and ``out_dir/summary.json``."""
    out_dir = Path(out_dir)
    write_records(out_dir / RECORDS_FILE, records)
    write_summary(out_dir / SUMMARY_FILE, summary)


def rep_records_file(repetition: int) -> str:
    """File name of one repetition's records when a sweep writes them one by one."""
    return f"records-rep{repetition}.parquet"


def read_records(path: Path) -> list[RequestRecord]:
    """Read the records of a Parquet file; for a directory, of its ``records.parquet`` and
    every ``records-rep<K>.parquet`` (in repetition order)."""
    path = Path(path)
    if path.is_dir():
        files = [path / RECORDS_FILE] if (path / RECORDS_FILE).is_file() else []
        reps = path.glob("records-rep*.parquet")
        files += sorted(reps, key=lambda p: int(p.stem.removeprefix("records-rep") or 0))
        if not files:
            raise ConfigError(f"no records.parquet or records-rep*.parquet in {path}")
        return [r for f in files for r in _read_file(f)]
    return _read_file(path)


def _read_file(path: Path) -> list[RequestRecord]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read records {path}: {exc}") from exc
    out = []
    for row in rows:
        times = row.pop("token_times_us") or []
        timing = row.pop("server_timing")
        out.append(
            RequestRecord(
                **{k: row[k] for k in _PLAIN},
                token_times=[t / _US for t in times],
                server_timing=json.loads(timing) if timing else {},
            )
        )
    return out
