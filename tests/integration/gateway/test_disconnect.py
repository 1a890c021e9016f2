"""A client that disconnects cancels its upstream request (seen on the emulator's engine)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config
from polling import eventually

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("stream", "warm"),
    [(True, False), (True, True), (False, False)],
    ids=["stream", "stream-pooled", "no-stream"],
)
async def test_disconnect_cancels_upstream(
    gateway: Any, two_topics: Any, stream: bool, warm: bool
) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=5) as srv:
        async with gateway(make_config({"*": [srv.url]})) as g:
            engine = srv.engine
            session = aiohttp.ClientSession()
            body = chat_body(two_topics[0], stream=stream, max_tokens=2000)  # ~10 s
            url = g.url + "/v1/chat/completions"
            if warm:  # a pooled upstream connection: the stream rides the callback relay
                short = chat_body(two_topics[0], stream=True, max_tokens=2)
                async with session.post(url, json=short) as resp:
                    await resp.read()
            if stream:
                resp = await session.post(url, json=body)
                await resp.content.readany()  # the stream has started
            else:
                pending = asyncio.create_task(session.post(url, json=body))
                await eventually(lambda: engine.num_running > 0, 5)
            assert engine.num_running == 1
            before = engine.cancelled_total
            t0 = time.perf_counter()
            if stream:
                resp.close()  # drops the connection
            else:
                pending.cancel()  # drops the connection while waiting for the answer
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
            await session.close()
            await eventually(lambda: engine.cancelled_total > before, 2)
            elapsed = time.perf_counter() - t0
            assert engine.cancelled_total == before + 1
            assert engine.num_running == 0
            print(f"upstream cancelled {elapsed * 1000:.1f} ms after the client left")
            assert elapsed < 0.5  # typically a few ms; generous on a shared machine
            fleet = g.gateway.fleet
            await eventually(lambda: all(r.outstanding == 0 for r in fleet.replicas.values()))
