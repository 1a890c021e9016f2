"""An event loop whose clock moves only when the loop would wait, for tests of timer logic.

A sleep or a timer of N seconds takes no real time, and the loop's clock reads exactly the
sum of the waits so far: timers fall due in their order, at their time, however loaded the
machine is. No I/O: with nothing to run and no timer armed, the loop would wait for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        selector = self._selector  # type: ignore[attr-defined]
        poll = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            ready = poll(0)
            if not ready and timeout:  # the loop would wait: the clock jumps to the next timer
                self.now += timeout
            return ready  # type: ignore[no-any-return]

        selector.select = select

    def time(self) -> float:
        return self.now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` run to its end on a fresh ``VirtualClockLoop``."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
