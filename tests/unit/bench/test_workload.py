"""Prompts cut to token targets, labelled, mixed by distribution; plans are reproducible."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from expert_router.bench.workload import (
    Workload,
    WorkloadConfig,
    builtin_dataset,
    load_documents,
)
from expert_router.errors import ConfigError, CorpusError
from expert_router.tokenizer import count_tokens


class KeywordLabeller:
    """Cluster 0 for texts about apples, 1 for rivers, 2 for anything else."""

    n_clusters = 3

    def labels(self, texts: Sequence[str]) -> list[int]:
        return [0 if "apple" in t else 1 if "river" in t else 2 for t in texts]


def _docs(n: int = 20, words: int = 420) -> list[str]:
    return [" ".join([("apple" if i % 2 == 0 else "river")] * words) for i in range(n)]


def test_base_prompts_hit_token_targets_and_labels() -> None:
    cfg = WorkloadConfig(base_tokens=100, jitter=10)
    wl = Workload(_docs(words=150), KeywordLabeller(), cfg)
    assert len(wl.prompts) == 20
    assert all(90 <= p.tokens <= 110 for p in wl.prompts)
    assert all(p.tokens == count_tokens(p.text) for p in wl.prompts)
    assert wl.cluster_sizes() == [10, 10, 0]
    # short documents are joined until long enough
    short = Workload(_docs(n=9, words=40), KeywordLabeller(), cfg)
    assert len(short.prompts) == 3


def test_distribution_controls_the_mix() -> None:
    wl = Workload(_docs(), KeywordLabeller(), WorkloadConfig(distribution="weights:0,1,0"))
    plans = wl.plan(50, seed=1)
    assert {p.cluster for p in plans} == {1}
    assert all("river" in p.base and "river" in p.pad for p in plans)
    uniform = Workload(_docs(), KeywordLabeller(), WorkloadConfig())
    # cluster 2 has no prompt: its weight goes to the others
    assert uniform.weights.tolist() == pytest.approx([0.5, 0.5, 0.0])
    clusters = [p.cluster for p in uniform.plan(400, seed=2)]
    assert 150 < clusters.count(0) < 250
    with pytest.raises(ConfigError, match="weight"):
        Workload(_docs(), KeywordLabeller(), WorkloadConfig(distribution="weights:0,0,1"))


def test_plans_are_reproducible_and_followups_reach_the_target() -> None:
    cfg = WorkloadConfig(base_tokens=100, continuation_tokens=400, jitter=10)
    wl = Workload(_docs(), KeywordLabeller(), cfg)
    a, b = wl.plan(5, seed=7), wl.plan(5, seed=7)
    assert a == b and wl.plan(5, seed=8) != a
    p = a[0]
    assert 390 <= p.continuation_target <= 410
    # answer of 200 tokens: the follow-up fills the rest of the target
    follow = p.followup(200, cfg.followup_min_tokens)
    assert count_tokens(follow) == pytest.approx(p.continuation_target - p.base_tokens - 200, abs=1)
    # a long answer still leaves a (same-cluster) follow-up of at least the minimum
    assert count_tokens(p.followup(10_000, 16)) >= 15


def test_without_labeller_every_prompt_is_unlabelled() -> None:
    wl = Workload(_docs(), None, WorkloadConfig())
    assert {p.cluster for p in wl.plan(3, seed=0)} == {None}


def test_load_documents(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"prompt": "two"}) + "\n")
    assert load_documents(path) == ["one", "two"]
    txt = tmp_path / "d.txt"
    txt.write_text("first doc\nline\n\nsecond\n")
    assert load_documents(txt) == ["first doc\nline", "second"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n')
    with pytest.raises(CorpusError, match="bad.jsonl:1"):
        load_documents(bad)
    with pytest.raises(CorpusError):
        load_documents(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError):
        Workload(["too short"], None, WorkloadConfig())


def test_builtin_dataset_is_small_and_long_enough() -> None:
    assert builtin_dataset().stat().st_size < 1_000_000
    docs = load_documents()
    assert len(docs) == 600
    assert all(count_tokens(d) >= 400 for d in docs)


def test_builtin_workload_is_labelled_by_the_bundled_router() -> None:
    from expert_router.bench.workload import ClassifierLabeller

    wl = Workload(load_documents(), ClassifierLabeller(), WorkloadConfig())
    assert sum(wl.cluster_sizes()) == 600
    assert sum(1 for n in wl.cluster_sizes() if n > 0) >= 4
