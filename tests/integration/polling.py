"""Waiting, in a test, for what another task or process brings about: one poll, one failure.

Tests synchronise on events where the code under test offers one; where it does not (a count
on a server, a replica's health), ``eventually`` polls the condition on the running loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], object], within: float = 5.0, step: float = 0.005) -> None:
    """Return once ``check()`` is true; fail the test (``AssertionError``) when it is still
    false after ``within`` seconds. Polled every ``step`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition still false after {within:g} s")
        await asyncio.sleep(step)
