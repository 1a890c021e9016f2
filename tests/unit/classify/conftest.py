"""Shared fixtures for the classifier tests: a synthetic, varied, labelled corpus and models."""

from __future__ import annotations

from pathlib import Path

import pytest
from classify_helpers import make_corpus

from expert_router.classify.artifact import save_artifact
from expert_router.classify.model import Classifier, load
from expert_router.classify.training import Fitted, TrainConfig, fit, fold


@pytest.fixture(scope="session")
def corpus() -> tuple[list[str], list[str]]:
    return make_corpus(2000, seed=1)


def _train(texts: list[str], config: TrainConfig, out: Path) -> tuple[Fitted, Classifier]:
    fitted = fit(texts, config)
    vocab = fitted.vectorizer.get_feature_names_out().tolist()
    manifest = {
        "parameters": {**config.__dict__},
        "corpus": {"files": ["synthetic"], "documents": len(texts), "skipped": 0},
        "training": {"cluster_sizes_nearest": [1] * config.clusters},
        "vocabulary": vocab,
    }
    save_artifact(out, manifest, fold(fitted, config))
    return fitted, load(out)


@pytest.fixture(scope="session")
def l2_model(
    corpus: tuple[list[str], list[str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Fitted, Classifier, Path]:
    out = tmp_path_factory.mktemp("l2_model")
    config = TrainConfig(clusters=5, scaler="l2", dims=20, seed=3)
    fitted, clf = _train(corpus[0], config, out)
    return fitted, clf, out


@pytest.fixture(scope="session")
def standard_model(
    corpus: tuple[list[str], list[str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Fitted, Classifier, Path]:
    out = tmp_path_factory.mktemp("standard_model")
    config = TrainConfig(clusters=5, scaler="standard", dims=20, seed=4, dtype="float64")
    fitted, clf = _train(corpus[0], config, out)
    return fitted, clf, out
