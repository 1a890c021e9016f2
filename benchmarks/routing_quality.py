"""Routing quality: balanced k-means (ours) vs scikit-learn's plain KMeans on the same features.

For each labelled set (K = number of labels) the c-BTM features are fitted once (TF-IDF ->
SVD(100) -> l2); then both clusterers run on them with the same seeds, and NMI, ARI and purity
of the nearest-centroid route are printed (mean over seeds), plus the training time of
``expert-router train`` on 20 Newsgroups. Prints figures; never asserts.

    python benchmarks/routing_quality.py [--data DIR] [--seeds 3] [--scaler l2|standard]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from expert_router.classify.balanced_kmeans import balanced_kmeans
from expert_router.classify.evaluate import quality
from expert_router.classify.training import TrainConfig, fit

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SETS = ("newsgroups20", "ag_news_test", "dbpedia14_subset")


def read(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels


def nearest(x: np.ndarray, centroids: np.ndarray) -> list[int]:
    d = (x * x).sum(1)[:, None] + (centroids**2).sum(1) - 2.0 * x @ centroids.T
    clusters: list[int] = d.argmin(axis=1).tolist()
    return clusters


def train_time(path: Path, k: int) -> float:
    """Wall time of the real ``expert-router train`` command (reading included)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "expert_router.cli.main",
            "train",
            str(path),
            "--clusters",
            str(k),
            "--seed",
            "0",
            "--out",
            str(Path(tmp) / "m"),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scaler", choices=("l2", "standard"), default="l2")
    args = parser.parse_args()
    print(
        f"{'set':<18}{'K':>3}{'docs':>7}  {'method':<22}{'NMI':>7}{'ARI':>7}{'purity':>8}"
        f"{'max/min size':>14}"
    )
    for name in SETS:
        path = args.data / f"{name}.train.jsonl.gz"
        if not path.exists():
            print(f"{name}: {path} not found, skipped")
            continue
        texts, labels = read(path)
        k = len(set(labels))
        features = fit(texts, TrainConfig(clusters=k, scaler=args.scaler, max_iter=1)).features
        results: dict[str, list[tuple[float, float, float, float]]] = {}
        for seed in range(args.seeds):
            ours = balanced_kmeans(features, k, seed=seed).centroids
            plain = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(features)
            for method, route in (
                ("balanced (ours)", nearest(features, ours)),
                ("sklearn KMeans", plain.labels_.tolist()),
            ):
                q = quality(route, labels, k)
                ratio = max(q.sizes) / max(1, min(q.sizes))
                results.setdefault(method, []).append((q.nmi, q.ari, q.purity, ratio))
        means = {
            m: [statistics.fmean(col) for col in zip(*r, strict=True)] for m, r in results.items()
        }
        for method, (nmi, ari, pur, ratio) in means.items():
            print(
                f"{name:<18}{k:>3}{len(texts):>7}  {method:<22}{nmi:>7.3f}{ari:>7.3f}"
                f"{pur:>8.3f}{ratio:>14.2f}"
            )
        rel = means["balanced (ours)"][0] / means["sklearn KMeans"][0]
        print(
            f"{'':<30}NMI ours / sklearn = {rel:.3f} (target >= 0.90: "
            f"{'ok' if rel >= 0.9 else 'MISSED'})"
        )
    ng = args.data / "newsgroups20.train.jsonl.gz"
    if ng.exists():
        seconds = train_time(ng, 20)
        print(
            f"expert-router train on {ng.name} (K=20): {seconds:.1f} s "
            f"(target <= 60 s: {'ok' if seconds <= 60 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
