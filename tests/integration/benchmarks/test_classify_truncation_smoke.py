"""``benchmarks/classify_truncation.py`` reads a data folder of the shared layout and prints
every way of cutting for every cut (keeps it from rotting; its figures need ../shared/data)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from classify_truncation import SETS, WAYS, agreement, clusters, main  # noqa: E402
from expert_router.classify import load  # noqa: E402

pytestmark = [pytest.mark.integration]

TOPICS = (
    "The goalkeeper saved a penalty and the league match went to extra time. ",
    "Bake the sourdough bread with flour, water and salt in a hot oven. ",
    "The compiler reports a type error in the function's return value. ",
)


def _data(folder: Path) -> None:
    """Long texts that change topic halfway: their head and tail may route apart."""
    for i, name in enumerate(SETS):
        with gzip.open(folder / f"{name}.train.jsonl.gz", "wt", encoding="utf-8") as fh:
            for j in range(6):
                first, second = TOPICS[(i + j) % 3], TOPICS[(i + j + 1) % 3]
                text = first * 8 + second * 8
                fh.write(json.dumps({"id": f"{name}-{j}", "text": text}) + "\n")
            fh.write(json.dumps({"id": "short", "text": "too short to count"}) + "\n")


def test_it_prints_each_set_each_cut_and_each_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _data(tmp_path)
    main(["--data", str(tmp_path), "--min-chars", "500", "--cuts", "64,256"])
    out = capsys.readouterr().out
    assert out.startswith("12 texts of >= 500 characters")  # the short ones left out
    assert all(name in out for name in (*SETS, "all", *WAYS))
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("64 ", "256 "))]
    assert len(rows) == 2 * 3  # two cuts for each set and for all
    assert all(len(row) == 1 + len(WAYS) and all(v.endswith("%") for v in row[1:]) for row in rows)
    assert "whole text" in out


def test_a_cut_as_long_as_the_text_routes_as_the_text() -> None:
    texts = [TOPICS[0] * 8 + TOPICS[1] * 8, TOPICS[2] * 20]
    clf = load(None)
    whole = clusters(clf, texts)
    assert agreement(clf, texts, whole, WAYS["head"], 10_000) == 1.0
    assert agreement(clf, texts, whole, WAYS["tail"], 10_000) == 1.0
