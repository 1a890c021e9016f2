"""How the bench counts and cuts tokens: the shared built-in tokenizer, or an HF tokenizer.json.

The built-in one (``expert_router.tokenizer``) is what the emulator counts with, so live and
simulated runs agree. ``--tokenizer FILE`` loads a Hugging Face ``tokenizer.json`` with the
optional ``tokenizers`` package (``pip install 'expert-router[hf]'``) to match a real model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from expert_router import tokenizer as builtin
from expert_router.errors import ConfigError


class TokenCounter(Protocol):
    """Counts tokens of a text and cuts a text to a number of tokens."""

    name: str

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class BuiltinCounter:
    """``expert_router.tokenizer``: dependency-free, shared with the emulator."""

    name = "builtin"

    def count(self, text: str) -> int:
        return builtin.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return builtin.truncate(text, max_tokens)


class HFCounter:
    """A Hugging Face ``tokenizer.json`` (no special tokens added).

    Streamed chunks are counted one by one, which is exact when each chunk holds whole tokens
    and the tokenizer adds nothing at the start of a text (e.g. no SentencePiece prefix space).
    """

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                "--tokenizer needs the 'tokenizers' package: pip install 'expert-router[hf]'"
            ) from exc
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as exc:  # the library raises a bare Exception on bad files
            raise ConfigError(f"--tokenizer: cannot load {path}: {exc}") from exc
        self.name = path

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        enc = self._tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens:
            return text
        return text[: enc.offsets[max_tokens - 1][1]]


BUILTIN = BuiltinCounter()


@lru_cache(maxsize=8)
def load_counter(path: str | None) -> TokenCounter:
    """The counter for ``path`` (a tokenizer.json), or the built-in one for ``None``."""
    return BUILTIN if path is None else HFCounter(path)
