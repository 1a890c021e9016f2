"""Classifier latency: one ~300-token prompt, one ~1500-token prompt, batch throughput, load time.

Prompts are C4 documents cut to N tokens with the project's shared token count
(``expert_router.tokenizer``), as the user simulator builds them. Prints p50/p99 per call
(time.perf_counter_ns around every call, after a warm-up) next to the targets; never asserts.
Then the same calls **cold**: each after streaming a buffer twice the last-level cache through
the core (``_cold.CacheFlush``), as a gateway woken by a request finds its caches after the rest
of the machine ran (docs/benchmarks.md): what the classifier costs there is its cache misses
(the vocabulary lookups, the rows of its terms), not its instructions.

    python benchmarks/classify_latency.py [--data PATH.jsonl.gz] [--model DIR] [--iters N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the targets say

import argparse  # noqa: E402
import gc  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from _cold import CacheFlush  # noqa: E402
from expert_router.classify import Classifier, load  # noqa: E402
from expert_router.tokenizer import count_tokens, truncate  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_DATA = DEFAULT_DATA / "c4_sample.train.jsonl.gz"


def source_texts(path: Path | None, clf: Classifier) -> list[str]:
    """C4 texts when available, otherwise synthetic text from the model's own vocabulary."""
    if path is not None and path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh]
    rng = random.Random(0)
    words = list(clf.vocabulary) + ["the", "of", "and", "a", "to", "in", "is", "2024"] * 500
    return [" ".join(rng.choices(words, k=2500)) for _ in range(400)]


def prompts_of(texts: list[str], tokens: int, limit: int) -> list[str]:
    """Texts cut to ``tokens`` tokens (only texts at least that long)."""
    out = [truncate(t, tokens) for t in texts if count_tokens(t[: tokens * 8]) >= tokens]
    return out[:limit]


def per_call(clf: Classifier, prompts: list[str], iters: int) -> tuple[float, float, float]:
    """(p50, p99, mean) microseconds of ``clf.predict`` over ``iters`` calls."""
    predict = clf.predict
    for p in prompts[:200]:
        predict(p)
    samples = np.empty(iters, dtype=np.int64)
    n = len(prompts)
    gc.disable()
    try:
        for i in range(iters):
            p = prompts[i % n]
            t0 = time.perf_counter_ns()
            predict(p)
            samples[i] = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    us = samples / 1000.0
    return float(np.percentile(us, 50)), float(np.percentile(us, 99)), float(us.mean())


def cold_call(clf: Classifier, prompts: list[str], calls: int) -> float:
    """Median microseconds of ``clf.predict`` with the caches flushed before each call."""
    flush = CacheFlush()
    predict = clf.predict
    samples = []
    for i in range(calls):
        p = prompts[i % len(prompts)]
        flush()
        t0 = time.perf_counter_ns()
        predict(p)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000.0


def batch_rate(clf: Classifier, prompts: list[str], reps: int) -> tuple[float, float]:
    """(best, median) prompts per second of ``predict_many`` on ``prompts``."""
    clf.predict_many(prompts[:100])
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        clf.predict_many(prompts)
        rates.append(len(prompts) / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default=None, help="model directory (default: bundled)")
    parser.add_argument("--iters", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

    load(args.model)
    load_ms = []
    for _ in range(7):
        t0 = time.perf_counter()
        clf = load(args.model)
        load_ms.append((time.perf_counter() - t0) * 1000)
    texts = source_texts(args.data, clf)
    p300 = prompts_of(texts, 300, 2000)
    p1500 = prompts_of(texts, 1500, 500)
    ascii_share = sum(p.isascii() for p in p300) / max(1, len(p300))
    print(f"model: {clf.n_clusters} clusters, {len(clf.vocabulary)} terms, scaler {clf.scaler}")
    source = args.data.name if args.data.exists() else "synthetic"
    print(
        f"prompts: {len(p300)} x 300 tokens, {len(p1500)} x 1500 tokens from {source} "
        f"({ascii_share:.0%} of the 300-token prompts are pure ASCII)"
    )
    print(f"{'measure':<34}{'value':>14}  {'target':<16}")

    def row(name: str, value: str, target: str, ok: bool) -> None:
        print(f"{name:<34}{value:>14}  {target:<16}{'ok' if ok else 'MISSED'}")

    lm = statistics.median(load_ms)
    row("load (median of 7)", f"{lm:.1f} ms", "< 200 ms", lm < 200)
    p50, p99, mean = per_call(clf, p300, args.iters)
    row("predict, 300 tokens, p50", f"{p50:.1f} us", "<= 60 us", p50 <= 60)
    row("predict, 300 tokens, p99", f"{p99:.1f} us", "<= 150 us", p99 <= 150)
    row("predict, 300 tokens, mean", f"{mean:.1f} us", "", True)
    if p1500:
        p50, p99, mean = per_call(clf, p1500, max(2000, args.iters // 5))
        row("predict, 1500 tokens, p50", f"{p50:.1f} us", "<= 250 us", p50 <= 250)
        row("predict, 1500 tokens, p99", f"{p99:.1f} us", "", True)
    short = [" ".join(p.split()[:18]) for p in p300]  # gateway_overhead.py's prompts' length
    for name, prompts in (("18 words", short), ("300 tokens", p300), ("1500 tokens", p1500)):
        if prompts:
            row(f"predict, {name}, p50 cold", f"{cold_call(clf, prompts, 300):.1f} us", "", True)
    best, median = batch_rate(clf, p300, 7)
    row("predict_many, 300 tokens, best", f"{best:,.0f} /s", ">= 20,000 /s", best >= 20_000)
    row("predict_many, 300 tokens, median", f"{median:,.0f} /s", "", True)


if __name__ == "__main__":
    main()
