"""Balanced k-means: Lloyd iterations whose assignment step is an auction (Bertsekas).

Each mini-batch is assigned so that every cluster receives the same number of points (within
one), maximising total similarity to the centroids; centroids are then the mean of their
points over all batches. Seeded, at most ``max_iter`` passes, float64 dense features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def capacities(n: int, k: int) -> IntArray:
    """Equal shares of ``n`` points over ``k`` clusters (the first ``n % k`` get one more)."""
    caps = np.full(k, n // k, dtype=np.int64)
    caps[: n % k] += 1
    return caps


EXACT = 1e-9
"""The last epsilon of the scaled auction, as a fraction of the benefit range over n: the
result is within ``1e-9`` x range of the optimum (the Hungarian method's, in the tests)."""


def auction_assign(
    benefit: FloatArray,
    caps: IntArray,
    *,
    prices: FloatArray | None = None,
    eps: float | None = None,
    max_rounds: int = 100_000,
) -> tuple[IntArray, FloatArray]:
    """Assign rows of ``benefit`` (n x K) to columns, column j taking exactly ``caps[j]`` rows,
    maximising the total benefit.

    A Jacobi forward auction with similar objects: every unassigned row bids for its best
    column at price + (best - second best value) + eps; a full column keeps its ``caps[j]``
    highest bids and its price becomes the lowest bid it keeps. The result is within
    ``n * eps`` of the optimal total. Without ``eps``, epsilon scaling: rounds from eps =
    range / 4 down by 8x to ``EXACT`` x range / n, each starting from the last prices (about
    the cost of one coarse auction, and optimal to 1e-9 of the range). Returns (assignment,
    final prices).
    """
    if eps is not None:
        return _auction(benefit, caps, prices, eps, max_rounds)
    n = benefit.shape[0]
    spread = max(float(benefit.max() - benefit.min()) if n else 0.0, 1e-12)
    final = spread * EXACT / max(n, 1)
    step = spread / 4.0
    while True:
        assign, prices = _auction(benefit, caps, prices, max(step, final), max_rounds)
        if step <= final:
            return assign, prices
        step /= 8.0


def _auction(
    benefit: FloatArray,
    caps: IntArray,
    prices: FloatArray | None,
    eps: float,
    max_rounds: int,
) -> tuple[IntArray, FloatArray]:
    n, k = benefit.shape
    if caps.sum() != n:
        raise ValueError("capacities must sum to the number of rows")
    price = np.zeros(k) if prices is None else prices.astype(np.float64).copy()
    owner = np.full(n, -1, dtype=np.int64)
    held: list[IntArray] = [np.empty(0, np.int64) for _ in range(k)]
    bids: list[FloatArray] = [np.empty(0) for _ in range(k)]
    free = np.arange(n, dtype=np.int64)
    rows = np.arange(n)
    for _ in range(max_rounds):
        if free.size == 0:
            break
        values = benefit[free] - price
        if k > 1:
            top2 = np.argpartition(-values, 1, axis=1)[:, :2]
            v = values[rows[: free.size, None], top2]
            swap = v[:, 1] > v[:, 0]
            best = np.where(swap, top2[:, 1], top2[:, 0])
            gap = np.abs(v[:, 0] - v[:, 1])
        else:
            best = np.zeros(free.size, dtype=np.int64)
            gap = np.zeros(free.size)
        bid = price[best] + gap + eps
        evicted: list[IntArray] = []
        for j in np.unique(best):
            mask = best == j
            cand = np.concatenate([held[j], free[mask]])
            cand_bid = np.concatenate([bids[j], bid[mask]])
            cap = int(caps[j])
            if cand.size > cap:
                keep = (
                    np.argpartition(-cand_bid, cap - 1)[:cap] if cap > 0 else np.empty(0, np.int64)
                )
                lost = np.ones(cand.size, dtype=bool)
                lost[keep] = False
                evicted.append(cand[lost])
                owner[cand[lost]] = -1
                cand, cand_bid = cand[keep], cand_bid[keep]
            held[j], bids[j] = cand, cand_bid
            owner[cand] = j
            if cand.size >= cap and cap > 0:
                price[j] = float(cand_bid.min())
        free = np.concatenate(evicted) if evicted else np.empty(0, np.int64)
    if (owner < 0).any():  # pragma: no cover - only if max_rounds is exhausted
        raise RuntimeError("auction did not converge")
    return owner, price


@dataclass(frozen=True)
class KMeansResult:
    """Fitted centroids, the balanced training assignment and how many passes it took."""

    centroids: FloatArray
    labels: IntArray
    n_iter: int


def balanced_kmeans(
    x: FloatArray,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 20,
    batch_size: int = 50_000,
    tol: float = 1e-4,
    on_iter: Callable[[int, float], None] | None = None,
) -> KMeansResult:
    """Fit ``k`` centroids to the rows of ``x`` with balanced (auction) assignments.

    Initialisation is k-means++ on a seeded sample; each pass assigns every mini-batch with an
    auction (capacities equal within the batch) and moves centroids to the mean of their points.
    Stops after ``max_iter`` passes or when under ``tol`` of the points change cluster.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= clusters <= documents, got {k} clusters for {n} documents")
    rng = np.random.default_rng(seed)
    centroids = _kmeans_pp(x[rng.choice(n, size=min(n, 20 * k + 1000), replace=False)], k, rng)
    order = rng.permutation(n)
    n_batches = max(1, -(-n // batch_size))
    batches = np.array_split(order, n_batches)
    labels = np.full(n, -1, dtype=np.int64)
    prices: list[FloatArray | None] = [None] * n_batches
    x_sq = (x * x).sum(axis=1)
    it = 0
    for it in range(1, max_iter + 1):
        sums = np.zeros_like(centroids)
        counts = np.zeros(k)
        changed = 0
        for b, idx in enumerate(batches):
            xb = x[idx]
            # benefit = -squared distance (the |x|^2 term is constant per row but keeps scale)
            benefit = -(x_sq[idx, None] + (centroids**2).sum(axis=1) - 2.0 * xb @ centroids.T)
            assign, prices[b] = auction_assign(benefit, capacities(idx.size, k), prices=prices[b])
            changed += int((labels[idx] != assign).sum())
            labels[idx] = assign
            np.add.at(sums, assign, xb)
            counts += np.bincount(assign, minlength=k)
        centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        frac = changed / n
        if on_iter is not None:
            on_iter(it, frac)
        if frac < tol:
            break
    return KMeansResult(centroids=centroids, labels=labels, n_iter=it)


def _kmeans_pp(x: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    """k-means++ seeding on ``x`` (a sample of the data)."""
    centers = [x[rng.integers(x.shape[0])]]
    d = ((x - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d.sum()
        i = int(rng.choice(x.shape[0], p=d / total)) if total > 0 else int(rng.integers(x.shape[0]))
        centers.append(x[i])
        d = np.minimum(d, ((x - x[i]) ** 2).sum(axis=1))
    return np.array(centers, dtype=np.float64)
