"""A graceful stop: streams in flight finish, those that outlive the drain end with an error
event, ``/ready`` answers 503 meanwhile, SIGTERM drains and a second signal stops at once."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config
from polling import eventually
from test_serve_cli import start_serve

from expert_router.emulator import serve_emulator
from expert_router.wire.sse import SSEDecoder

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"


async def first_event_then_rest(resp: aiohttp.ClientResponse, first: asyncio.Event) -> list[str]:
    """Read a stream's events; ``first`` is set once the first one arrived."""
    decoder = SSEDecoder()
    events: list[str] = []
    async for data in resp.content.iter_any():
        events.extend(decoder.feed(data))
        if events:
            first.set()
    return events


async def test_drain_lets_streams_finish_and_ends_the_late_ones(gateway: Any) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=20) as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            short_first, long_first = asyncio.Event(), asyncio.Event()

            async def stream(tokens: int, first: asyncio.Event) -> tuple[int, list[str]]:
                body = chat_body("hello there", stream=True, max_tokens=tokens)
                async with s.post(g.url + CHAT, json=body) as resp:
                    return resp.status, await first_event_then_rest(resp, first)

            short = asyncio.create_task(stream(10, short_first))  # ~0.2 s: within the drain
            long = asyncio.create_task(stream(500, long_first))  # ~10 s: outlives it
            await asyncio.gather(short_first.wait(), long_first.wait())
            async with aiohttp.ClientSession() as probe:  # a kept-alive connection, idle
                async with probe.get(g.url + "/ready") as resp:
                    assert resp.status == 200
                drain = asyncio.create_task(g.drain(1.0))
                await asyncio.sleep(0)
                async with probe.get(g.url + "/ready") as resp:  # on that connection
                    assert resp.status == 503
                    assert (await resp.json())["status"] == "draining"
                    assert resp.headers["Connection"] == "close"
            status, events = await short
            assert status == 200 and events[-1] == "[DONE]"
            status, events = await long
            assert status == 200
            assert json.loads(events[-1])["error"]["code"] == "shutting_down"
            await asyncio.wait_for(drain, 5)
            with pytest.raises(aiohttp.ClientConnectionError):  # no longer listening
                async with s.get(g.url + "/health") as resp:
                    pass
        assert up.engine.num_running == 0  # the cut stream was cancelled upstream too


async def wait_for_first_event(resp: aiohttp.ClientResponse) -> None:
    async for data in resp.content.iter_any():
        if b"data:" in data:
            return


async def test_sigterm_drains_and_a_second_signal_stops_at_once() -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=20) as up:
        proc, url = await start_serve("--expert", f"*={up.url}")
        async with aiohttp.ClientSession() as s:
            body = chat_body("hello", stream=True, max_tokens=30)
            async with s.post(url + CHAT, json=body) as resp:
                await wait_for_first_event(resp)
                proc.send_signal(signal.SIGTERM)
                rest = await resp.read()
            assert rest.rstrip().endswith(b"data: [DONE]")  # the stream went on to its end
            assert await asyncio.wait_for(proc.wait(), 15) == 0

        proc, url = await start_serve("--expert", f"*={up.url}")
        async with aiohttp.ClientSession() as s, aiohttp.ClientSession() as probe:
            async with probe.get(url + "/ready") as ready:  # a kept-alive connection
                assert ready.status == 200

            async def draining() -> bool:  # the first signal was handled (on that connection)
                async with probe.get(url + "/ready") as ready:
                    return ready.status == 503

            body = chat_body("hello", stream=True, max_tokens=2000)
            async with s.post(url + CHAT, json=body) as resp:
                await wait_for_first_event(resp)
                proc.send_signal(signal.SIGTERM)
                await eventually(draining, within=5)  # two signals at once could merge in one
                proc.send_signal(signal.SIGTERM)  # impatient: stop now
                assert await asyncio.wait_for(proc.wait(), 5) == 128 + signal.SIGTERM
