"""The auction assignment is optimal and balanced; balanced k-means is seeded and balanced."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from expert_router.classify.balanced_kmeans import auction_assign, balanced_kmeans, capacities


def test_capacities() -> None:
    assert capacities(10, 3).tolist() == [4, 3, 3]
    assert capacities(9, 3).tolist() == [3, 3, 3]
    assert capacities(2, 4).tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize(("n", "k", "seed"), [(60, 3, 0), (97, 5, 1), (200, 8, 2), (7, 7, 3)])
def test_auction_is_optimal(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    benefit = rng.normal(size=(n, k))
    caps = capacities(n, k)
    assign, _ = auction_assign(benefit, caps, eps=1e-9)
    assert np.bincount(assign, minlength=k).tolist() == caps.tolist()
    # Optimal value from the Hungarian method on the expanded (slot) problem.
    slots = np.repeat(benefit, caps, axis=1)
    rows, cols = linear_sum_assignment(-slots)
    optimum = slots[rows, cols].sum()
    assert benefit[np.arange(n), assign].sum() == pytest.approx(optimum, abs=n * 1e-9 + 1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_the_default_scaled_auction_is_exact_and_warm_starts(seed: int) -> None:
    """What training uses (no eps given): the Hungarian optimum, on the 400 x 8 problems
    where a single coarse auction fell short by 5-8 rows."""
    rng = np.random.default_rng(seed)
    x, c = rng.normal(size=(400, 20)), rng.normal(size=(8, 20))
    benefit = -((x[:, None, :] - c[None]) ** 2).sum(axis=2)
    caps = capacities(400, 8)
    assign, prices = auction_assign(benefit, caps)
    slots = np.repeat(benefit, caps, axis=1)
    rows, cols = linear_sum_assignment(-slots)
    gap = slots[rows, cols].sum() - benefit[np.arange(400), assign].sum()
    spread = benefit.max() - benefit.min()
    assert 0 <= gap <= 1e-9 * spread + 1e-9
    again, _ = auction_assign(benefit, caps, prices=prices)
    assert np.bincount(again, minlength=8).tolist() == caps.tolist()


def test_auction_rejects_bad_capacities() -> None:
    with pytest.raises(ValueError):
        auction_assign(np.zeros((4, 2)), np.array([1, 1]))


def _blobs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Deliberately unequal blobs: plain k-means would give unequal clusters.
    centers = rng.normal(scale=5.0, size=(4, 10))
    sizes = [400, 250, 200, 150]
    return np.vstack([c + rng.normal(size=(s, 10)) for c, s in zip(centers, sizes, strict=True)])


def test_balanced_kmeans_balances_and_is_seeded() -> None:
    x = _blobs(0)
    a = balanced_kmeans(x, 4, seed=7, max_iter=20)
    b = balanced_kmeans(x, 4, seed=7, max_iter=20)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.centroids, b.centroids)
    assert np.bincount(a.labels, minlength=4).tolist() == [250, 250, 250, 250]
    assert 1 <= a.n_iter <= 20


def test_mini_batches_stay_balanced() -> None:
    x = _blobs(1)
    res = balanced_kmeans(x, 4, seed=0, batch_size=300, max_iter=10)
    sizes = np.bincount(res.labels, minlength=4)
    assert sizes.max() - sizes.min() <= 4  # one per batch at most (4 batches)


def test_balanced_kmeans_recovers_equal_blobs() -> None:
    rng = np.random.default_rng(2)
    centers = rng.normal(scale=10.0, size=(3, 5))
    truth = np.repeat(np.arange(3), 100)
    x = centers[truth] + rng.normal(size=(300, 5))
    res = balanced_kmeans(x, 3, seed=1)
    # Same partition up to renaming of clusters.
    pairs = {(int(t), int(c)) for t, c in zip(truth, res.labels, strict=True)}
    assert len(pairs) == 3


def test_bad_k() -> None:
    with pytest.raises(ValueError):
        balanced_kmeans(np.zeros((3, 2)), 4)
