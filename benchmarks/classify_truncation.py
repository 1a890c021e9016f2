"""Which part of a long prompt to classify: its head, its tail, or both ends.

The gateway classifies at most ``classifier.max_chars`` characters of a request's text, from
its head. For long documents (C4 and 20 Newsgroups texts of at least ``--min-chars``
characters), this prints how often the router sends a cut of N characters to the cluster of
the whole text, the cut taken from the head, from the tail, or N/2 from each end; and what one
classification costs at each length (median of hot calls, one core). Prints, never asserts.

    python benchmarks/classify_truncation.py [--data DIR] [--model DIR] [--min-chars 8192]
        [--cuts 256,1024,4096]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the gateway's classifier runs

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from expert_router.classify import Classifier, load  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SETS = ("c4_sample", "newsgroups20")

Cut = Callable[[str, int], str]
WAYS: dict[str, Cut] = {
    "head": lambda text, n: text[:n],
    "tail": lambda text, n: text[-n:],
    "both ends": lambda text, n: text[: n // 2] + "\n" + text[-(n - n // 2) :],
}


def long_texts(data: Path, min_chars: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in SETS:
        with gzip.open(data / f"{name}.train.jsonl.gz", "rt", encoding="utf-8") as fh:
            texts = (json.loads(line)["text"] for line in fh)
            out[name] = [t for t in texts if len(t) >= min_chars]
    return out


def clusters(clf: Classifier, texts: list[str]) -> list[int]:
    return [clf.predict(t).cluster for t in texts]


def agreement(clf: Classifier, texts: list[str], whole: list[int], cut: Cut, n: int) -> float:
    """The share of ``texts`` whose cut of ``n`` characters goes where the whole text goes
    (``whole``: the texts' own clusters)."""
    same = sum(clf.predict(cut(t, n)).cluster == c for t, c in zip(texts, whole, strict=True))
    return same / len(texts)


def cost_us(clf: Classifier, texts: list[str], n: int | None, rounds: int = 3) -> float:
    """Median microseconds of one hot ``predict`` on the head of ``n`` characters (None:
    the whole text), over ``texts``."""
    cut = [t if n is None else t[:n] for t in texts]
    for t in cut:  # warm
        clf.predict(t)
    times = []
    for _ in range(rounds):
        for t in cut:
            t0 = time.perf_counter_ns()
            clf.predict(t)
            times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", type=Path, default=None, help="a router directory (bundled)")
    p.add_argument("--min-chars", type=int, default=8192)
    p.add_argument("--cuts", default="256,1024,4096", help="cut lengths, in characters")
    args = p.parse_args(argv)
    cuts = [int(n) for n in args.cuts.split(",")]
    clf = load(args.model)
    sets = long_texts(args.data, args.min_chars)
    every = [t for texts in sets.values() for t in texts]
    sizes = ", ".join(f"{name} {len(texts)}" for name, texts in sets.items())
    chars = statistics.median(len(t) for t in every)
    print(f"{len(every)} texts of >= {args.min_chars} characters ({sizes}; median {chars:.0f})")
    print(f"{clf.n_clusters} clusters; the share routed as the whole text is:")
    head = f"{'cut':>7}  " + "  ".join(f"{w:>9}" for w in WAYS)
    for name, texts in (*sets.items(), ("all", every)):
        print(f"  {name}\n  {head}")
        whole = clusters(clf, texts)
        for n in cuts:
            shares = "  ".join(
                f"{agreement(clf, texts, whole, cut, n):9.1%}" for cut in WAYS.values()
            )
            print(f"  {n:>7}  {shares}")
    print("one classification, hot (median us):")
    lengths: list[int | None] = [*cuts, None]  # None: the whole text
    for length in lengths:
        label = f"first {length} characters" if length else f"whole text (median {chars:.0f})"
        print(f"  {label:>32}: {cost_us(clf, every, length):8.1f}")


if __name__ == "__main__":
    main()
