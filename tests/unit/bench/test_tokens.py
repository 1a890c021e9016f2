"""Token counting: the built-in tokenizer, or an HF tokenizer.json given with --tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_router.bench.tokens import BUILTIN, load_counter
from expert_router.bench.workload import Workload, WorkloadConfig
from expert_router.errors import ConfigError

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture
def word_tokenizer(tmp_path: Path) -> str:
    """A whitespace word-level tokenizer: one token per word or punctuation mark."""
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "apple": 3, ",": 4}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_builtin_is_the_default() -> None:
    assert load_counter(None) is BUILTIN
    assert BUILTIN.count("Hello, world") == 3 and BUILTIN.truncate("Hello, world", 2) == "Hello,"


def test_hf_counter(word_tokenizer: str) -> None:
    c = load_counter(word_tokenizer)
    assert c.count("hello   world, unknownword") == 4
    assert c.count("") == 0
    assert c.truncate("hello world, apple", 2) == "hello world"
    assert c.truncate("hello", 5) == "hello" and c.truncate("hello", 0) == ""


def test_workload_cuts_prompts_with_the_hf_tokenizer(word_tokenizer: str) -> None:
    # One token per word for the word tokenizer; the built-in one splits long words into
    # pieces of at most 8 letters, so its 100-token prompts hold fewer words.
    docs = [" ".join(["internationalisation"] * 300) for _ in range(4)]
    cfg = WorkloadConfig(base_tokens=100, jitter=0, tokenizer=word_tokenizer)
    wl = Workload(docs, None, cfg)
    assert all(p.tokens == 100 for p in wl.prompts)
    assert all(len(p.text.split()) == 100 for p in wl.prompts)
    builtin = Workload(docs, None, WorkloadConfig(base_tokens=100, jitter=0))
    assert all(len(p.text.split()) < 100 for p in builtin.prompts)


def test_bad_tokenizer_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="bad.json"):
        load_counter(str(bad))
