"""The rich ``Console`` every command prints with.

On a terminal it takes the terminal's width. Piped into a file or another program (where rich
would assume 80 columns and wrap sentences mid-way), text is never wrapped and tables and rules
get ``PIPED_WIDTH`` columns; ``COLUMNS`` in the environment still wins.
"""

from __future__ import annotations

import os

from rich.console import Console

PIPED_WIDTH = 120


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that does not wrap mid-sentence when piped."""
    console = Console(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)
