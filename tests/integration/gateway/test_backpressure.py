"""A slow client pauses the upstream (no unbounded buffering) and still gets every byte."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gwhelpers import make_config

from expert_router.gateway.http_ingress import HttpConnection

pytestmark = pytest.mark.integration
EVENT = b"data: " + b"x" * 4000 + b"\n\n"
N = 2000  # 8 MB: more than the kernel buffers of a small-window client absorb
BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "pooled"])
async def test_slow_client_gets_everything(
    gateway: Any, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    async def blast(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(N):
            await resp.write(EVENT)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", blast)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()

    pauses = 0
    paused = asyncio.Event()
    original = HttpConnection.pause_writing

    def counting_pause(self: HttpConnection) -> None:
        nonlocal pauses
        pauses += 1
        paused.set()
        original(self)

    monkeypatch.setattr(HttpConnection, "pause_writing", counting_pause)
    try:
        cfg = make_config({"*": [f"http://127.0.0.1:{unused_tcp_port}"]})
        async with gateway(cfg) as g:
            if warm:  # a pooled upstream connection: the callback relay pauses and resumes
                async with aiohttp.ClientSession() as s:
                    async with s.post(g.url + "/v1/chat/completions", json=BODY) as resp:
                        assert len(await resp.read()) > len(EVENT) * N
                pauses = 0
                paused.clear()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", g.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
            body = json.dumps(BODY).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            async with asyncio.timeout(10):  # the client reads nothing until the gateway pauses
                await paused.wait()
            raw = await asyncio.wait_for(reader.read(), 20)
            writer.close()
    finally:
        await runner.cleanup()
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    body_out = b""
    while True:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body_out += rest[:size]
        chunked = rest[size + 2 :]
    assert body_out == EVENT * N + b"data: [DONE]\n\n"
    assert pauses >= 1  # the gateway's buffer for this client filled: the upstream paused
