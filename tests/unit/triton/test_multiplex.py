"""Decoupled streams: requests served concurrently, one write at a time, handlers cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from expert_router.wire.kserve import serve_stream


async def _requests(items: list[tuple[str, int]]) -> AsyncIterator[tuple[str, int]]:
    for item in items:
        yield item


class Context:
    """Records writes and fails if two overlap (grpc.aio allows one at a time)."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.busy = False

    async def write(self, message: Any) -> None:
        assert not self.busy, "concurrent writes"
        self.busy = True
        await asyncio.sleep(0.001)
        self.busy = False
        self.written.append(message)


async def test_requests_run_concurrently_and_interleave() -> None:
    async def handle(req: tuple[str, int]) -> AsyncIterator[str]:
        name, n = req
        for i in range(n):
            await asyncio.sleep(0.01)
            yield f"{name}{i}"

    ctx = Context()
    await serve_stream(_requests([("a", 3), ("b", 3)]), ctx, handle)
    got = ctx.written
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert got.index("b0") < got.index("a2")  # b did not wait for a to finish


async def test_cancelling_the_call_cancels_running_handlers() -> None:
    cancelled = asyncio.Event()
    first = asyncio.Event()

    async def handle(req: tuple[str, int]) -> AsyncIterator[str]:
        try:
            yield "first"
            first.set()
            await asyncio.sleep(30)
            yield "never"
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ctx = Context()
    task = asyncio.create_task(serve_stream(_requests([("a", 1)]), ctx, handle))
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set() and ctx.written == ["first"]
