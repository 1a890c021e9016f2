"""The gateway's HTTP/1.1 ingress on raw sockets: keep-alive and pipelined streaming requests,
another route on the same connection, chunked uploads, HTTP/1.0, bad bodies, and a client
that leaves mid-stream. One parser and one connection class answer them all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from polling import eventually

from expert_router.bench.calibrate import paced_app
from expert_router.config import validate_gateway_config
from expert_router.gateway import serve_gateway

BODY = json.dumps(
    {
        "model": "m",
        "stream": True,
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "The goalkeeper saved a penalty."}],
    }
).encode()


def post(body: bytes = BODY, extra: str = "") -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
async def gateway_url() -> AsyncIterator[tuple[str, int]]:
    runner = web.AppRunner(paced_app(1.0, 2.0), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = f"http://127.0.0.1:{runner.addresses[0][1]}"
    config = validate_gateway_config({"experts": {"*": {"replicas": [{"url": up}]}}})
    try:
        async with serve_gateway(config, port=0, probes=False) as gw:
            yield "127.0.0.1", gw.port
    finally:
        await runner.cleanup()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names), de-chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body
        body += data[:-2]


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.startswith(b"data:")]


async def test_keep_alive_pipelined_then_another_route_on_the_connection(
    gateway_url: tuple[str, int],
) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*gateway_url), 5)
    try:
        writer.write(post() + post())  # two requests in one write: answered in order
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            status, headers, body = await asyncio.wait_for(read_response(reader), 5)
            assert status == 200 and headers["content-type"].startswith("text/event-stream")
            assert headers["x-expert-router-cluster"] and headers["x-expert-router-replica"]
            assert "classify;dur=" in headers["server-timing"]
            assert "server" not in headers  # no Server header: nothing to fingerprint
            assert len(events(body)) == 4 and events(body)[-1] == b"data: [DONE]"
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200  # the health route, on the same connection
        writer.write(post())  # and the proxy route again after it
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200 and len(events(body)) == 4
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (post(b"{not json"), 400),
        (post(b'{"stream": true}'), 400),
        (post(BODY).replace(b"HTTP/1.1", b"HTTP/1.0", 1), 200),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%b\r\n0\r\n\r\n" % (len(BODY), BODY),
            200,
        ),
        (post(BODY.replace(b'"stream": true', b'"stream": false')), 200),
        (post(extra="Connection: close\r\n"), 200),
    ],
)
async def test_odd_requests_are_answered_in_their_framing(
    gateway_url: tuple[str, int], request_bytes: bytes, status: int
) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*gateway_url), 5)
    try:
        writer.write(request_bytes)
        if b"HTTP/1.0" in request_bytes[:60]:
            data = await asyncio.wait_for(reader.read(-1), 5)  # HTTP/1.0: body until close
            assert data.startswith(b"HTTP/1.") and b" 200 " in data[:20]
            assert data.count(b"data:") == 4
            return
        got, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert got == status, body
        assert "x-expert-router-cluster" in headers
        if status == 400:
            assert json.loads(body)["error"]["type"] == "invalid_request_error"
        if b"Connection: close" in request_bytes:
            assert headers.get("connection") == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the answer
    finally:
        writer.close()


async def test_client_leaving_mid_stream_frees_the_replica(gateway_url: tuple[str, int]) -> None:
    slow = json.loads(BODY)
    slow["max_tokens"] = 2000  # ~4 s of tokens
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*gateway_url), 5)
    writer.write(post(json.dumps(slow).encode()))
    await asyncio.wait_for(reader.readuntil(b"data:"), 5)
    writer.close()
    host, port = gateway_url

    async def replica_free() -> bool:  # in flight drops to 0 once the upstream is cancelled
        r2, w2 = await asyncio.open_connection(host, port)
        w2.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = (await r2.read()).decode()
        w2.close()
        line = [x for x in text.splitlines() if x.startswith("expert_router_in_flight{")]
        return bool(line) and float(line[0].rsplit(" ", 1)[1]) == 0.0

    await eventually(replica_free, within=2.0, step=0.02)
