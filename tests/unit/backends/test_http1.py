"""The lean HTTP/1.1 client against scripted raw servers: framing split at every byte,
content-length and close-delimited bodies, keep-alive reuse, stale connections, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest

from expert_router.backends import BackendRequest, BackendSettings
from expert_router.backends.http1 import Http1Backend
from expert_router.errors import BackendStatusError, BackendTimeout, BackendUnavailable

REQ = BackendRequest("/v1/completions", b'{"prompt": "x"}', True)
PIECES = [b'data: {"a": 1}\n\n', b"data: [DONE]\n\n"]
SSE = b"".join(PIECES)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in PIECES)
    + b"0\r\n\r\n"
)


@asynccontextmanager
async def raw_server(
    respond: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[tuple[str, list[bytes]]]:
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await respond(reader, writer)  # type: ignore[misc]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def recorder(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle(reader, writer)

    server = await asyncio.start_server(recorder, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


def backend(url: str, session: aiohttp.ClientSession, **kw: float) -> Http1Backend:
    opts = {"connect_timeout": 1.0, "first_byte_timeout": 5.0, "read_timeout": 5.0, **kw}
    return Http1Backend(BackendSettings(url, session, **opts))  # type: ignore[arg-type]


async def collect(b: Http1Backend) -> tuple[int, str, bytes]:
    up = await b.start(REQ)
    data = await up.read()
    up.close()
    return up.status, up.content_type, data


@pytest.mark.parametrize("step", [1, 3, 7, len(CHUNKED)])
async def test_chunked_split_anywhere_and_keepalive_reuse(step: int) -> None:
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(3):
            request = await read_request(reader)
            assert request.startswith(b"POST /v1/completions HTTP/1.1\r\n")
            assert request.endswith(b'{"prompt": "x"}')
            for i in range(0, len(CHUNKED), step):
                writer.write(CHUNKED[i : i + step])
                await writer.drain()
                await asyncio.sleep(0)

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        b = backend(url, s)
        for _ in range(3):
            assert await collect(b) == (200, "text/event-stream", SSE)
        assert connections == 1
        await b.aclose()


async def test_content_length_and_close_delimited_bodies() -> None:
    bodies = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
    ]

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(bodies.pop(0))
        await writer.drain()

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        b = backend(url, s)
        assert await collect(b) == (200, "application/json", b"hello")
        assert await collect(b) == (200, "text/plain", b"until close")
        await b.aclose()


async def test_pipe_to_sink_and_mid_stream_failure() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[: CHUNKED.index(b"e\r\ndata: [")])  # first event, then the line drops
        await writer.drain()
        await asyncio.sleep(0.05)

    class Sink:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def write(self, data: bytes) -> bool:
            self.got.append(data)
            return True

        async def drain(self) -> None:
            return None

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        up = await backend(url, s).start(REQ)
        assert await up.readany() == PIECES[0]
        sink = Sink()
        with pytest.raises(BackendUnavailable, match="mid-response"):
            await up.pipe(sink)
        up.close()


async def test_error_status_refused_and_timeouts() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"slow" in request:
            await asyncio.sleep(1)
        body = b'{"error": {"message": "busy"}}'
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.2)

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        b = backend(url, s)
        with pytest.raises(BackendStatusError) as info:
            await b.start(REQ)
        assert info.value.status == 503 and info.value.retryable
        assert info.value.body == b'{"error": {"message": "busy"}}'
        slow = backend(url, s, first_byte_timeout=0.1)
        with pytest.raises(BackendTimeout):
            await slow.start(BackendRequest("/v1/completions", b'"slow"', False))
        port = int(url.rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as s:
        with pytest.raises(BackendUnavailable):
            await backend(f"http://127.0.0.1:{port}", s).start(REQ)


async def test_stale_pooled_connection_is_retried_fresh() -> None:
    served = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then the server closes this keep-alive connection

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        b = backend(url, s)
        assert (await collect(b))[2] == b"ok"
        await asyncio.sleep(0.05)  # the pooled connection is closed by now
        assert (await collect(b))[2] == b"ok"
        assert served == 2
        await b.aclose()


async def test_silent_upstream_is_cut_after_read_timeout() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[: CHUNKED.index(b"e\r\ndata: [")])  # one event, then silence
        await writer.drain()
        await asyncio.sleep(2)

    async with raw_server(respond) as (url, _), aiohttp.ClientSession() as s:
        up = await backend(url, s, read_timeout=0.2, first_byte_timeout=5.0).start(REQ)
        assert await up.readany() == PIECES[0]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(BackendTimeout, match="silent"):
            await up.readany()
        assert 0.1 < loop.time() - t0 < 1.5
        up.close()
