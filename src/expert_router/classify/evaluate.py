"""Routing quality: compare cluster assignments with reference labels (NMI, ARI, purity).

Purity = (1/n) * sum over clusters of the size of the cluster's most frequent label. NMI and
ARI are scikit-learn's (arithmetic-mean normalisation for NMI).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Quality:
    """Agreement of clusters with labels, plus the cluster sizes."""

    nmi: float
    ari: float
    purity: float
    sizes: list[int]
    documents: int
    labels: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the keys of ``evaluate --json``)."""
        return {
            "nmi": self.nmi,
            "ari": self.ari,
            "purity": self.purity,
            "sizes": self.sizes,
            "documents": self.documents,
            "labels": self.labels,
        }


def purity(clusters: Sequence[int], labels: Sequence[Hashable]) -> float:
    """Share of documents whose label is the majority label of their cluster.

    >>> purity([0, 0, 1, 1], ["a", "b", "b", "b"])
    0.75
    """
    if len(clusters) != len(labels):
        raise ValueError("clusters and labels differ in length")
    if not clusters:
        return 0.0
    table: dict[int, dict[Hashable, int]] = {}
    for c, y in zip(clusters, labels, strict=True):
        row = table.setdefault(int(c), {})
        row[y] = row.get(y, 0) + 1
    return sum(max(row.values()) for row in table.values()) / len(clusters)


def quality(clusters: Sequence[int], labels: Sequence[Hashable], n_clusters: int) -> Quality:
    """NMI, ARI, purity and sizes of ``clusters`` against ``labels``."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    label_ids = {y: i for i, y in enumerate(dict.fromkeys(labels))}
    y = [label_ids[v] for v in labels]
    c = [int(v) for v in clusters]
    return Quality(
        nmi=float(normalized_mutual_info_score(y, c)) if c else 0.0,
        ari=float(adjusted_rand_score(y, c)) if c else 0.0,
        purity=purity(c, y),
        sizes=np.bincount(np.asarray(c, dtype=np.int64), minlength=n_clusters).tolist(),
        documents=len(c),
        labels=len(label_ids),
    )
