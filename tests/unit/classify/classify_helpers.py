"""Helpers for the classifier tests: a synthetic, varied, labelled corpus and JSONL writing."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "sport": "goal team match league season coach player score stadium referee penalty "
    "tournament champion striker keeper fans victory defeat injury transfer",
    "cooking": "recipe oven flour butter sugar bake dough sauce garlic onion pepper simmer "
    "kitchen chef dinner taste salt roast vegetables spoon",
    "computing": "server software kernel compile python database network memory cache code "
    "linux bug release thread process cluster storage query latency api",
    "health": "patient doctor hospital disease treatment symptoms vaccine clinic nurse therapy "
    "medicine diagnosis blood heart surgery infection health pain drug",
    "finance": "market stock price investor bank interest inflation bond shares trading "
    "profit revenue economy fund tax budget loan credit earnings dividend",
}
COMMON = "people time year new make like good way day work life world know great".split()
ODD = [
    "café",
    "naïve",
    "Zürich",
    "ΣΟΦΙΑ",
    "don’t",
    "“quoted”",
    "Straße",
    "İstanbul",
    "12th",
    "2024",
    "x",
    "a",
    "the",
    "and",
    "K-9",
    "e-mail",
    "日本語",
    "emoji🙂",
    "__init__",
    "ⅷ",
]


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` documents over five topics (label = topic), with shared words, noise and unicode."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    words = {t: TOPICS[t].split() for t in names}
    texts, labels = [], []
    for i in range(n):
        topic = names[i % len(names)]
        other = rng.choice(names)
        length = rng.randint(5, 120)
        doc = []
        for _ in range(length):
            r = rng.random()
            if r < 0.6:
                w = rng.choice(words[topic])
            elif r < 0.7:
                w = rng.choice(words[other])
            elif r < 0.9:
                w = rng.choice(COMMON)
            else:
                w = rng.choice(ODD)
            if rng.random() < 0.1:
                w = w.upper() if rng.random() < 0.5 else w.capitalize()
            doc.append(w)
        sep = rng.choice([" ", ", ", ". ", "\n", " - "])
        texts.append(sep.join(doc))
        labels.append(topic)
    return texts, labels


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
