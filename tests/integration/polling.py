"""Waiting, in a test, for what another task or process brings about: one poll, one failure.

Tests synchronise on events where the code under test offers one; where it does not (a count
on a server, a replica's health, a process coming up), ``eventually`` polls the condition on
the running loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], object | Awaitable[object]],
    within: float = 5.0,
    step: float = 0.005,
    say: Callable[[], str] | None = None,
) -> None:
    """Return once ``check()`` is true (awaited when it is a coroutine function); fail the
    test (``AssertionError``, with ``say()`` when given: a log's tail) when it is still false
    after ``within`` seconds. Polled every ``step`` seconds. An assertion inside ``check`` (a
    process that died) fails at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if loop.time() > deadline:
            context = f": {say()}" if say is not None else ""
            raise AssertionError(f"condition still false after {within:g} s{context}")
        await asyncio.sleep(step)
