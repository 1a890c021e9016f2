"""A corpus too small for the training flags is told which flags, and by how much, before
scikit-learn speaks; what was read (documents, lines skipped and why) comes with it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from expert_router.classify.corpus import CorpusReader
from expert_router.classify.training import TooLittleData, TrainConfig, check_size, fit
from expert_router.cli.train import advice

THREE = ["the cat sat on the mat", "dogs bark loudly at night", "python sorts lists quickly"]


@pytest.mark.parametrize(
    ("documents", "terms", "config", "short"),
    [
        (0, 0, TrainConfig(), ["documents"]),
        (3, 0, TrainConfig(), ["min_df", "clusters", "dims"]),
        (3, 0, TrainConfig(min_df=1, clusters=2, dims=2), ["terms", "dims"]),
        (3, 15, TrainConfig(min_df=1), ["clusters", "dims"]),
        (3, 15, TrainConfig(min_df=1, clusters=2), ["dims"]),
        (300, 50, TrainConfig(), ["dims"]),
    ],
)
def test_check_size_names_every_shortfall(
    documents: int, terms: int, config: TrainConfig, short: list[str]
) -> None:
    with pytest.raises(TooLittleData) as caught:
        check_size(documents, terms, config)
    assert caught.value.short == short


def test_check_size_passes_a_corpus_that_fits() -> None:
    check_size(300, 500, TrainConfig(dims=100, clusters=8))


def test_fit_on_three_documents_says_so_before_scikit_learn() -> None:
    with pytest.raises(TooLittleData) as caught:
        fit(iter(THREE), TrainConfig(min_df=1))
    assert (caught.value.documents, caught.value.short) == (3, ["clusters", "dims"])
    assert caught.value.terms > 0


def test_advice_names_the_flags_and_what_fits() -> None:
    args = argparse.Namespace(dims=100, clusters=8, min_df=1)
    text = advice(TooLittleData(3, 15, ["clusters", "dims"]), args)
    assert "--clusters 8 needs at least 8 documents: use 3 or fewer" in text
    assert "--dims 100" in text and "(these give 15)" in text and "lower it to 3" in text
    assert "min_df" not in text and "min-df" not in text  # not the cause here


def test_reader_counts_skipped_lines_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"title": "a"}), "not json", json.dumps({"text": "kept"}), "{"]
    path.write_text("\n".join(lines) + "\n")
    reader = CorpusReader([path])
    assert list(reader.texts()) == ["kept"]
    said = reader.stats.describe()
    assert said.startswith("read 1 document from c.jsonl; skipped 3 lines: ")
    assert "invalid JSON x 2 (first at c.jsonl:2)" in said
    assert "no field 'text' x 1 (first at c.jsonl:1)" in said
    assert "records have the fields title: name the text with --text-field" in said
