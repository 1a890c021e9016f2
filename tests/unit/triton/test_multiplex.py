"""Decoupled stream multiplexing: requests served concurrently, left-over tasks cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from expert_router.wire.triton import multiplex


async def _requests(items: list[tuple[str, int]]) -> AsyncIterator[tuple[str, int]]:
    for item in items:
        yield item


async def test_requests_run_concurrently_and_interleave() -> None:
    async def handle(req: tuple[str, int]) -> AsyncIterator[str]:
        name, n = req
        for i in range(n):
            await asyncio.sleep(0.01)
            yield f"{name}{i}"

    got = [m async for m in multiplex(_requests([("a", 3), ("b", 3)]), handle)]
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert got.index("b0") < got.index("a2")  # b did not wait for a to finish


async def test_leaving_early_cancels_running_handlers() -> None:
    cancelled = asyncio.Event()

    async def handle(req: tuple[str, int]) -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.sleep(30)
            yield "never"
        except asyncio.CancelledError:
            cancelled.set()
            raise

    gen = multiplex(_requests([("a", 1)]), handle)
    assert await gen.__anext__() == "first"
    await gen.aclose()
    assert cancelled.is_set()
