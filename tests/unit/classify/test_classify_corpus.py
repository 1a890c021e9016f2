"""Corpus readers: every format, bad records reported with file and line, --strict."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from classify_helpers import write_jsonl

from expert_router.classify.corpus import CorpusReader
from expert_router.errors import CorpusError


def read(*paths: Path, **kw: object) -> tuple[list[str], CorpusReader]:
    reader = CorpusReader(paths, **kw)  # type: ignore[arg-type]
    return [r.text for r in reader], reader


def test_jsonl_and_gz(tmp_path: Path) -> None:
    rows = [{"text": f"doc {i}", "label": i % 2} for i in range(5)]
    plain = write_jsonl(tmp_path / "a.jsonl", rows)
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    texts, reader = read(plain, gz)
    assert texts == [r["text"] for r in rows] * 2
    assert reader.stats.documents == 10 and reader.stats.skipped == 0
    assert reader.stats.summary()["files"] == ["a.jsonl", "b.jsonl.gz"]


def test_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"text": "good one"}\n'
        b"{not json\n"
        b'{"body": "no text field"}\n'
        b'{"text": "bad \xff utf8"}\n'
        b"\n"
        b'{"text": 42}\n'
        b"[1, 2]\n"
        b'{"text": "good two"}\n'
    )
    problems: list[str] = []
    texts, reader = read(path, on_problem=problems.append)
    assert texts == ["good one", "good two"]
    assert reader.stats.skipped == 5
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (2, 3, 4, 6, 7)]
    assert "invalid JSON" in problems[0] and "'text' is missing" in problems[1]
    assert "invalid UTF-8" in problems[2] and "not a string (int)" in problems[3]
    with pytest.raises(CorpusError, match=rf"{path.name}:2: invalid JSON"):
        read(path, strict=True)


def test_text_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"body": "x y"}, {"text": "ignored"}])
    texts, reader = read(path, text_field="body")
    assert texts == ["x y"] and reader.stats.skipped == 1


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "text"])
        w.writerow([1, "first, with comma"])
        w.writerow([2, "multi\nline"])
    texts, _ = read(path)
    assert texts == ["first, with comma", "multi\nline"]
    bad = tmp_path / "b.csv"
    bad.write_text("title\nno text column\n")
    with pytest.raises(CorpusError, match=r"b\.csv:2: text field 'text' is missing"):
        read(bad, strict=True)


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["one", None, "three"], "label": [0, 1, 2]}), path)
    texts, reader = read(path)
    assert texts == ["one", "three"]
    assert reader.stats.problems == [f"{path}:2: text field 'text' is null"]
    assert reader.stats.reasons == {"field 'text' null": 1}


def test_plain_text_and_directory(tmp_path: Path) -> None:
    txt = tmp_path / "lines.txt"
    txt.write_text("first line\n\n  \nsecond line\n")
    texts, _ = read(txt)
    assert texts == ["first line", "second line"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("whole\nfile b")
    (folder / "sub" / "a.txt").write_text("file a")
    (folder / "c.bin").write_bytes(b"\xff\xfe")
    texts, reader = read(folder)
    assert texts == ["whole\nfile b", "file a"]
    assert reader.stats.skipped == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        CorpusReader([tmp_path / "none.jsonl"])


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=r"x\.jsonl\.gz: cannot read"):
        read(path)
