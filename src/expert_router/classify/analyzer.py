"""The text analyzer: c-BTM's tokens, reproduced exactly without scikit-learn at request time.

scikit-learn's default word analyzer (``str.lower`` then ``(?u)\\b\\w\\w+\\b``), then c-BTM's
filters: a token whose first character is a digit becomes a number placeholder that is a stop
word (so it is dropped), and scikit-learn's 318 English stop words are dropped.
"""

from __future__ import annotations

import re

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""scikit-learn's default ``token_pattern``."""

# scikit-learn's ENGLISH_STOP_WORDS (318 words), copied so that inference never imports sklearn;
# a unit test checks that the two sets are equal.
STOP_WORDS: frozenset[str] = frozenset(
    (
        "a about above across after afterwards again against all almost alone along already also "
        "although always am among amongst amoungst amount an and another any anyhow anyone "
        "anything anyway anywhere are around as at back be became because become becomes becoming "
        "been before beforehand behind being below beside besides between beyond bill both bottom "
        "but by call can cannot cant co con could couldnt cry de describe detail do done down due "
        "during each eg eight either eleven else elsewhere empty enough etc even ever every "
        "everyone everything everywhere except few fifteen fifty fill find fire first five for "
        "former formerly forty found four from front full further get give go had has hasnt have "
        "he hence her here hereafter hereby herein hereupon hers herself him himself his how "
        "however hundred i ie if in inc indeed interest into is it its itself keep last latter "
        "latterly least less ltd made many may me meanwhile might mill mine more moreover most "
        "mostly move much must my myself name namely neither never nevertheless next nine no "
        "nobody none noone nor not nothing now nowhere of off often on once one only onto or "
        "other others otherwise our ours ourselves out over own part per perhaps please put "
        "rather re same see seem seemed seeming seems serious several she should show side since "
        "sincere six sixty so some somehow someone something sometime sometimes somewhere still "
        "such system take ten than that the their them themselves then thence there thereafter "
        "thereby therefore therein thereupon these they thick thin third this those though three "
        "through throughout thru thus to together too top toward towards twelve twenty two un "
        "under until up upon us very via was we well were what whatever when whence whenever "
        "where whereafter whereas whereby wherein whereupon wherever whether which while whither "
        "who whoever whole whom whose why will with within without would yet you your yours "
        "yourself yourselves "
    ).split()
)

_FINDALL = re.compile(TOKEN_PATTERN).findall


def raw_tokens(text: str) -> list[str]:
    """Every token scikit-learn's default analyzer would see, before any filtering.

    >>> raw_tokens("Hello, World 2024 a b")
    ['hello', 'world', '2024']
    """
    return _FINDALL(text.lower())


def keep(token: str) -> bool:
    """True if c-BTM keeps ``token``: it neither starts with a digit nor is a stop word."""
    return not token[0].isdigit() and token not in STOP_WORDS


def analyze(text: str) -> list[str]:
    """c-BTM's tokens of ``text``: lower-cased words of 2+ characters, minus numbers and stop words.

    >>> analyze("The 3 Quick brown foxes, 4th of July!")
    ['quick', 'brown', 'foxes', 'july']
    """
    return [t for t in _FINDALL(text.lower()) if not t[0].isdigit() and t not in STOP_WORDS]
