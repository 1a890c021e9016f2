"""The live progress line of a bench run (rich): users active, requests done, tokens/s, errors.

Disabled (a no-op) when output is not a terminal or ``--quiet`` is given. The display reads
the run's ``Counters`` at each refresh, from rich's refresh thread.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from expert_router.bench.client import Counters


class _Line:
    def __init__(self, label: str, requests: int, counters: Counters) -> None:
        self.label = label
        self.requests = requests
        self.counters = counters
        self.t_start = time.monotonic()
        self._last = (self.t_start, 0)
        self._rate = 0.0

    def __rich__(self) -> Text:
        now, c = time.monotonic(), self.counters
        t_prev, tok_prev = self._last
        if now - t_prev >= 0.5:
            self._rate = (c.tokens - tok_prev) / (now - t_prev)
            self._last = (now, c.tokens)
        return Text.assemble(
            (f"{self.label}  ", "bold"),
            f"active {c.active:>5}  requests {c.done:>6}/{self.requests}  ",
            f"tokens/s {self._rate:>9.0f}  ",
            (f"errors {c.errors}", "red" if c.errors else ""),
            f"  {now - self.t_start:6.1f} s",
        )


class Progress:
    """Shows one run at a time; ``show`` returns the ``Counters`` to update."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self._live: Live | None = None
        self._line: _Line | None = None

    def show(self, label: str, requests: int) -> Counters:
        """Start displaying a new run; returns its (fresh) counters."""
        self.close()
        counters = Counters()
        if self.enabled:
            self._line = _Line(label, requests, counters)
            self._live = Live(self._line, console=self.console, refresh_per_second=4)
            self._live.start()
        return counters

    def set(self, counters: Counters) -> None:
        """Replace the displayed counters (worker processes report snapshots)."""
        if self._line is not None:
            self._line.counters = counters

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._line = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
