"""Failures: a replica killed mid-run fails over, mid-stream failures end with an error event,
passive ejection after N failures and re-admission when probes pass again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, post
from polling import eventually

from expert_router.emulator import serve_emulator
from expert_router.emulator.presets import get_preset
from expert_router.emulator.server import EmulatorServer
from expert_router.wire.sse import SSEDecoder

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"


async def stream_events(
    s: aiohttp.ClientSession, url: str, body: Any, started: list[int] | None = None
) -> tuple[int, list[str]]:
    """A stream's status and events; ``started`` gets one entry when the first event came."""
    events: list[str] = []
    decoder = SSEDecoder()
    async with s.post(url + CHAT, json=body) as resp:
        async for chunk in resp.content.iter_any():
            if not events and started is not None:
                started.append(1)
            events.extend(decoder.feed(chunk))
        return resp.status, events


async def test_replica_killed_mid_run_fails_over(gateway: Any, two_topics: Any) -> None:
    text = two_topics[0]
    async with serve_emulator("cpu-tiny", tpot_ms=10) as keep:
        doomed = EmulatorServer(get_preset("cpu-tiny", tpot_ms=10))
        await doomed.start()
        try:
            cfg = make_config({"*": [keep.url, doomed.url]}, health={"eject_after": 2})
            async with gateway(cfg) as g, aiohttp.ClientSession() as s:
                body = chat_body(text, stream=True, max_tokens=150)  # ~1.5 s per stream
                started: list[int] = []
                running = [
                    asyncio.create_task(stream_events(s, g.url, body, started)) for _ in range(6)
                ]
                await eventually(lambda: len(started) == 6, 5)  # every stream under way
                assert doomed.engine.num_running >= 1
                await doomed.stop()  # killed with streams in flight
                results = await asyncio.wait_for(asyncio.gather(*running), 10)
                for status, events in results:
                    assert status == 200
                    last = events[-1]
                    # a complete stream, or one that ends with an error event: never a hang
                    assert last == "[DONE]" or json.loads(last)["error"]["code"] == (
                        "upstream_interrupted"
                    )
                assert any(events[-1] != "[DONE]" for _, events in results)
                # new requests all succeed on the surviving replica
                after = [
                    await post(s, g.url + CHAT, chat_body(text, max_tokens=2)) for _ in range(8)
                ]
                assert [a[0] for a in after] == [200] * 8
                assert {a[1]["x-expert-router-replica"] for a in after} == {
                    keep.url.removeprefix("http://")
                }
                fleet = g.gateway.fleet
                dead = fleet.replicas[doomed.url.removeprefix("http://")]
                assert not dead.healthy
                metrics = g.gateway.metrics.render().decode()
                assert "expert_router_ejections_total" in metrics
        finally:
            await doomed.stop()


async def test_retry_before_first_byte_and_readmission(gateway: Any, two_topics: Any) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as live:
        doomed = EmulatorServer(get_preset("cpu-tiny", tpot_ms=1))
        await doomed.start()
        port = int(doomed.url.rsplit(":", 1)[1])
        await doomed.stop()  # nothing listens there now
        cfg = make_config(
            {"*": [live.url, doomed.url]},
            health={"interval": 0.1, "eject_after": 3},
        )
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            fleet = g.gateway.fleet
            dead = fleet.replicas[f"127.0.0.1:{port}"]
            for _ in range(10):
                status, _, _ = await post(s, g.url + CHAT, chat_body(two_topics[0]))
                assert status == 200  # connection refused -> retried on the live replica
            await eventually(lambda: not dead.healthy, 5)
            async with s.get(g.url + "/ready") as resp:
                assert resp.status == 200  # one healthy replica is enough
            revived = EmulatorServer(get_preset("cpu-tiny", tpot_ms=1), port=port)
            await revived.start()
            try:
                await eventually(lambda: dead.healthy, 5)
                seen = set()
                for _ in range(20):
                    _, hdrs, _ = await post(s, g.url + CHAT, chat_body(two_topics[0]))
                    seen.add(hdrs["x-expert-router-replica"])
                assert f"127.0.0.1:{port}" in seen
            finally:
                await revived.stop()


async def test_a_refused_replica_is_retried_elsewhere_once_then_left_out(
    gateway: Any, two_topics: Any
) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as live:
        doomed = EmulatorServer(get_preset("cpu-tiny", tpot_ms=1))
        await doomed.start()
        await doomed.stop()  # nothing listens there now
        dead_name = doomed.url.removeprefix("http://")
        cfg = make_config({"*": [live.url, doomed.url]})
        async with gateway(cfg, probes=False) as g, aiohttp.ClientSession() as s:
            for _ in range(30):  # each is drawn to the dead one with p = 1/2 while it is in
                status, hdrs, _ = await post(s, g.url + CHAT, chat_body(two_topics[0]))
                assert status == 200 and hdrs["x-expert-router-replica"] != dead_name
            text = g.gateway.metrics.render().decode()
    # the first request drawn to the dead replica was refused and retried on the live one;
    # the refusal ejected it, so no later request went there
    assert f'expert_router_retries_total{{replica="{dead_name}"}} 1.0' in text
    assert 'expert_router_route_decisions_total{reason="failover"} 1.0' in text


async def test_all_replicas_down_is_503_then_ready_fails(gateway: Any, two_topics: Any) -> None:
    doomed = EmulatorServer(get_preset("cpu-tiny", tpot_ms=1))
    await doomed.start()
    await doomed.stop()
    cfg = make_config({"*": [doomed.url]}, health={"interval": 0.05, "eject_after": 1})
    async with gateway(cfg) as g, aiohttp.ClientSession() as s:
        await eventually(lambda: not g.gateway.fleet.any_healthy(), 5)
        async with s.get(g.url + "/ready") as resp:
            assert resp.status == 503
        status, hdrs, raw = await post(s, g.url + CHAT, chat_body(two_topics[0]))
        assert status == 503
        assert json.loads(raw)["error"]["code"] == "no_healthy_replica"
        assert hdrs["Retry-After"] == "1"
        assert hdrs["x-expert-router-cluster"] == str(two_topics[1])
