"""The folded fast path routes exactly like the fitted scikit-learn pipeline."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
from classify_helpers import TOPICS, make_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from expert_router.classify import Classifier, Prediction, load
from expert_router.classify.model import _folded
from expert_router.classify.training import Fitted

Model = tuple[Fitted, Classifier, Path]


@functools.cache
def bundled() -> Classifier:
    return load()


def sklearn_distances(fitted: Fitted, texts: list[str]) -> np.ndarray:
    """Squared distances from the scikit-learn pipeline: tfidf -> svd -> scaler -> centroids."""
    z = fitted.scaler.transform(fitted.svd.transform(fitted.vectorizer.transform(texts)))
    d: np.ndarray = ((z[:, None, :] - fitted.centroids[None, :, :]) ** 2).sum(axis=2)
    return d


def check_same_clusters(model: Model, texts: list[str], tol: float) -> None:
    fitted, clf, _ = model
    ref = sklearn_distances(fitted, texts)
    ref_cluster = ref.argmin(axis=1)
    part = np.sort(ref, axis=1)
    margin = part[:, 1] - part[:, 0]
    many = clf.predict_many(texts)
    single = [clf.predict(t) for t in texts]
    for i, (a, b) in enumerate(zip(single, many, strict=True)):
        assert a.cluster == b.cluster and a.reason == b.reason
        np.testing.assert_allclose(a.distances, b.distances, atol=1e-5)
        np.testing.assert_allclose(a.distances, ref[i], atol=max(tol, 1e-9) * 10)
        if margin[i] > tol:
            assert a.cluster == ref_cluster[i], (i, texts[i][:80])
    # Near-ties (margin <= tol) must be rare; with float64 weights they agree exactly.
    agree = np.mean([p.cluster == c for p, c in zip(single, ref_cluster, strict=True)])
    assert agree >= 0.999


def test_fast_path_matches_sklearn_l2(l2_model: Model, corpus: tuple[list[str], list[str]]) -> None:
    unseen, labels = make_corpus(1500, seed=99)
    # Documents half from one topic, half from another sit near cluster boundaries.
    mixed = [
        a[: len(a) // 2] + " " + b[len(b) // 2 :]
        for a, b, la, lb in zip(unseen, unseen[1:], labels, labels[1:], strict=False)
        if la != lb
    ][:500]
    texts = corpus[0] + unseen + mixed + ["", "the and 42", "???"]
    check_same_clusters(l2_model, texts, tol=1e-5)


def test_fast_path_matches_sklearn_standard(
    standard_model: Model, corpus: tuple[list[str], list[str]]
) -> None:
    unseen, _ = make_corpus(500, seed=98)
    check_same_clusters(standard_model, corpus[0][:1500] + unseen + ["", "of 1999"], tol=1e-9)


def test_training_clusters_are_balanced(l2_model: Model) -> None:
    fitted, _, _ = l2_model
    assert np.bincount(fitted.labels).tolist() == [400] * 5


def test_prediction_fields(l2_model: Model) -> None:
    _, clf, _ = l2_model
    p = clf.predict("goal team match league season coach player")
    assert isinstance(p, Prediction)
    assert dataclasses.is_dataclass(p) and not hasattr(p, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cluster = 1  # type: ignore[misc]
    assert p.reason == "nearest"
    assert p.ranked[0] == p.cluster and sorted(p.ranked) == list(range(clf.n_clusters))
    assert np.all(np.diff(p.distances[list(p.ranked)]) >= 0)
    assert p.scores.sum() == pytest.approx(1.0)
    expected = np.exp(-p.distances / 0.1)
    np.testing.assert_allclose(p.scores, expected / expected.sum())
    assert int(np.argmax(p.scores)) == p.cluster


def test_defined_fallback_route(l2_model: Model) -> None:
    fitted, clf, _ = l2_model
    empty = clf.predict("")
    assert empty.reason == "empty"
    assert clf.predict("   ,;!? x").reason == "empty"
    unknown = clf.predict("the of and 1234 zzzzqqq")
    assert unknown.reason == "no_known_terms"
    # The route is the centroid nearest to an all-zero TF-IDF row, as scikit-learn does.
    ref = sklearn_distances(fitted, [""])[0]
    assert empty.cluster == unknown.cluster == int(ref.argmin())
    np.testing.assert_allclose(unknown.distances, ref)
    assert [p.reason for p in clf.predict_many(["", "the 12", "goal"])] == [
        "empty",
        "no_known_terms",
        "nearest",
    ]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_predict_never_raises(text: str) -> None:
    clf = bundled()
    p = clf.predict(text)
    assert 0 <= p.cluster < clf.n_clusters
    assert np.isfinite(p.scores).all() and np.isfinite(p.distances).all()
    assert clf.predict_many([text, text])[1].cluster == p.cluster


def test_bundled_model() -> None:
    clf = load()
    assert clf.n_clusters == 8
    assert clf.manifest["parameters"]["clusters"] == 8
    assert clf.manifest["corpus"]["documents"] > 2000
    terms = clf.top_terms(5)
    assert len(terms) == 8 and all(len(t) == 5 for t in terms)
    assert clf.predict_many([]) == []
    sport = clf.predict("The striker scored twice as the team won the league season game")
    food = clf.predict("Add the flour, butter and sugar, then bake the recipe for dinner")
    assert sport.cluster != food.cluster


def test_top_terms_name_the_topics(l2_model: Model) -> None:
    _, clf, _ = l2_model
    tops = clf.top_terms(5)
    topic_sets = [set(words.split()) for words in TOPICS.values()]
    # Every cluster's top terms come mostly from one topic, and all topics are covered.
    owners = []
    for terms in tops:
        hits = [len(set(terms) & s) for s in topic_sets]
        assert max(hits) >= 3, terms
        owners.append(int(np.argmax(hits)))
    assert sorted(owners) == list(range(5))


def test_compiled_step_and_numpy_agree(l2_model: Model) -> None:
    """``predict``'s one C call (``_native``, where built) and numpy's three give the same
    distances to rounding, on short, long and repeated-term prompts."""
    _, clf, _ = l2_model
    if clf._fold is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    unseen, _ = make_corpus(300, seed=97)
    texts = [*unseen, " ".join(unseen[:40]), "goal goal goal goal", "goal"]
    compiled = [clf.predict(t) for t in texts]
    clf._fold = None
    try:
        plain = [clf.predict(t) for t in texts]
    finally:
        clf._fold = _folded
    for a, b in zip(compiled, plain, strict=True):
        assert a.cluster == b.cluster and a.reason == b.reason
        np.testing.assert_allclose(a.dists, b.dists, rtol=1e-12, atol=1e-12)


def test_compiled_step_refuses_bad_arguments() -> None:
    """The C step checks what it is given: errors, never a read outside the rows."""
    if _folded is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)  # 3 terms, dims 2 + 2 centroids
    assert _folded(rows, [1, 1], 2, (1.0, 2.0)) is not None
    assert _folded(np.zeros((3, 4)), [0], 2, (1.0, 2.0)) is None  # |z| = 0: numpy's path
    with pytest.raises(IndexError):
        _folded(rows, [3], 2, (1.0, 2.0))
    with pytest.raises(IndexError):
        _folded(rows, [-1], 2, (1.0, 2.0))
    with pytest.raises(OverflowError):
        _folded(rows, [1 << 70], 2, (1.0, 2.0))
    with pytest.raises(TypeError):
        _folded(rows, ["a"], 2, (1.0, 2.0))  # type: ignore[list-item]  # a wrong type
    with pytest.raises(TypeError):
        _folded(rows, (1,), 2, (1.0, 2.0))  # type: ignore[arg-type]  # a wrong type
    with pytest.raises(TypeError):
        _folded(rows, [1], 2, (1.0, "x"))  # type: ignore[arg-type]  # a wrong type
    for bad_rows, dims in [
        (rows.astype(np.int32), 2),  # not floats
        (rows[:, ::2], 0),  # not contiguous
        (rows.ravel(), 2),  # not 2-D
        (rows, 3),  # dims + K is not the width
    ]:
        with pytest.raises((ValueError, BufferError)):
            _folded(bad_rows, [0], dims, (1.0, 2.0))
    with pytest.raises(TypeError):
        _folded(rows, [0], 2)  # type: ignore[call-arg]
    wide = np.ones((2, 600), dtype=np.float64)  # past the stack buffer: the heap one
    out = _folded(wide, [0, 1], 598, (1.0, 1.0))
    assert out is not None and len(out) == 2
