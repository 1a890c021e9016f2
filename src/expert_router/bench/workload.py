"""The paper's workload: base prompts cut from a dataset, labelled by cluster, mixed on purpose.

Documents are cut into base prompts of ``base_tokens ± jitter`` tokens; the router model labels
each prompt with its cluster; users draw a cluster from the chosen distribution (``mix``) and
then a prompt of that cluster, plus same-cluster text to pad their continuation prompt.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.bench.mix import cluster_weights, sample_clusters
from expert_router.bench.tokens import TokenCounter, load_counter
from expert_router.errors import ConfigError, CorpusError


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Token targets of the paper (335 ± 30 in, 1535 ± 30 with history, 1200 out)."""

    base_tokens: int = BASE_TOKENS
    continuation_tokens: int = CONTINUATION_TOKENS
    output_tokens: int = OUTPUT_TOKENS
    jitter: int = JITTER
    distribution: str = "uniform"
    followup_min_tokens: int = 16
    """The continuation's last user message has at least this many (same-cluster) tokens."""
    seed: int = 0
    tokenizer: str | None = None
    """A Hugging Face tokenizer.json to count tokens with; the built-in tokenizer when None."""

    @property
    def counter(self) -> TokenCounter:
        """The token counter this workload cuts prompts and counts answers with."""
        return load_counter(self.tokenizer)

    def __post_init__(self) -> None:
        if self.base_tokens < 1 or self.output_tokens < 1:
            raise ConfigError("base and output tokens must be >= 1")
        if not 0 <= self.jitter < self.base_tokens:
            raise ConfigError(f"jitter must be in [0, base_tokens), got {self.jitter}")
        if self.continuation_tokens < 0 or self.followup_min_tokens < 0:
            raise ConfigError("continuation and follow-up tokens must be >= 0")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One base prompt, its token count and its cluster."""

    text: str
    tokens: int
    cluster: int | None


@dataclass(frozen=True, slots=True)
class UserPlan:
    """What one user sends: a base prompt, then history + ``pad`` cut to its target."""

    user: int
    cluster: int | None
    base: str
    base_tokens: int
    continuation_target: int
    pad: str
    """Same-cluster text; the follow-up message is its prefix of the tokens still missing."""

    def followup(
        self, answer_tokens: int, min_tokens: int, counter: TokenCounter | None = None
    ) -> str:
        """The follow-up message: enough tokens to reach ``continuation_target`` (>= min)."""
        need = max(self.continuation_target - self.base_tokens - answer_tokens, min_tokens)
        return (counter or load_counter(None)).truncate(self.pad, need).strip() or "Continue."


class Labeller(Protocol):
    """Gives each prompt a cluster (the router model, or a stand-in in tests)."""

    n_clusters: int

    def labels(self, texts: Sequence[str]) -> list[int]: ...


class ClassifierLabeller:
    """Labels prompts with the router's classifier (the bundled model for ``model_dir=None``)."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from expert_router.classify import load

        self._clf = load(model_dir)
        self.n_clusters = int(self._clf.n_clusters)

    def labels(self, texts: Sequence[str]) -> list[int]:
        return [p.cluster for p in self._clf.predict_many(list(texts))]


def builtin_dataset() -> Path:
    """The bundled prompt source (C4 documents, see data/PROMPTS.md)."""
    return Path(str(resources.files("expert_router") / "data" / "prompts.jsonl.gz"))


def load_documents(path: Path | None = None) -> list[str]:
    """Texts of a JSON Lines file (``text`` or ``prompt`` field; ``.gz`` allowed) or of a plain
    text file (documents separated by blank lines). The built-in source when ``path`` is None."""
    path = builtin_dataset() if path is None else Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    is_jsonl = ".jsonl" in path.suffixes or ".json" in path.suffixes
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if not is_jsonl:
                docs = [d.strip() for d in fh.read().split("\n\n")]
                return [d for d in docs if d]
            out = []
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row.get("text", row.get("prompt"))
                except (ValueError, AttributeError) as exc:
                    raise CorpusError(f"{path}:{lineno}: not a JSON object") from exc
                if not isinstance(text, str):
                    raise CorpusError(f"{path}:{lineno}: no 'text' (or 'prompt') string")
                if text.strip():
                    out.append(text.strip())
            return out
    except OSError as exc:
        raise CorpusError(f"cannot read dataset {path}: {exc}") from exc


class Workload:
    """Labelled base prompts and the per-user plans drawn from them."""

    def __init__(
        self, documents: Sequence[str], labeller: Labeller | None, config: WorkloadConfig
    ) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        texts = self._cut(documents, rng)
        if not texts:
            raise ConfigError(
                f"the dataset has no text of {config.base_tokens - config.jitter}+ tokens"
            )
        self.n_clusters = labeller.n_clusters if labeller is not None else 1
        labels = labeller.labels(texts) if labeller is not None else [0] * len(texts)
        count = config.counter.count
        self.prompts = [
            Prompt(t, count(t), c if labeller is not None else None)
            for t, c in zip(texts, labels, strict=True)
        ]
        self._pools: list[list[int]] = [[] for _ in range(self.n_clusters)]
        for i, c in enumerate(labels):
            self._pools[c].append(i)
        self.weights = self._weights()

    def _cut(self, documents: Sequence[str], rng: np.random.Generator) -> list[str]:
        cfg = self.config
        counter = cfg.counter
        out: list[str] = []
        acc = ""
        for doc in documents:
            acc = f"{acc}\n\n{doc}" if acc else doc
            if counter.count(acc) < cfg.base_tokens + cfg.jitter:
                continue
            target = cfg.base_tokens + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
            out.append(counter.truncate(acc, target))
            acc = ""
        return out

    def _weights(self) -> np.ndarray:
        w = cluster_weights(self.config.distribution, self.n_clusters)
        available = np.array([len(p) > 0 for p in self._pools])
        w = np.where(available, w, 0.0)
        if w.sum() <= 0:
            raise ConfigError(
                f"no prompt of the dataset falls in a cluster that {self.config.distribution!r} "
                "gives weight to"
            )
        return np.asarray(w / w.sum(), dtype=np.float64)

    def cluster_sizes(self) -> list[int]:
        """Number of base prompts labelled with each cluster."""
        return [len(p) for p in self._pools]

    def plan(self, users: int, seed: int) -> list[UserPlan]:
        """One plan per user; the same ``seed`` gives the same plans."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, seed])
        clusters = sample_clusters(users, self.weights, rng)
        plans = []
        for u, c in enumerate(clusters.tolist()):
            pool = self._pools[c]
            prompt = self.prompts[pool[int(rng.integers(len(pool)))]]
            pad_parts: list[str] = []
            need = max(
                cfg.continuation_tokens + cfg.jitter - prompt.tokens, cfg.followup_min_tokens
            )
            have = 0
            while have < need and len(pad_parts) < 64:
                other = self.prompts[pool[int(rng.integers(len(pool)))]]
                pad_parts.append(other.text)
                have += other.tokens
            target = cfg.continuation_tokens + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
            plans.append(
                UserPlan(
                    user=u,
                    cluster=prompt.cluster,
                    base=prompt.text,
                    base_tokens=prompt.tokens,
                    continuation_target=target,
                    pad=" " + "\n\n".join(pad_parts),
                )
            )
        return plans
