"""The paper's workload targets: the one place every default (bench, simulate, experiment) reads.

Kept free of imports so that command-line modules can use them without slowing ``--help``.
"""

BASE_TOKENS = 335
"""Base prompt length, tokens."""
CONTINUATION_TOKENS = 1535
"""Continuation prompt length (base prompt + answer + follow-up), tokens."""
OUTPUT_TOKENS = 1200
"""Tokens per answer (generation continues past end-of-sequence)."""
JITTER = 30
"""± tokens on the prompt targets."""
