"""An emulated expert served from a background thread, so the bench command can run its own
event loop (and worker processes) against it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from expert_router.emulator import serve_emulator


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        async with serve_emulator(
            "cpu-tiny", port=0, tpot_ms=2, ttft_ms=5, max_batch=64, kv_tokens=1_000_000
        ) as srv:
            box["url"] = srv.url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "emulator did not start"
    try:
        yield str(box["url"])
    finally:
        loop = box["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        stop = box["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
