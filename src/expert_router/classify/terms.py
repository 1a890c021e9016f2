"""Fast term lookup for inference: text -> vocabulary ids, the same terms as the analyzer.

Where the C module is built, ``_native.term_ids`` cuts any text into runs of word characters
in one call and looks up its ASCII runs itself; only runs holding other characters come back,
to be lower-cased and cut by the analyzer's regex here. Without it: UTF-8 bytes are
lower-cased and cut at ASCII non-word bytes with one ``bytes.translate`` and ``split``; common
non-word non-ASCII characters (curly quotes, dashes, nbsp, ...) become spaces; only runs still
holding non-ASCII bytes go through the Unicode regex. Either way, text with a capital sigma
(whose lower case depends on context) takes the exact regex path, as does text with lone
surrogates in Python.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Callable
from itertools import filterfalse

_WORD_BYTES = frozenset((string.ascii_lowercase + string.digits + "_").encode())
# A-Z -> a-z, other ASCII word bytes kept, ASCII non-word -> space, non-ASCII bytes kept.
_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else (c if c in _WORD_BYTES or c >= 128 else 32) for c in range(256)
)
# Equivalent to scikit-learn's (?u)\b\w\w+\b under findall: a match always spans a whole run.
_UNICODE_WORDS = re.compile(r"\w\w+").findall
_IS_WORD = re.compile(r"\w").match


def _nonword_pattern() -> re.Pattern[bytes]:
    """UTF-8 of frequent non-ASCII non-word characters (Latin-1 symbols, general punctuation)."""
    codes = [*range(0x80, 0xC0), *range(0x2000, 0x2070), 0x20AC, 0x2122, 0x3010, 0x3011, 0xFEFF]
    groups: dict[bytes, list[int]] = defaultdict(list)
    for code in codes:
        if not _IS_WORD(chr(code)):
            data = chr(code).encode()
            groups[data[:-1]].append(data[-1])
    alternatives = [
        re.escape(prefix) + b"[" + b"".join(b"\\x%02x" % b for b in last) + b"]"
        for prefix, last in groups.items()
    ]
    return re.compile(b"|".join(alternatives))


_NONWORD_SUB = _nonword_pattern().sub

NativeIds = Callable[[str, object], tuple[list[int], list[str] | None] | None]
_term_ids: NativeIds | None
_vocabulary_table: Callable[[dict[bytes, int]], object] | None
try:
    from expert_router.classify._native import term_ids as _term_ids
    from expert_router.classify._native import vocabulary_table as _vocabulary_table
except ImportError:  # not built (no C compiler at install): translate and split below
    _term_ids = _vocabulary_table = None


class TermCounter:
    """Maps text to the ids of its in-vocabulary terms, one id per occurrence."""

    __slots__ = ("_bytes", "_bytes_get", "_native", "_str_get", "_table")

    def __init__(self, vocabulary: dict[str, int]) -> None:
        self._str_get = vocabulary.get
        # A term has two characters at least (the analyzer's); a one-character entry is
        # never looked up, on either path.
        self._bytes = {t.encode(): i for t, i in vocabulary.items() if t.isascii() and len(t) > 1}
        self._bytes_get = self._bytes.get
        self._native = _term_ids  # None: the Python cut
        # The C lookup's own table: one cache line per term, where the dict touches four.
        self._table = _vocabulary_table(self._bytes) if _vocabulary_table is not None else None

    def ids(self, text: str) -> list[int]:
        """Vocabulary ids of the terms of ``text``, repeated once per occurrence, any order.

        >>> TermCounter({"cat": 0, "café": 1}).ids("Cat, CAFÉ and cat!")
        [0, 0, 1]
        """
        native = self._native
        if native is None:
            return self._cut(text)
        got = native(text, self._table)
        if got is None:  # a capital sigma
            return self._exact(text)
        ids, wide = got
        if wide:  # runs of word characters holding non-ASCII ones, as the text has them
            get = self._str_get
            tokens = _UNICODE_WORDS(" ".join(wide).lower())
            ids += [i for token in tokens if (i := get(token)) is not None]
        return ids

    def _cut(self, text: str) -> list[int]:
        """``ids`` in Python: translate, split, and the regex for non-ASCII runs only."""
        ascii_only = text.isascii()
        if ascii_only:
            cut = text.encode().translate(_TABLE)
        elif "\u03a3" in text:
            return self._exact(text)
        else:
            try:
                cut = _NONWORD_SUB(b" ", text.encode().translate(_TABLE))
            except UnicodeEncodeError:  # lone surrogates
                return self._exact(text)
            ascii_only = cut.isascii()
        runs = cut.split()
        get_ascii = self._bytes_get
        ids = [i for run in runs if (i := get_ascii(run)) is not None]
        if not ascii_only:
            # Runs holding non-ASCII bytes: one decode + lower + regex over all of them (runs
            # are whole UTF-8 sequences cut at ASCII bytes, so joining with spaces is exact).
            wide = list(filterfalse(bytes.isascii, runs))
            get = self._str_get
            tokens = _UNICODE_WORDS(b" ".join(wide).decode().lower())
            ids += [i for token in tokens if (i := get(token)) is not None]
        return ids

    def _exact(self, text: str) -> list[int]:
        get = self._str_get
        return [i for t in _UNICODE_WORDS(text.lower()) if (i := get(t)) is not None]


def has_tokens(text: str) -> bool:
    """True if the analyzer sees any token at all (before dropping numbers and stop words)."""
    return bool(_UNICODE_WORDS(text.lower()))
