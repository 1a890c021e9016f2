"""The fast inference path: a trained classifier folded into a few numpy arrays.

``weights`` (vocabulary x D) already holds idf x SVD components (divided by the scaler's scale
for ``standard``), so a prompt's feature vector is a count-weighted sum of the rows of its
in-vocabulary terms, normalised; the cluster is the nearest centroid (squared Euclidean).
With the ``l2`` scaler each row carries its K products with the centroids too (``_rows``,
vocabulary x (D + K)): one sum of rows gives the vector and its cross terms, so ``predict``
makes one call of the compiled ``_native.distances`` (three numpy calls where it is not built).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from expert_router.classify.artifact import read_array, read_manifest
from expert_router.classify.terms import TermCounter, has_tokens
from expert_router.errors import ArtifactError

_Distances = Callable[
    [npt.NDArray[Any], list[int], int, tuple[float, ...]], tuple[float, ...] | None
]
_folded: _Distances | None
try:
    from expert_router.classify._native import distances as _folded
except ImportError:  # not built (no C compiler at install): numpy does the same arithmetic
    _folded = None

FloatArray = npt.NDArray[np.float64]
DEFAULT_TEMPERATURE = 0.1
_sum_rows = np.add.reduce


@dataclass(frozen=True, slots=True, eq=False)
class Prediction:
    """Where one prompt goes: ``cluster`` (nearest centroid) and why.

    ``dists`` are squared Euclidean distances to every centroid (``distances`` as an array);
    ``scores`` are softmax(-distances / T), ``ranked`` lists clusters nearest first (both
    computed when asked: routing needs only ``cluster``), and ``reason`` is ``"nearest"``, or
    ``"empty"`` (no token at all) / ``"no_known_terms"`` (tokens, none in the vocabulary):
    both then take the documented fallback route, the centroid nearest to the feature vector
    of a document without terms.
    """

    cluster: int
    dists: tuple[float, ...]
    reason: str
    temperature: float = DEFAULT_TEMPERATURE

    @property
    def distances(self) -> FloatArray:
        return np.array(self.dists, dtype=np.float64)

    @property
    def ranked(self) -> tuple[int, ...]:
        d = self.dists
        return tuple(sorted(range(len(d)), key=d.__getitem__))

    @property
    def scores(self) -> FloatArray:
        d = self.distances
        e = np.exp((d.min() - d) / self.temperature)
        out: FloatArray = e / e.sum()
        return out


class Classifier:
    """A loaded, read-only prompt classifier; thread-safe and cheap to call inline."""

    def __init__(self, manifest: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        self.manifest = manifest
        params = manifest["parameters"]
        self.scaler: str = params["scaler"]
        self.temperature: float = float(params.get("temperature", DEFAULT_TEMPERATURE))
        vocab: list[str] = manifest["vocabulary"]
        self.vocabulary: dict[str, int] = {t: i for i, t in enumerate(vocab)}
        self._terms = vocab
        self._ids_of = TermCounter(self.vocabulary).ids
        weights = arrays["weights"]
        self._idf = arrays["idf"].astype(np.float64)
        self._centroids = arrays["centroids"].astype(np.float64)
        self._offset = arrays["offset"].astype(np.float64)
        self._scale = arrays["scale"].astype(np.float64)
        self.n_clusters: int = int(self._centroids.shape[0])
        self._dims: int = int(weights.shape[1])
        self._csq = (self._centroids**2).sum(axis=1)
        self._csq1 = tuple((self._csq + 1.0).tolist())  # |c|^2 + |z|^2 for a unit z
        self._ct2 = np.ascontiguousarray(-2.0 * self._centroids.T)
        if self.scaler == "l2":  # each row's cross terms -2 w.c, in the weights' dtype
            cross = (weights.astype(np.float64) @ self._ct2).astype(weights.dtype)
            self._rows = np.ascontiguousarray(np.hstack([weights, cross]))
        else:
            self._rows = np.ascontiguousarray(weights)
        # The l2 arithmetic in one C call where built (None: numpy's three calls).
        self._fold = _folded if self.scaler == "l2" else None
        self._weights = self._rows[:, : self._dims]  # a view: the rows' first D columns
        # The defined route for a prompt without known terms: its TF-IDF row is all zeros,
        # so it goes where the scikit-learn pipeline would send an empty document.
        zero = np.zeros(self._centroids.shape[1]) if self.scaler == "l2" else -self._offset
        self._fallback_d = tuple(((zero - self._centroids) ** 2).sum(axis=1).tolist())

    def _prediction(self, d: tuple[float, ...], reason: str) -> Prediction:
        return Prediction(d.index(min(d)), d, reason, self.temperature)  # the first nearest

    def _fallback(self, text: str) -> str:
        return "no_known_terms" if has_tokens(text) else "empty"

    def predict(self, text: str) -> Prediction:
        """Classify one prompt; never raises on a ``str``.

        >>> clf = load()
        >>> p = clf.predict("The goalkeeper saved a penalty in the final minute.")
        >>> 0 <= p.cluster < clf.n_clusters and p.reason
        'nearest'
        """
        ids = self._ids_of(text)
        if not ids:
            return self._prediction(self._fallback_d, self._fallback(text))
        if self._fold is not None:  # one C call: ~10x cheaper than numpy's, cold
            folded = self._fold(self._rows, ids, self._dims, self._csq1)
            if folded is not None:
                return self._prediction(folded, "nearest")
        # Few numpy calls: on an idle machine each costs ~10x its hot time (cold caches);
        # the ufunc's own reduce skips ndarray.sum's Python wrapper (~8 us cold).
        summed = _sum_rows(self._rows.take(ids, axis=0), axis=0, dtype=np.float64)
        if self.scaler == "l2":
            values = summed.tolist()
            dims = self._dims
            norm = math.hypot(*values[:dims])
            if norm > 0.0:
                inv = 1.0 / norm
                cross = values[dims:]
                d = tuple([max(c + x * inv, 0.0) for c, x in zip(self._csq1, cross, strict=True)])
                return self._prediction(d, "nearest")
            z = summed[:dims]
        else:
            z = summed
            unique, counts = np.unique(ids, return_counts=True)
            tfidf = counts * self._idf.take(unique)
            z = z / np.sqrt(tfidf @ tfidf) - self._offset
        dz = np.maximum(z @ z + self._csq + z @ self._ct2, 0.0)
        return self._prediction(tuple(dz.tolist()), "nearest")

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify many prompts at once (one sparse product); same results as ``predict``."""
        from scipy import sparse

        n = len(texts)
        if n == 0:
            return []
        ids_of = self._ids_of
        parts = [ids_of(text) for text in texts]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.fromiter(chain.from_iterable(parts), dtype=np.intp, count=int(indptr[-1]))
        vocab_size = self._rows.shape[0]
        ones = np.ones(indices.size, dtype=self._rows.dtype)
        counts = sparse.csr_matrix((ones, indices, indptr), shape=(n, vocab_size))
        summed = np.asarray(counts @ self._rows, dtype=np.float64)
        dims = self._dims
        z = summed[:, :dims]
        if self.scaler == "l2":  # as predict: |z|^2 = 1 and the rows' own cross terms
            norm = np.sqrt((z * z).sum(axis=1, keepdims=True))
            inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
            d = np.maximum(np.where(norm > 0, 1.0, 0.0) + self._csq + summed[:, dims:] * inv, 0.0)
        else:
            counts.sum_duplicates()
            tfidf = counts.multiply(self._idf[None, :]).tocsr()
            norm = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)))
            z = np.divide(z, norm, out=np.zeros_like(z), where=norm > 0) - self._offset
            d = np.maximum((z * z).sum(axis=1, keepdims=True) + self._csq + z @ self._ct2, 0.0)
        reasons = ["nearest"] * n
        for row in np.flatnonzero(lengths == 0).tolist():
            d[row] = self._fallback_d
            reasons[row] = self._fallback(texts[row])
        return [self._prediction(tuple(row), reasons[r]) for r, row in enumerate(d.tolist())]

    # -- inspection -----------------------------------------------------------------------
    def term_weights(self) -> FloatArray:
        """Each centroid mapped back to term space (K x vocabulary), for naming clusters."""
        comps_t = self._weights.astype(np.float64) / self._idf[:, None]
        centroids = self._centroids
        if self.scaler == "standard":
            comps_t = comps_t * self._scale
            centroids = centroids * self._scale + self._offset * self._scale
        out: FloatArray = centroids @ comps_t.T
        return out

    def top_terms(self, n: int) -> list[list[str]]:
        """The ``n`` highest-weighted terms of every cluster, strongest first."""
        weights = self.term_weights()
        n = max(0, min(n, weights.shape[1]))
        top = np.argsort(-weights, axis=1, kind="stable")[:, :n]
        return [[self._terms[i] for i in row] for row in top]


def default_model_dir() -> Path:
    """The bundled model shipped as package data."""
    return Path(str(resources.files("expert_router") / "data" / "default_model"))


def load(path: str | os.PathLike[str] | None = None) -> Classifier:
    """Load a classifier directory (the bundled model when ``path`` is None).

    Raises :class:`ArtifactError` naming the file when it is missing, corrupt, truncated or
    of another format version.
    """
    model_dir = Path(path) if path is not None else default_model_dir()
    manifest = read_manifest(model_dir)
    arrays = {
        name: read_array(model_dir, manifest, name)
        for name in ("weights", "idf", "centroids", "offset", "scale")
    }
    _validate(model_dir, manifest, arrays)
    return Classifier(manifest, arrays)


def _validate(
    model_dir: Path, manifest: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]
) -> None:
    """Cross-checks between manifest and arrays; raises ArtifactError naming the file."""
    mpath = model_dir / "manifest.json"
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            raise ArtifactError(
                f"{model_dir / (name + '.npy')}: expected floats, got {array.dtype}"
            )
    weights = arrays["weights"]
    if weights.ndim != 2 or weights.shape[1] < 1:
        raise ArtifactError(f"{model_dir / 'weights.npy'}: expected a vocabulary x dims matrix")
    vocab = manifest.get("vocabulary")
    if (
        not isinstance(vocab, list)
        or len(vocab) != weights.shape[0]
        or not all(isinstance(t, str) for t in vocab)
        or len(set(vocab)) != len(vocab)
    ):
        raise ArtifactError(f"{mpath}: vocabulary does not match weights.npy")
    params = manifest.get("parameters")
    if not isinstance(params, dict) or params.get("scaler") not in ("l2", "standard"):
        raise ArtifactError(f"{mpath}: unknown or missing parameters.scaler")
    temperature = params.get("temperature", DEFAULT_TEMPERATURE)
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ArtifactError(f"{mpath}: parameters.temperature must be a positive number")
    dims = weights.shape[1]
    centroids = arrays["centroids"]
    if centroids.ndim != 2 or centroids.shape[1] != dims or centroids.shape[0] < 1:
        raise ArtifactError(f"{model_dir / 'centroids.npy'}: shape does not match weights.npy")
    for name in ("offset", "scale"):
        if arrays[name].shape != (dims,):
            raise ArtifactError(f"{model_dir / (name + '.npy')}: shape does not match weights.npy")
    if arrays["idf"].shape != (len(vocab),) or not (arrays["idf"] > 0).all():
        raise ArtifactError(f"{model_dir / 'idf.npy'}: idf must be positive, one per term")
