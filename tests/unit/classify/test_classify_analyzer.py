"""The analyzer and the fast term lookup reproduce scikit-learn's tokens exactly."""

from __future__ import annotations

import random
import re
import string
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

from expert_router.classify.analyzer import STOP_WORDS, analyze, raw_tokens
from expert_router.classify.terms import TermCounter, _term_ids, _vocabulary_table, has_tokens

SKLEARN = CountVectorizer().build_analyzer()

# Text that mixes ASCII words, digits, punctuation, accents, curly quotes, Greek capitals
# (context-dependent lower case), combining marks, CJK, emoji and lone surrogates.
ALPHABET = st.sampled_from(
    list("abcXYZ019_ .,;:'’“”-—\n\t")
    + ["é", "É", "ß", "İ", "Σ", "σ", "ς", "Ω", "\u0301", "\u212a", "日", "🙂", "²", "½", "\xa0"]
    + ["\u2019", "\u2028", "\ufeff", "\ud800", "\x85", "\x1c", "Ⅷ", "٣", "ª"]
)
TEXT = st.one_of(st.text(), st.text(alphabet=ALPHABET, max_size=60))


def c_btm(text: str) -> list[str]:
    """scikit-learn's tokens with c-BTM's number placeholder and stop words removed."""
    return [t for t in SKLEARN(text) if not t[0].isdigit() and t not in ENGLISH_STOP_WORDS]


def test_stop_words_are_sklearns() -> None:
    assert STOP_WORDS == ENGLISH_STOP_WORDS
    assert len(STOP_WORDS) == 318


def test_examples() -> None:
    assert analyze("The 3 Quick brown foxes, 4th of July! x_y café") == [
        "quick",
        "brown",
        "foxes",
        "july",
        "x_y",
        "café",
    ]
    assert analyze("") == []
    assert analyze("a I 42 1st the") == []
    assert raw_tokens("a I 42 1st the") == ["42", "1st", "the"]


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_analyzer_matches_sklearn(text: str) -> None:
    assert raw_tokens(text) == SKLEARN(text)
    assert analyze(text) == c_btm(text)


@settings(max_examples=400, deadline=None)
@given(TEXT, st.lists(TEXT, max_size=4))
def test_fast_lookup_counts_the_same_terms(text: str, extra: list[str]) -> None:
    # The vocabulary holds every analyzer token of the text (and of some other texts),
    # minus a few, so both known and unknown tokens occur.
    vocab_terms = sorted({t for s in [text, *extra] for t in analyze(s)})[::1]
    dropped = set(vocab_terms[::3])
    vocab = {t: i for i, t in enumerate(t for t in vocab_terms if t not in dropped)}
    expected = Counter(vocab[t] for t in analyze(text) if t in vocab)
    counter = TermCounter(vocab)
    assert Counter(counter.ids(text)) == expected
    counter._native = None  # the Python path, as where the C module is not built
    assert Counter(counter.ids(text)) == expected
    assert has_tokens(text) == bool(SKLEARN(text))


def test_fast_lookup_on_tricky_cases() -> None:
    vocab = {t: i for i, t in enumerate(["cat", "café", "kelvin", "don", "σοφια", "straße"])}
    counter = TermCounter(vocab)
    cases = [
        "CAT cat Cat",
        "Café’s CAFÉ",
        "\u212aelvin kelvin",  # Kelvin sign lower-cases to ASCII k
        "don’t “cat”",
        "ΣΟΦΙΑ σοφια",
        "STRASSE Straße",
        "cat\ud800cat cat",
    ]
    python = TermCounter(vocab)
    python._native = None
    for text in cases:
        expected = Counter(vocab[t] for t in analyze(text) if t in vocab)
        assert Counter(counter.ids(text)) == expected, text
        assert Counter(python.ids(text)) == expected, text


@settings(max_examples=400, deadline=None)
@given(st.one_of(TEXT, st.text(alphabet=st.characters(max_codepoint=127), max_size=200)),
       st.lists(TEXT))  # fmt: skip
def test_native_lookup_is_the_python_one(text: str, extra: list[str]) -> None:
    """The C cut and lookup (``_native.term_ids``, where built) gives the ids the Python path
    gives: in the same order for ASCII text, the same multiset for any text."""
    vocab_terms = sorted({t for s in [text, *extra] for t in raw_tokens(s)} | {"a", "_", "9"})
    vocab = {t: i for i, t in enumerate(vocab_terms[1::2])}
    counter = TermCounter(vocab)
    if counter._native is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    native = counter.ids(text)
    counter._native = None
    python = counter.ids(text)
    if text.isascii():
        assert native == python
    assert Counter(native) == Counter(python)


def test_the_c_cut_is_the_regexs_over_every_code_point() -> None:
    """``term_ids`` cuts at what ``\\w`` does not match, then the runs are lower-cased: the
    analyzer's terms only because no character outside ``\\w`` lower-cases to one inside."""
    if _term_ids is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    word = re.compile(r"\w").match
    empty = _table({})
    for code in range(128, sys.maxunicode + 1):
        c = chr(code)
        got = _term_ids(c + c, empty)
        if code == 0x03A3:
            assert got is None
            continue
        assert got is not None
        assert (got[1] == [c + c]) == bool(word(c)), hex(code)  # a run of two, or no run
        low = c.lower()
        if low != c and not word(c):
            assert not any(word(x) for x in low), hex(code)


def _table(vocabulary: dict[bytes, int]) -> object:
    assert _vocabulary_table is not None
    return _vocabulary_table(vocabulary)


def test_native_lookup_refuses_bad_arguments() -> None:
    if _term_ids is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    assert _term_ids("Cat cat-CAT x", _table({b"cat": 7})) == ([7, 7, 7], None)
    assert _term_ids("Café cat’s", _table({b"cat": 1})) == ([1], ["Café"])  # the wide run as it is
    assert _term_ids("ΣΟΦΙΑ", _table({})) is None  # a capital sigma: the exact path
    assert _term_ids("", _table({})) == ([], None)
    for args in [(b"cat", _table({})), ("cat", {b"cat": 1}), ("cat",), ("cat", _table({}), 1)]:
        with pytest.raises(TypeError):
            _term_ids(*args)  # type: ignore[arg-type]
    for bad, error in [
        ({"cat": 1}, TypeError),  # str keys
        ({b"cat": 1.0}, TypeError),
        ({b"cat": -1}, ValueError),
        ({b"cat": 2**32}, ValueError),
        ({b"x" * 70_000: 1}, ValueError),
        ([b"cat"], TypeError),
    ]:
        with pytest.raises(error):
            _table(bad)  # type: ignore[arg-type]


def test_the_native_table_finds_what_the_dict_finds() -> None:
    """``vocabulary_table``'s open addressing against the dict it is built from, on a large
    vocabulary (probes that wrap around the table) with terms held inline, in its pool (over
    26 bytes) and longer than a run is lower-cased on the stack (over 256), each looked up in
    any case mix, beside runs that only share a prefix or a hash bucket with a term."""
    if _term_ids is None:
        pytest.skip("expert_router.classify._native is not built (no C compiler at install)")
    rng = random.Random(12)
    letters = string.ascii_lowercase + string.digits + "_"
    lengths = [rng.choice([2, 3, 5, 8, 13, 26, 27, 40, 256, 257, 600]) for _ in range(20_000)]
    terms = list(dict.fromkeys("".join(rng.choices(letters, k=n)) for n in lengths))
    vocabulary = {t.encode(): i for i, t in enumerate(terms[::2])}
    table = _table(vocabulary)
    for chunk in range(0, len(terms), 500):
        words = terms[chunk : chunk + 500]
        words += [w[:-1] for w in words[:50] if len(w) > 2] + [w + "q" for w in words[:50]]
        rng.shuffle(words)
        text = " ".join(w.upper() if rng.random() < 0.3 else w for w in words)
        want = [vocabulary[w.encode()] for w in words if w.encode() in vocabulary]
        assert _term_ids(text, table) == (want, None)
