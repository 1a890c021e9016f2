"""Whose fault is it: a client's bad request never ejects a replica; a replica's own failures
do; a 429 backs the replica off for its Retry-After (the request goes elsewhere)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, post, read_request
from polling import eventually

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"
OK = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'


def answer(status: int, body: bytes, extra: bytes = b"") -> bytes:
    phrase = b"OK" if status == 200 else b"Error"
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        phrase,
        len(body),
        extra,
        body,
    )


def error(kind: str, message: str = "nope") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


@asynccontextmanager
async def upstream(answers: list[bytes]) -> AsyncIterator[list[bytes]]:
    """An upstream answering POSTs with ``answers`` in turn (then 200), probes with 200;
    yields the list of requests it served."""
    served: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, _ = await read_request(reader)
                if head.startswith(b"GET "):
                    writer.write(answer(200, b"{}"))
                else:
                    served.append(head)
                    writer.write(answers.pop(0) if answers else answer(200, OK))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    served.append(b"http://127.0.0.1:%d" % server.sockets[0].getsockname()[1])
    try:
        yield served
    finally:
        server.close()


def health(g: Any) -> dict[str, tuple[bool, int, bool]]:
    return {n: (r.healthy, r.failures, r.paused) for n, r in g.gateway.fleet.replicas.items()}


CLIENT_FAULTS = {
    "400": answer(400, error("invalid_request_error")),
    "404-unknown-model": answer(404, error("invalid_request_error", "model not found")),
    "422-tgi-validation": answer(422, b'{"error": "Input validation error", "error_type": "x"}'),
    "500-blaming-the-request": answer(500, error("invalid_request_error", "prompt too long")),
}


@pytest.mark.parametrize("reply", CLIENT_FAULTS.values(), ids=CLIENT_FAULTS.keys())
async def test_client_errors_never_count_against_the_replica(gateway: Any, reply: bytes) -> None:
    async with upstream([reply] * 5) as served:
        url = served.pop(0).decode()
        cfg = make_config({"*": [url]}, health={"eject_after": 2})
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            for _ in range(5):
                status, _, body = await post(s, g.url + CHAT, chat_body("hi"))
                assert status == int(reply[9:12]) and "error" in json.loads(body)
            assert health(g) == {url.removeprefix("http://"): (True, 0, False)}
            status, _, _ = await post(s, g.url + CHAT, chat_body("hi"))
            assert status == 200
            text = g.gateway.metrics.render().decode()
            assert "expert_router_ejections_total{" not in text
            assert "expert_router_upstream_errors_total{" not in text


async def test_server_errors_eject_after_eject_after(gateway: Any) -> None:
    async with upstream([answer(500, error("server_error", "CUDA out of memory"))] * 2) as served:
        url = served.pop(0).decode()
        cfg = make_config({"*": [url]}, health={"eject_after": 2, "interval": 60})
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            for _ in range(2):
                status, _, _ = await post(s, g.url + CHAT, chat_body("hi"))
                assert status == 500
            assert health(g)[url.removeprefix("http://")][0] is False  # ejected
            status, _, body = await post(s, g.url + CHAT, chat_body("hi"))
            assert status == 503 and json.loads(body)["error"]["code"] == "no_healthy_replica"


async def test_429_backs_off_the_replica_and_the_request_goes_elsewhere(gateway: Any) -> None:
    busy = answer(429, error("rate_limit_error", "slow down"), b"Retry-After: 30\r\n")
    async with upstream([busy]) as a, upstream([]) as b:
        url_a, url_b = a.pop(0).decode(), b.pop(0).decode()
        cfg = make_config({"*": [url_a, url_b]}, health={"interval": 60})
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            for _ in range(6):  # whichever replica is drawn first, a's 429 sends it to b
                status, _, _ = await post(s, g.url + CHAT, chat_body("hi"))
                assert status == 200
            name_a = url_a.removeprefix("http://")
            assert health(g)[name_a] == (True, 0, True)  # backing off, not ejected
            assert len(a) == 1  # a was asked once, answered 429, and is left alone since
            text = g.gateway.metrics.render().decode()
            assert f'expert_router_backoffs_total{{replica="{name_a}"}} 1.0' in text
            assert 'expert_router_route_decisions_total{reason="failover"} 1.0' in text


async def test_a_429_with_nowhere_else_to_go_is_passed_on_with_retry_after(gateway: Any) -> None:
    busy = answer(429, error("rate_limit_error", "slow down"), b"Retry-After: 7\r\n")
    async with upstream([busy]) as served:
        url = served.pop(0).decode()
        async with gateway(make_config({"*": [url]})) as g, aiohttp.ClientSession() as s:
            status, headers, body = await post(s, g.url + CHAT, chat_body("hi"))
            assert status == 429 and headers["Retry-After"] == "7"
            assert json.loads(body)["error"]["message"] == "slow down"


async def test_an_over_long_request_to_a_real_expert_ejects_nothing(gateway: Any) -> None:
    """The live case: max_tokens beyond the expert's context is the expert's own 400."""
    async with serve_emulator("cpu-tiny") as up:
        cfg = make_config({"*": [up.url]}, health={"eject_after": 3})
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            for _ in range(5):
                status, _, body = await post(s, g.url + CHAT, chat_body("hi", max_tokens=10**8))
                assert status == 400 and "context" in json.loads(body)["error"]["message"]
            assert all(healthy for healthy, _, _ in health(g).values())
            status, _, _ = await post(s, g.url + CHAT, chat_body("hi"))
            assert status == 200


async def test_a_refused_connection_ejects_at_once_and_ready_says_so(gateway: Any) -> None:
    async with upstream([]) as served:
        url = served.pop(0).decode()
    # nothing listens at ``url`` any more
    cfg = make_config({"*": [url]}, health={"eject_after": 3, "interval": 60})
    async with gateway(cfg) as g, aiohttp.ClientSession() as s:  # its first probe refused
        await eventually(lambda: not g.gateway.fleet.any_healthy(), 5)
    async with gateway(cfg, probes=False) as g, aiohttp.ClientSession() as s:
        async with s.get(g.url + "/ready") as resp:
            assert resp.status == 200  # healthy until shown otherwise
        status, _, body = await post(s, g.url + CHAT, chat_body("hi"))
        assert status == 502 and json.loads(body)["error"]["code"] == "upstream_unavailable"
        async with s.get(g.url + "/ready") as resp:
            assert resp.status == 503  # one refusal is enough: nothing listens there
