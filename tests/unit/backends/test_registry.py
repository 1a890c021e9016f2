"""The backend registry picks the adapter by URL scheme; the OpenAI adapter maps errors."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from listen import fetch

from expert_router.backends import REGISTRY, BackendRequest, BackendSettings, make_backend
from expert_router.backends.http1 import Http1Backend
from expert_router.backends.openai import OpenAIBackend
from expert_router.errors import BackendStatusError, BackendUnavailable, ConfigError


def settings(session: aiohttp.ClientSession, url: str) -> BackendSettings:
    return BackendSettings(url, session, 1.0, 5.0, 5.0, api_key="sk-up")


async def test_registry_by_scheme() -> None:
    assert set(REGISTRY) >= {"http", "https"}
    async with aiohttp.ClientSession() as s:
        assert isinstance(make_backend("http", settings(s, "http://h:1")), Http1Backend)
        assert isinstance(make_backend("https", settings(s, "https://h:1")), OpenAIBackend)
        assert isinstance(make_backend("aiohttp+http", settings(s, "http://h:1")), OpenAIBackend)
        for scheme, cls in (("grpc", "TritonGrpcBackend"), ("triton-http", "TritonHttpBackend")):
            b = make_backend(scheme, settings(s, f"{scheme}://h:1?model=m"))
            assert type(b).__name__ == cls
            await b.aclose()
        with pytest.raises(ConfigError, match="unknown protocol 'ftp'"):
            make_backend("ftp", settings(s, "ftp://h:1"))


@pytest.mark.parametrize("scheme", ["http", "aiohttp+http"])
async def test_backend_relays_bytes_and_maps_errors(unused_tcp_port: int, scheme: str) -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append((body, request.headers.get("Authorization")))
        if b"fail" in body:
            return web.json_response({"error": {"message": "no"}}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        async with aiohttp.ClientSession() as s:
            b = make_backend(scheme, settings(s, f"{scheme}://127.0.0.1:{unused_tcp_port}/v1"))
            rec, _ = await fetch(b, BackendRequest("/v1/chat/completions", b'{"x": 1}', True))
            assert rec.status == 200 and rec.content_type == "text/event-stream"
            assert rec.ended and rec.data == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert seen[0] == (b'{"x": 1}', "Bearer sk-up")
            rec, _ = await fetch(b, BackendRequest("/v1/chat/completions", b'"fail"', False))
            assert isinstance(rec.error, BackendStatusError)
            assert rec.error.status == 503 and rec.error.retryable
            assert b'"no"' in rec.error.body
            assert await b.probe("/health", 1.0) == 200
            assert await b.probe("/nothing", 1.0) == 404
    finally:
        await runner.cleanup()
    async with aiohttp.ClientSession() as s:
        b = make_backend(scheme, settings(s, f"{scheme}://127.0.0.1:{unused_tcp_port}"))
        rec, _ = await fetch(b, BackendRequest("/v1/completions", b"{}", False))
        assert isinstance(rec.error, BackendUnavailable) and rec.error.retryable
        with pytest.raises(BackendUnavailable):
            await b.probe("/health", 1.0)
