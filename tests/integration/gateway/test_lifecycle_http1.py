"""The request lifecycle over pooled HTTP/1.1 upstream connections: streams relayed with their
headers and metrics, error answers passed through (the connection kept), a pooled connection
found closed replaced invisibly, a cut stream ended with an error event, a silent upstream
timed out once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, read_request

from expert_router.wire.sse import SSEDecoder

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"
EVENTS = [b'{"choices":[{"index":0,"delta":{"content":"t%d"}}]}' % i for i in range(3)]
ERROR = b'{"error":{"message":"busy","type":"server_error","param":null,"code":null}}'


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Scripted:
    """An OpenAI-like upstream that answers each request as its script says, in order:
    ``ok`` (a stream), ``500`` (an error, kept alive), ``drop`` (close without a byte),
    ``cut`` (the head and one event, then close), ``hang`` (never answer)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.seen: list[str] = []
        self.connections = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        counted = False
        try:
            while True:
                head, _ = await read_request(reader)
                if not counted and not head.startswith(b"GET "):
                    self.connections += 1  # connections that carried requests (not probes)
                    counted = True
                if head.startswith(b"GET "):  # health probe
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                action = self.script.pop(0) if self.script else "ok"
                self.seen.append(action)
                if action == "drop":
                    break
                if action == "hang":
                    await reader.read()  # until the gateway gives up and closes
                    break
                if action == "500":
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json"
                        b"\r\nContent-Length: %d\r\n\r\n%b" % (len(ERROR), ERROR)
                    )
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                await writer.drain()
                await asyncio.sleep(0.01)  # the head and the first event apart, as servers do
                for i, event in enumerate(EVENTS):
                    writer.write(_chunked(b"data: " + event + b"\n\n"))
                    await writer.drain()
                    if action == "cut":
                        await asyncio.sleep(0.01)
                        writer.transport.abort()
                        return
                    if i == 0:
                        await asyncio.sleep(0.01)
                writer.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


@asynccontextmanager
async def scripted(*script: str) -> AsyncIterator[Scripted]:
    up = Scripted(list(script))
    await up.start()
    try:
        yield up
    finally:
        await up.stop()


async def stream(
    s: aiohttp.ClientSession, url: str, text: str
) -> tuple[int, dict[str, str], list[str]]:
    decoder = SSEDecoder()
    events: list[str] = []
    async with s.post(url + CHAT, json=chat_body(text, stream=True)) as resp:
        async for data in resp.content.iter_any():
            events.extend(decoder.feed(data))
        return resp.status, dict(resp.headers), events


def counted(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_pooled_streams_are_relayed_with_headers_and_metrics(
    gateway: Any, two_topics: Any
) -> None:
    async with scripted() as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            results = [await stream(s, g.url, two_topics[0]) for _ in range(5)]
            metrics = g.gateway.metrics.render().decode()
            outstanding = [r.outstanding for r in g.gateway.fleet.replicas.values()]
    assert up.connections == 1  # one connection, kept alive and reused
    for status, headers, events in results:
        assert status == 200
        assert events == [e.decode() for e in EVENTS] + ["[DONE]"]
        assert headers["Content-Type"].startswith("text/event-stream")
        assert headers["x-expert-router-cluster"] == str(two_topics[1])
        assert headers["x-expert-router-replica"] == up.url.removeprefix("http://")
        assert "classify;dur=" in headers["Server-Timing"]
        assert headers["Cache-Control"] == "no-cache"
    cluster = two_topics[1]
    assert counted(metrics, f'expert_router_requests_total{{cluster="{cluster}"') == 5
    assert counted(metrics, "expert_router_overhead_seconds_count") == 5
    assert counted(metrics, "expert_router_upstream_ttft_seconds_count") == 5
    assert outstanding == [0]


async def test_error_answers_pass_through_and_keep_the_connection(
    gateway: Any, two_topics: Any
) -> None:
    async with scripted("500", "ok", "500", "ok") as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            results = []
            for _ in range(4):
                async with s.post(g.url + CHAT, json=chat_body(two_topics[0], stream=True)) as r:
                    results.append((r.status, await r.read()))
            metrics = g.gateway.metrics.render().decode()
    assert up.connections == 1  # an error answer read whole keeps its connection
    assert results[0] == results[2]  # the fresh connection's error and the pooled one's
    assert results[0][0] == 500 and json.loads(results[0][1])["error"]["message"]
    assert results[1][0] == results[3][0] == 200
    assert counted(metrics, "expert_router_upstream_errors_total") == 2


async def test_stale_pooled_connection_is_retried_on_a_fresh_one(
    gateway: Any, two_topics: Any
) -> None:
    async with scripted("ok", "drop", "ok") as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            results = [await stream(s, g.url, two_topics[0]) for _ in range(2)]
            metrics = g.gateway.metrics.render().decode()
            replica = next(iter(g.gateway.fleet.replicas.values()))
    assert up.connections == 2  # the dropped one, then a fresh one for the same request
    assert up.seen == ["ok", "drop", "ok"]
    assert [r[0] for r in results] == [200, 200]
    assert results[1][2][-1] == "[DONE]"
    assert counted(metrics, "expert_router_upstream_errors_total") == 0
    assert counted(metrics, "expert_router_overhead_seconds_count") == 2
    assert replica.healthy and replica.outstanding == 0


async def test_upstream_failing_mid_stream_ends_it_with_an_error_event(
    gateway: Any, two_topics: Any
) -> None:
    async with scripted("ok", "cut", "ok") as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            results = [await asyncio.wait_for(stream(s, g.url, two_topics[0]), 5) for _ in range(3)]
            metrics = g.gateway.metrics.render().decode()
    assert up.connections == 2  # the cut connection is gone: a new one
    status, _, events = results[1]
    assert status == 200
    assert events[0] == EVENTS[0].decode()
    assert json.loads(events[-1])["error"]["code"] == "upstream_interrupted"
    assert results[2][2][-1] == "[DONE]"
    assert 'status="502"' in metrics


async def test_a_first_byte_timeout_is_answered_once(gateway: Any, two_topics: Any) -> None:
    async with scripted("hang", "ok", "hang") as up:
        cfg = make_config({"*": [up.url]}, timeouts={"first_byte": 0.3})
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            results = []
            for _ in range(3):
                t0 = time.perf_counter()
                async with s.post(g.url + CHAT, json=chat_body(two_topics[0], stream=True)) as r:
                    results.append((r.status, await r.read(), time.perf_counter() - t0))
    assert up.connections == 2  # a timed-out connection is closed
    assert up.seen == ["hang", "ok", "hang"]
    fresh, pooled = results[0], results[2]
    assert fresh[:2] == pooled[:2] and fresh[0] == 504
    assert pooled[2] < 1.0  # one first-byte timeout, not a second on a fresh connection


@pytest.mark.parametrize("where", ["send", "send_end"])
async def test_a_relay_fault_ends_the_request_and_frees_its_replica(
    gateway: Any, two_topics: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A fault of the gateway's own while relaying (here the sink raising on the first
    event, or on the last ones) ends that request as an upstream failure, answered with an
    error (a 502 before the head left, else an error event ending the stream), its replica
    released; the next request is served."""
    from expert_router.gateway.http_sink import HttpResponder

    real = getattr(HttpResponder, where)

    def broken(self: HttpResponder, *args: Any) -> bool:
        monkeypatch.setattr(HttpResponder, where, real)  # once
        raise RuntimeError("a relay bug")

    monkeypatch.setattr(HttpResponder, where, broken)
    async with scripted("ok", "ok") as up:
        async with gateway(make_config({"*": [up.url]})) as g, aiohttp.ClientSession() as s:
            async with s.post(g.url + CHAT, json=chat_body(two_topics[0], stream=True)) as r:
                status, body = r.status, await asyncio.wait_for(r.read(), 5)
            replica = next(iter(g.gateway.fleet.replicas.values()))
            if where == "send":  # nothing had left: an error answer
                assert status == 502
                assert json.loads(body)["error"]["code"] == "upstream_protocol_error"
            else:
                events = list(SSEDecoder().feed(body))
                assert status == 200 and events[0] == EVENTS[0].decode()
                assert json.loads(events[-1])["error"]["code"] == "upstream_interrupted"
            assert replica.outstanding == 0
            status, _, events = await asyncio.wait_for(stream(s, g.url, two_topics[0]), 5)
            assert status == 200 and events[-1] == "[DONE]"
