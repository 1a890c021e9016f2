"""Spill-over under saturation, the bounded wait queue and its 503 with Retry-After."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, post
from polling import eventually

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"


def host(url: str) -> str:
    return url.removeprefix("http://")


async def hold(
    s: aiohttp.ClientSession, url: str, text: str, tokens: int, started: asyncio.Event
) -> int:
    """A streaming request that keeps one slot busy for ``tokens`` x TPOT; ``started`` is set
    once its first bytes arrived (its slot is taken)."""
    async with s.post(url + CHAT, json=chat_body(text, stream=True, max_tokens=tokens)) as r:
        async for _ in r.content.iter_any():
            started.set()
        return r.status


async def test_saturated_home_pool_spills_to_next_cluster(
    gateway: Any, two_topics: Any, clf: Any
) -> None:
    text, cluster, _, _ = two_topics
    second = int(clf.predict(text).ranked[1])
    async with (
        serve_emulator("cpu-tiny", tpot_ms=5) as home,
        serve_emulator("cpu-tiny", tpot_ms=5) as other,
    ):
        cfg = make_config(
            {str(cluster): [{"url": home.url, "max_concurrency": 1}], "*": [other.url]}
        )
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            started = asyncio.Event()
            busy = asyncio.create_task(hold(s, g.url, text, 100, started))
            await started.wait()
            status, hdrs, _ = await post(s, g.url + CHAT, chat_body(text))
            assert status == 200
            assert hdrs["x-expert-router-replica"] == host(other.url)
            assert hdrs["x-expert-router-cluster"] == str(second)
            assert await busy == 200
            # free again: back home
            _, hdrs, _ = await post(s, g.url + CHAT, chat_body(text))
            assert hdrs["x-expert-router-replica"] == host(home.url)
            metrics = g.gateway.metrics.render().decode()
            assert (
                f'expert_router_spillovers_total{{from_cluster="{cluster}",'
                f'to_cluster="{second}"}} 1.0' in metrics
            )
            assert 'expert_router_route_decisions_total{reason="spillover"} 1.0' in metrics


async def test_never_policy_queues_then_serves(gateway: Any, two_topics: Any) -> None:
    text, cluster, _, _ = two_topics
    async with serve_emulator("cpu-tiny", tpot_ms=5) as home, serve_emulator("cpu-tiny") as other:
        cfg = make_config(
            {str(cluster): [{"url": home.url, "max_concurrency": 1}], "*": [other.url]},
            spillover={"policy": "never"},
            limits={"queue_timeout": 5},
        )
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            started = asyncio.Event()
            busy = asyncio.create_task(hold(s, g.url, text, 40, started))
            await started.wait()
            status, hdrs, _ = await post(s, g.url + CHAT, chat_body(text))
            assert status == 200 and busy.done()  # waited for the slot
            assert hdrs["x-expert-router-replica"] == host(home.url)
            route_ms = float(hdrs["Server-Timing"].split("route;dur=")[1])
            assert route_ms > 20  # the wait shows in Server-Timing
            metrics = g.gateway.metrics.render().decode()
            # counted once, by how it ended: served by its nearest cluster, after a wait
            assert 'expert_router_route_decisions_total{reason="nearest"} 2.0' in metrics
            assert "expert_router_queue_wait_seconds_count 1.0" in metrics


async def test_queue_timeout_and_full_queue_give_503(gateway: Any, two_topics: Any) -> None:
    text, cluster, _, _ = two_topics
    async with serve_emulator("cpu-tiny", tpot_ms=5) as home:
        cfg = make_config(
            {"*": [{"url": home.url, "max_concurrency": 1}]},
            limits={"queue_timeout": 0.2, "queue_size": 1},
        )
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            started = asyncio.Event()
            busy = asyncio.create_task(hold(s, g.url, text, 200, started))
            await started.wait()
            waiting = asyncio.create_task(post(s, g.url + CHAT, chat_body(text)))
            fleet = g.gateway.fleet
            await eventually(lambda: fleet.waiting == 1)  # it is in the queue
            status, hdrs, raw = await post(s, g.url + CHAT, chat_body(text))  # queue is full
            assert status == 503 and hdrs["Retry-After"] == "1"
            assert json.loads(raw)["error"]["code"] == "no_capacity"
            assert hdrs["x-expert-router-cluster"] == str(cluster)
            status, hdrs, raw = await waiting  # timed out in the queue
            assert status == 503 and json.loads(raw)["error"]["code"] == "no_capacity"
            assert "waited 0.2s" in json.loads(raw)["error"]["message"]
            busy.cancel()
            replica = fleet.replicas[host(home.url)]
            await eventually(lambda: replica.outstanding == 0)
