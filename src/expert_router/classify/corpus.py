"""Streaming corpus readers: JSONL (optionally .gz), CSV, Parquet, plain text, directories.

Records are yielded one at a time so 100k+ document corpora never sit in memory as text.
A bad record (invalid UTF-8 or JSON, missing or non-string text field) is reported with file
and line number and skipped and counted, or raises :class:`CorpusError` when ``strict``.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from expert_router.errors import CorpusError

MAX_REPORTED = 20


@dataclass
class Record:
    """One document: its text, every field of its source row, and where it came from."""

    text: str
    fields: dict[str, Any]
    source: str
    line: int


@dataclass
class ReadStats:
    """What reading a corpus saw: files, documents kept, records skipped and why."""

    files: list[str] = field(default_factory=list)
    documents: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    """Skipped records per reason (``invalid JSON``, ``no field 'text'``, ...)."""
    first: dict[str, str] = field(default_factory=dict)
    """Where each reason was first seen (``file:line``)."""
    fields_seen: list[str] = field(default_factory=list)
    """The fields of the first record that lacked the text field (to name the right one)."""

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for manifests and reports."""
        return {
            "files": [Path(f).name for f in self.files],
            "documents": self.documents,
            "skipped": self.skipped,
            "skipped_by_reason": dict(self.reasons),
            "problems": self.problems[:MAX_REPORTED],
        }

    def describe(self, text_field: str = "text") -> str:
        """What was read, in words: documents, and lines skipped by reason with the first
        place each happened; names ``--text-field`` when records lacked the field.

        >>> s = ReadStats(files=["a.jsonl"], documents=2, skipped=1)
        >>> s.reasons, s.first = {"invalid JSON": 1}, {"invalid JSON": "a.jsonl:3"}
        >>> s.describe()
        'read 2 documents from a.jsonl; skipped 1 line: invalid JSON x 1 (first at a.jsonl:3)'
        """
        files = ", ".join(Path(f).name for f in self.files) or "nothing"
        text = f"read {self.documents} document{_s(self.documents)} from {files}"
        if not self.skipped:
            return text
        parts = [f"{r} x {n} (first at {self.first.get(r, '?')})" for r, n in self.reasons.items()]
        text += f"; skipped {self.skipped} line{_s(self.skipped)}: {', '.join(parts)}"
        if self.fields_seen:
            shown = ", ".join(self.fields_seen[:8])
            text += f"; records have the fields {shown}: name the text with --text-field"
        elif any(r.startswith("no field") for r in self.reasons):
            text += f" (--text-field names the field to read instead of {text_field!r})"
        return text


def _s(n: int) -> str:
    return "" if n == 1 else "s"


class CorpusReader:
    """Iterate the records of one or more corpus paths, keeping :class:`ReadStats`.

    Formats by suffix: ``.jsonl``/``.json``/``.ndjson`` (optionally ``.gz``): one JSON object
    per line; ``.csv`` (optionally ``.gz``): header row names the fields; ``.parquet``: rows
    (``line`` is the 1-based row number); ``.txt`` or anything else: one document per non-blank
    line. A directory: every regular file inside (sorted, recursive) is ONE document.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        text_field: str = "text",
        strict: bool = False,
        on_problem: Callable[[str], None] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.text_field = text_field
        self.strict = strict
        self.on_problem = on_problem
        self.on_progress = on_progress
        self.stats = ReadStats()
        for p in self.paths:
            if not p.exists():
                raise CorpusError(f"{p}: no such file or directory")

    def __iter__(self) -> Iterator[Record]:
        for path in self.paths:
            self.stats.files.append(str(path))
            if path.is_dir():
                yield from self._read_dir(path)
            else:
                yield from self._read_file(path)

    def texts(self) -> Iterator[str]:
        """Only the texts (what the vectorizer consumes)."""
        return (r.text for r in self)

    def _problem(self, source: Path | str, line: int, message: str, reason: str) -> None:
        text = f"{source}:{line}: {message}"
        if self.strict:
            raise CorpusError(text)
        self.stats.skipped += 1
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
        self.stats.first.setdefault(reason, f"{Path(source).name}:{line}")
        if len(self.stats.problems) < MAX_REPORTED:
            self.stats.problems.append(text)
        if self.on_problem is not None:
            self.on_problem(text)

    def _emit(self, record: Record) -> Record:
        self.stats.documents += 1
        return record

    def _check(self, obj: Any, path: Path, line: int) -> Record | None:
        if not isinstance(obj, dict):
            self._problem(path, line, "record is not an object", "not a JSON object")
            return None
        text = obj.get(self.text_field)
        if not isinstance(text, str):
            field = f"field {self.text_field!r}"
            absent = self.text_field not in obj
            if absent:
                keys = ", ".join(map(str, list(obj)[:8])) or "none"
                what, reason = (
                    f"missing (its fields: {keys}; --text-field names one)",
                    f"no {field}",
                )
                self.stats.fields_seen = self.stats.fields_seen or [str(k) for k in obj]
            else:
                what = "null" if text is None else f"not a string ({type(text).__name__})"
                reason = f"{field} {what.split(' (')[0]}"
            self._problem(path, line, f"text field {self.text_field!r} is {what}", reason)
            return None
        return self._emit(Record(text, obj, str(path), line))

    def _progress(self, path: Path, raw: IO[bytes], size: int) -> None:
        if self.on_progress is not None:
            self.on_progress(str(path), raw.tell(), size)

    def _lines(self, path: Path) -> Iterator[tuple[int, str | None]]:
        """(line number, decoded line or None when it is not valid UTF-8)."""
        size = path.stat().st_size
        with open(path, "rb") as raw:
            stream: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if _suffix(path)[1] else raw
            try:
                for number, data in enumerate(stream, start=1):
                    try:
                        yield number, data.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._problem(
                            path,
                            number,
                            f"invalid UTF-8 ({exc.reason} at byte {exc.start})",
                            "invalid UTF-8",
                        )
                        yield number, None
                    if number % 2000 == 0:
                        self._progress(path, raw, size)
            except (OSError, EOFError) as exc:
                raise CorpusError(f"{path}: cannot read: {exc}") from exc
            self._progress(path, raw, size)

    def _read_file(self, path: Path) -> Iterator[Record]:
        kind = _suffix(path)[0]
        if kind == "parquet":
            yield from self._read_parquet(path)
            return
        if kind == "csv":
            yield from self._read_csv(path)
            return
        for number, line in self._lines(path):
            if line is None or not line.strip():
                continue
            if kind == "jsonl":
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    self._problem(path, number, f"invalid JSON ({exc.msg})", "invalid JSON")
                    continue
                record = self._check(obj, path, number)
                if record is not None:
                    yield record
            else:
                yield self._emit(
                    Record(line.rstrip("\r\n"), {"text": line.rstrip("\r\n")}, str(path), number)
                )

    def _read_csv(self, path: Path) -> Iterator[Record]:
        good = (line for _, line in self._lines(path) if line is not None)
        reader = csv.DictReader(good)
        try:
            for row in reader:
                record = self._check(row, path, reader.line_num)
                if record is not None:
                    yield record
        except csv.Error as exc:
            raise CorpusError(f"{path}:{reader.line_num}: invalid CSV ({exc})") from exc

    def _read_parquet(self, path: Path) -> Iterator[Record]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            row = 0
            for batch in pf.iter_batches(batch_size=4096):
                for obj in batch.to_pylist():
                    row += 1
                    record = self._check(obj, path, row)
                    if record is not None:
                        yield record
                if self.on_progress is not None:
                    self.on_progress(str(path), row, pf.metadata.num_rows)
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{path}: cannot read Parquet: {exc}") from exc

    def _read_dir(self, root: Path) -> Iterator[Record]:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                text = file.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                why = f"invalid UTF-8 ({exc.reason} at byte {exc.start})"
                self._problem(file, 1, why, "invalid UTF-8")
                continue
            if text.strip():
                yield self._emit(Record(text, {"text": text, "path": str(file)}, str(file), 1))


def _suffix(path: Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".json", ".ndjson"):
        return "jsonl", gz
    if last == ".csv":
        return "csv", gz
    if last in (".parquet", ".pq"):
        return "parquet", False
    return "text", gz
