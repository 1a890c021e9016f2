"""The topic mix of a workload: how users are spread over the router's clusters.

``uniform`` gives every cluster the same share (the paper's balanced load). ``normal`` puts a
discretised Gaussian over the cluster index, mean (K-1)/2 and standard deviation K/4 unless
given as ``normal:MEAN,SD`` (the paper's imbalanced load: middle clusters get most users).
``weights:w0,w1,...`` gives explicit, non-negative weights (normalised here).
"""

from __future__ import annotations

import math

import numpy as np

from expert_router.errors import ConfigError


def cluster_weights(spec: str, n_clusters: int) -> np.ndarray:
    """Probability of each cluster under the distribution ``spec`` (sums to 1).

    >>> cluster_weights("uniform", 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> cluster_weights("weights:1,0,3", 3).tolist()
    [0.25, 0.0, 0.75]
    """
    if n_clusters < 1:
        raise ConfigError(f"distribution: need at least one cluster, got {n_clusters}")
    kind, _, arg = spec.partition(":")
    if kind == "uniform" and not arg:
        w = np.ones(n_clusters)
    elif kind == "normal":
        mean, sd = (n_clusters - 1) / 2, n_clusters / 4
        if arg:
            try:
                mean, sd = (float(x) for x in arg.split(","))
            except ValueError as exc:
                raise ConfigError(f"distribution: expected normal:MEAN,SD, got {spec!r}") from exc
        if not sd > 0:
            raise ConfigError(f"distribution: standard deviation must be > 0, got {sd}")
        k = np.arange(n_clusters)
        w = np.exp(-((k - mean) ** 2) / (2 * sd**2))
    elif kind == "weights":
        try:
            w = np.array([float(x) for x in arg.split(",")])
        except ValueError as exc:
            raise ConfigError(f"distribution: weights must be numbers, got {arg!r}") from exc
        if len(w) != n_clusters:
            raise ConfigError(
                f"distribution: {len(w)} weights given for {n_clusters} clusters ({spec!r})"
            )
        if (w < 0).any() or not math.isfinite(float(w.sum())):
            raise ConfigError(f"distribution: weights must be finite and >= 0, got {arg!r}")
    else:
        raise ConfigError(
            f"distribution: expected uniform, normal[:MEAN,SD] or weights:w0,w1,..., got {spec!r}"
        )
    total = float(w.sum())
    if total <= 0:
        raise ConfigError(f"distribution: weights sum to zero ({spec!r})")
    return np.asarray(w / total, dtype=np.float64)


def sample_clusters(n_users: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The cluster of each of ``n_users`` users, drawn independently from ``weights``."""
    return rng.choice(len(weights), size=n_users, p=weights)


def describe_mix(spec: str, n_clusters: int) -> str:
    """The mix in words, with the shares it gives (for reports).

    >>> describe_mix("uniform", 8)
    '"uniform": every one of the 8 clusters gets the same share of users (12.5 %)'
    """
    shares = cluster_weights(spec, n_clusters) * 100
    kind = spec.partition(":")[0]
    if kind == "uniform":
        return (
            f'"uniform": every one of the {n_clusters} clusters gets the same share of users '
            f"({shares[0]:.1f} %)"
        )
    listed = ", ".join(f"{s:.1f}" for s in shares)
    if kind == "normal":
        return (
            f'"{spec}": a bell curve (discretised normal distribution) over the '
            f"{n_clusters} clusters' indices, so the middle clusters get most users "
            f"(shares in %: {listed})"
        )
    return f'"{spec}": explicit cluster weights (shares in %: {listed})'
