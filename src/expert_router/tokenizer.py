"""The one token count shared by the emulator and the user simulator.

A deterministic, lossless, dependency-free approximation of a BPE tokenizer: optional leading
whitespace followed by up to 8 letters, up to 3 digits, or one other symbol; a trailing run of
whitespace is one token. Concatenating the pieces gives the text back exactly, and
``count_tokens(a + b) == count_tokens(a) + count_tokens(b)`` whenever ``b`` starts with a space
followed by a letter (as every generated token does), so counting per streamed chunk and
counting the whole answer agree.
"""

from __future__ import annotations

import random
import re

_TOKEN = re.compile(r"\s*(?:[^\W\d_]{1,8}|\d{1,3}|[^\w\s]|_)|\s+")

# Generated text: common English words, each emitted with a leading space (one token each).
_WORDS = (
    "the of and to in is for that with on as by it at from this be are was or an which "
    "model data time system user value result large small first new each more other model "
    "expert token batch cache memory layer value range query answer prompt topic cluster "
    "server request stream network signal energy market policy health science history music "
    "river city light water green north south early later simple common public local field"
).split()
VOCAB: tuple[str, ...] = tuple(" " + w for w in dict.fromkeys(_WORDS))


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into tokens; ``"".join(split_tokens(t)) == t``.

    >>> split_tokens("Hello, world 2024!")
    ['Hello', ',', ' world', ' 202', '4', '!']
    """
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text`` (0 for the empty string)."""
    return sum(1 for _ in _TOKEN.finditer(text))


def truncate(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` holding at most ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    end = 0
    for i, match in enumerate(_TOKEN.finditer(text)):
        if i == max_tokens:
            break
        end = match.end()
    return text[:end]


class TokenGenerator:
    """Deterministic token text for one request: the same seed gives the same tokens.

    >>> gen = TokenGenerator(seed=7)
    >>> a = [gen.next() for _ in range(3)]
    >>> b = [TokenGenerator(seed=7).next() for _ in range(1)]
    >>> a[0] == b[0]
    True
    """

    __slots__ = ("_rng",)

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def next(self) -> str:
        """The next token's text (a leading space and a word: exactly one token)."""
        return VOCAB[self._rng.randrange(len(VOCAB))]
