"""Fitting a classifier: TF-IDF -> TruncatedSVD -> scaler -> balanced k-means -> artifact.

scikit-learn does the fitting (with our analyzer); the result is folded into the arrays of
:mod:`expert_router.classify.model` and written with :mod:`expert_router.classify.artifact`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from expert_router import __version__
from expert_router.classify.analyzer import analyze
from expert_router.classify.balanced_kmeans import balanced_kmeans
from expert_router.classify.model import DEFAULT_TEMPERATURE

SCALERS = ("l2", "standard")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of training; recorded verbatim in the manifest's ``parameters``."""

    clusters: int = 8
    scaler: str = "l2"
    seed: int = 0
    dims: int = 100
    min_df: int = 2
    max_df: float = 1.0
    max_iter: int = 20
    batch_size: int = 50_000
    temperature: float = DEFAULT_TEMPERATURE
    dtype: str = "float32"


class TooLittleData(ValueError):
    """The corpus cannot be fitted with this configuration: ``documents`` and ``terms`` say
    what it gave, ``short`` every setting it falls short of, in order: ``documents`` (none at
    all), ``terms`` (none kept at min_df 1), ``min_df``, ``clusters``, ``dims``."""

    def __init__(self, documents: int, terms: int, short: list[str]) -> None:
        super().__init__(f"{documents} documents with {terms} terms fall short of: {short}")
        self.documents, self.terms, self.short = documents, terms, short


def check_size(documents: int, terms: int, config: TrainConfig) -> None:
    """``TooLittleData`` when ``documents`` with ``terms`` distinct terms cannot be fitted:
    no terms kept, fewer documents than clusters, or fewer documents or terms than SVD
    dimensions."""
    if documents == 0:
        raise TooLittleData(0, 0, ["documents"])
    short = []
    if terms == 0:
        short.append("min_df" if config.min_df > 1 else "terms")
    if documents < config.clusters:
        short.append("clusters")
    if documents < config.dims or terms <= config.dims:
        short.append("dims")
    if short:
        raise TooLittleData(documents, terms, short)


@dataclass
class Fitted:
    """The scikit-learn pieces and the k-means result, before folding (used by tests)."""

    vectorizer: Any
    svd: Any
    scaler: Any
    centroids: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]
    n_iter: int
    features: npt.NDArray[np.float64]


def make_vectorizer(config: TrainConfig) -> Any:
    """c-BTM's TfidfVectorizer: our analyzer, smooth idf, l2 norm, linear tf."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer=analyze, min_df=config.min_df, max_df=config.max_df, dtype=np.float64
    )


def fit(
    texts: Iterable[str],
    config: TrainConfig,
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> Fitted:
    """Fit the whole pipeline on ``texts`` (consumed once, streaming)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import Normalizer, StandardScaler

    if config.scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {SCALERS}")
    vectorizer = make_vectorizer(config)
    t0 = time.perf_counter()
    read = [0]

    def counted() -> Iterable[str]:
        for text in texts:
            read[0] += 1
            yield text

    try:
        tfidf = vectorizer.fit_transform(counted())
    except ValueError:  # scikit-learn: empty vocabulary, or min_df above the document count
        check_size(read[0], 0, config)
        raise
    n_docs, n_terms = tfidf.shape
    check_size(n_docs, n_terms, config)
    log(f"tf-idf: {n_docs} documents x {n_terms} terms ({time.perf_counter() - t0:.1f} s)")
    svd = TruncatedSVD(n_components=config.dims, random_state=config.seed)
    t0 = time.perf_counter()
    reduced = svd.fit_transform(tfidf)
    log(f"svd: {config.dims} dimensions ({time.perf_counter() - t0:.1f} s)")
    scaler = Normalizer() if config.scaler == "l2" else StandardScaler()
    features = np.asarray(scaler.fit_transform(reduced), dtype=np.float64)
    t0 = time.perf_counter()
    result = balanced_kmeans(
        features,
        config.clusters,
        seed=config.seed,
        max_iter=config.max_iter,
        batch_size=config.batch_size,
        on_iter=lambda i, f: log(f"k-means pass {i}: {f:.2%} of documents changed cluster"),
    )
    log(f"balanced k-means: {result.n_iter} passes ({time.perf_counter() - t0:.1f} s)")
    return Fitted(vectorizer, svd, scaler, result.centroids, result.labels, result.n_iter, features)


def fold(fitted: Fitted, config: TrainConfig) -> dict[str, npt.NDArray[Any]]:
    """The inference arrays: weights = idf x components^T (/ scale), offset, scale, centroids."""
    idf = np.asarray(fitted.vectorizer.idf_, dtype=np.float64)
    weights = idf[:, None] * fitted.svd.components_.T
    dims = weights.shape[1]
    if config.scaler == "standard":
        scale = np.asarray(fitted.scaler.scale_, dtype=np.float64)
        offset = np.asarray(fitted.scaler.mean_, dtype=np.float64) / scale
        weights = weights / scale
    else:
        scale, offset = np.ones(dims), np.zeros(dims)
    return {
        "weights": weights.astype(config.dtype),
        "idf": idf,
        "centroids": fitted.centroids.astype(np.float64),
        "offset": offset,
        "scale": scale,
    }


def train(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    corpus: dict[str, Any] | None = None,
    command: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Fit on ``texts`` and write the artifact to ``out_dir``; returns the directory."""
    from expert_router.classify.artifact import save_artifact

    t0 = time.perf_counter()
    fitted = fit(texts, config, log=log)
    seconds = time.perf_counter() - t0
    arrays = fold(fitted, config)
    vocab = fitted.vectorizer.get_feature_names_out().tolist()
    train_sizes = np.bincount(fitted.labels, minlength=config.clusters)
    d = (
        (fitted.features**2).sum(axis=1, keepdims=True)
        + (fitted.centroids**2).sum(axis=1)
        - 2.0 * fitted.features @ fitted.centroids.T
    )
    nearest_sizes = np.bincount(d.argmin(axis=1), minlength=config.clusters)
    manifest = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expert_router_version": __version__,
        "command": command,
        "parameters": {
            **asdict(config),
            "analyzer": "sklearn (?u)\\b\\w\\w+\\b on str.lower(); digit-initial tokens "
            "and sklearn ENGLISH_STOP_WORDS dropped",
            "tfidf": {"smooth_idf": True, "norm": "l2", "sublinear_tf": False},
        },
        "corpus": corpus or {},
        "training": {
            "seconds": round(seconds, 2),
            "kmeans_passes": fitted.n_iter,
            "explained_variance": round(float(fitted.svd.explained_variance_ratio_.sum()), 4),
            "cluster_sizes_balanced": train_sizes.tolist(),
            "cluster_sizes_nearest": nearest_sizes.tolist(),
        },
        "vocabulary": vocab,
    }
    return save_artifact(out_dir, manifest, arrays)
