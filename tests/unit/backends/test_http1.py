"""The lean HTTP/1.1 client against scripted raw servers: framing split at every byte,
content-length and close-delimited bodies, keep-alive reuse, a stale pooled connection
replaced, error statuses, timeouts, backpressure, and upstreams that break the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from listen import Recorder, fetch

from expert_router.backends import BackendRequest, BackendSettings
from expert_router.backends.http1 import Http1Backend
from expert_router.errors import (
    BackendProtocolError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)

REQ = BackendRequest("/v1/completions", b'{"prompt": "x"}', True)
PIECES = [b'data: {"a": 1}\n\n', b"data: [DONE]\n\n"]
SSE = b"".join(PIECES)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED = HEAD + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in PIECES) + b"0\r\n\r\n"
Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(respond: Respond) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def backend(url: str, **kw: float) -> AsyncIterator[Http1Backend]:
    opts = {"connect_timeout": 1.0, "first_byte_timeout": 5.0, "read_timeout": 5.0, **kw}
    async with aiohttp.ClientSession() as s:
        b = Http1Backend(BackendSettings(url, s, **opts))  # type: ignore[arg-type]
        try:
            yield b
        finally:
            await b.aclose()


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

    async with raw_server(respond) as url, backend(url) as b:
        for _ in range(3):
            rec, _ = await fetch(b, REQ)
            assert (rec.status, rec.content_type, rec.data, rec.ended) == (
                200,
                "text/event-stream",
                SSE,
                True,
            )
        assert connections == 1


async def test_the_last_bytes_read_with_the_end_come_with_on_end() -> None:
    """The final event and the terminating chunk in one read: one ``on_end(last)`` (the
    ingress writes both at once), not ``on_data`` then ``on_end``."""
    first = HEAD + b"%x\r\n%b\r\n" % (len(PIECES[0]), PIECES[0])
    rest = CHUNKED[len(first) :]
    rec_ready = asyncio.Event()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(first)  # the head and the first event's chunk
        await writer.drain()
        await rec_ready.wait()
        writer.write(rest)  # the second event's chunk and the end, at once
        await writer.drain()

    async with raw_server(respond) as url, backend(url) as b:
        rec = Recorder()
        b.open(REQ, rec)
        await rec.got_data.wait()
        assert rec.chunks == [PIECES[0]] and not rec.ended
        rec_ready.set()
        await rec.done
        assert (rec.ended, rec.last, rec.data) == (True, PIECES[1], SSE)


async def test_content_length_and_close_delimited_bodies() -> None:
    bodies = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/json\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
    ]

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(bodies.pop(0))
        await writer.drain()

    async with raw_server(respond) as url, backend(url) as b:
        rec, _ = await fetch(b, REQ)
        assert (rec.status, rec.content_type, rec.data) == (200, "application/json", b"hello")
        rec, _ = await fetch(b, REQ)
        assert (rec.content_type, rec.data, rec.ended) == ("text/plain", b"until close", True)


async def test_mid_stream_failure_after_the_first_event() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[: CHUNKED.index(b"e\r\ndata: [")])  # first event, then the line drops
        await writer.drain()

    async with raw_server(respond) as url, backend(url) as b:
        rec, _ = await fetch(b, REQ)
        assert rec.data == PIECES[0]
        assert isinstance(rec.error, BackendUnavailable) and "mid-response" in str(rec.error)
        assert rec.error.retryable  # nothing of it may have reached a client yet


async def test_error_status_refused_and_timeouts() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"slow" in request:
            await reader.read()  # never answers; the client gives up
            return
        body = b'{"error": {"message": "busy"}}'
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url:
        async with backend(url) as b:
            rec, _ = await fetch(b, REQ)
            assert isinstance(rec.error, BackendStatusError) and rec.status == 0
            assert rec.error.status == 503 and rec.error.retryable
            assert rec.error.body == b'{"error": {"message": "busy"}}'
        async with backend(url, first_byte_timeout=0.1) as slow:
            rec, _ = await fetch(slow, BackendRequest("/v1/completions", b'"slow"', False))
            assert isinstance(rec.error, BackendTimeout)
        port = int(url.rsplit(":", 1)[1])
    async with backend(f"http://127.0.0.1:{port}") as gone:
        rec, _ = await fetch(gone, REQ)
        assert isinstance(rec.error, BackendUnavailable) and rec.error.retryable


async def test_a_pooled_connection_closed_before_answering_is_replaced_once() -> None:
    """The upstream takes the second request on the kept-alive connection and closes it
    without a byte: the request is written again on a new connection, invisibly."""
    connections: list[int] = []

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        await read_request(reader)
        connections[-1] += 1
        if len(connections) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await read_request(reader)  # the reused connection's request: dropped unanswered
            connections[-1] += 1
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
        await writer.drain()

    async with raw_server(respond) as url, backend(url) as b:
        assert (await fetch(b, REQ))[0].data == b"ok"
        rec, call = await fetch(b, REQ)
        assert (rec.data, rec.error) == (b"fresh", None)
        assert connections == [2, 1]  # the first connection saw both requests


async def test_a_pooled_connection_that_speaks_while_idle_is_not_reused() -> None:
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nunasked")  # bytes nobody asked for
            await writer.drain()
        await reader.read()

    async with raw_server(respond) as url, backend(url) as b:
        assert (await fetch(b, REQ))[0].data == b"ok"
        assert (await fetch(b, REQ))[0].data == b"ok"
        assert connections == 2


async def test_the_silent_upstream_is_cut_after_the_read_timeout() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED[: CHUNKED.index(b"e\r\ndata: [")])  # one event, then silence
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url, backend(url, read_timeout=0.2) as b:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rec, _ = await fetch(b, REQ)
        assert rec.data == PIECES[0]
        assert isinstance(rec.error, BackendTimeout) and "silent" in str(rec.error)
        assert 0.1 < loop.time() - t0 < 1.5


async def test_a_pooled_connections_watchdog_serves_its_next_request_in_time() -> None:
    """One timer per connection: armed for one request, it fires for the next on the same
    connection no later than that request's first-byte deadline (re-armed earlier when it was
    later, re-armed on when it was sooner), and lapses while the connection idles."""
    first_byte, requests = 0.2, 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            await read_request(reader)
            requests += 1
            if requests == 1:  # past the first-byte deadline in its body: the timer moves on
                writer.write(HEAD)
                await writer.drain()
                await asyncio.sleep(first_byte * 1.5)
                writer.write(CHUNKED[len(HEAD) :])
            elif requests % 2:  # answered at once: the timer stays armed, then lapses idle
                writer.write(CHUNKED)
            await writer.drain()  # even requests are never answered

    async with raw_server(respond) as url, backend(url, first_byte_timeout=first_byte) as b:
        loop = asyncio.get_running_loop()
        assert (await fetch(b, REQ))[0].data == SSE
        conn = b.idle[0]
        assert conn.watchdog is not None and conn.watchdog.when() > loop.time() + first_byte
        t0 = loop.time()
        rec, _ = await fetch(b, REQ)  # its deadline comes before the armed timer's
        assert isinstance(rec.error, BackendTimeout)
        assert first_byte <= loop.time() - t0 < first_byte + 0.15
    async with raw_server(respond) as url, backend(url, first_byte_timeout=first_byte) as b:
        requests = 2
        assert (await fetch(b, REQ))[0].data == SSE
        conn = b.idle[0]
        await asyncio.sleep(first_byte / 2)
        t0 = loop.time()
        rec, _ = await fetch(b, REQ)  # the timer armed for the request before fires first
        assert isinstance(rec.error, BackendTimeout) and conn.closed
        assert first_byte <= loop.time() - t0 < first_byte + 0.15
        assert (await fetch(b, REQ))[0].data == SSE and b.idle[0] is not conn  # a fresh one
        await asyncio.sleep(first_byte * 1.5)
        assert b.idle[0].watchdog is None  # fired while idle: lapsed


async def test_a_trickling_upstream_is_never_cut_and_its_silence_is_caught_in_time() -> None:
    # A read only raises a flag; the watchdog looks every quarter of the timeout: bytes
    # closer than the timeout keep the answer alive, a silence ends it within 1.25 times it.
    timeout, gap, events = 0.3, 0.1, [b"data: %d\n\n" % i for i in range(12)]
    silent_at: list[float] = []

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD)
        for e in events:
            writer.write(b"%x\r\n%b\r\n" % (len(e), e))
            await writer.drain()
            await asyncio.sleep(gap)
        silent_at.append(asyncio.get_running_loop().time() - gap)  # the last bytes' time
        await reader.read()

    async with raw_server(respond) as url, backend(url, read_timeout=timeout) as b:
        rec, _ = await fetch(b, REQ)
        ended = asyncio.get_running_loop().time()
    assert rec.data == b"".join(events)  # 1.2 s of answer, no gap as long as the timeout
    assert isinstance(rec.error, BackendTimeout) and "silent" in str(rec.error)
    assert timeout <= ended - silent_at[0] < timeout * 1.25 + 0.2


async def test_a_refusing_listener_pauses_reading_until_resumed() -> None:
    events = [b"data: %d\n\n" % i for i in range(50)]

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD)
        for e in events:
            writer.write(b"%x\r\n%b\r\n" % (len(e), e))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(respond) as url, backend(url) as b:
        rec = Recorder(refuse=True)
        call = b.open(REQ, rec)
        await rec.got_data.wait()
        for _ in range(10):  # paused: nothing more comes while the listener waits
            await asyncio.sleep(0)
        assert len(rec.chunks) == 1
        rec.refuse = False
        call.resume()
        await rec.outcome()
        assert rec.data == b"".join(events) and rec.ended


async def test_cancel_closes_the_connection_and_reports_nothing() -> None:
    closed = asyncio.Event()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + b"5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # EOF: the gateway let go
        closed.set()

    async with raw_server(respond) as url, backend(url) as b:
        rec = Recorder()
        call = b.open(REQ, rec)
        await rec.got_data.wait()
        call.cancel()
        async with asyncio.timeout(5):
            await closed.wait()
        assert not rec.done.done()


BROKEN = {
    "negative-chunk-size": HEAD + b"-6\r\nhello\r\n",
    "hex-prefix-chunk-size": HEAD + b"0x91\r\nhello\r\n",
    "plus-chunk-size": HEAD + b"+5\r\nhello\r\n",
    "underscore-chunk-size": HEAD + b"1_0\r\nhello\r\n",
    "overflowing-chunk-size": HEAD + b"fffffffffffffffffffff\r\n",
    "chunk-over-the-limit": HEAD + b"%x\r\n" % (2 << 20) + b"x" * (2 << 20),
    "garbage-status-line": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc",
    "bare-lf-head": b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc",
}


@pytest.mark.parametrize("answer", BROKEN.values(), ids=BROKEN.keys())
async def test_an_upstream_that_breaks_the_protocol_fails_the_request(answer: bytes) -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url:
        async with aiohttp.ClientSession() as s:
            settings = BackendSettings(url, s, 1.0, 5.0, 5.0, max_chunk_bytes=1 << 20)
            b = Http1Backend(settings)
            rec, _ = await fetch(b, REQ)
            assert isinstance(rec.error, BackendProtocolError), rec.error
            if b"x" not in answer:  # (a chunk over the limit is relayed up to the limit)
                assert rec.data == b""  # nothing of a broken answer is relayed
            assert not b.idle  # the connection is not kept


async def test_an_error_answer_is_read_up_to_its_limit() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad\r\nContent-Length: 10000000\r\n\r\n" + b"e" * 200_000)
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url, backend(url) as b:
        rec, _ = await fetch(b, REQ)
        assert isinstance(rec.error, BackendStatusError) and rec.error.status == 400
        assert len(rec.error.body) == 64 * 1024


async def test_a_call_that_ended_cannot_cancel_the_next_request_on_its_connection() -> None:
    """The connection went back to the pool and carries another call's request: cancelling
    the first call (late, as a probe's cleanup does) must not cut the second."""
    second_read = asyncio.Event()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED)
        await read_request(reader)
        second_read.set()
        writer.write(HEAD + b"5\r\nhello\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url, backend(url) as b:
        first, first_call = await fetch(b, REQ)
        assert first.ended and len(b.idle) == 1
        rec = Recorder()
        b.open(REQ, rec)  # on the pooled connection
        await second_read.wait()
        first_call.cancel()  # late: its answer is long over
        async with asyncio.timeout(5):
            await rec.done
        assert rec.ended and rec.data == b"hello"


async def test_a_probe_connection_never_joins_the_pool() -> None:
    """A probe asks for ``Connection: close``: even when the upstream keeps the line open,
    no request may be written on it (the probe closes it right after its answer)."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"GET /health ") and b"Connection: close" in head
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive
        await writer.drain()
        await reader.read()

    async with raw_server(respond) as url, backend(url) as b:
        assert await b.probe("/health", 2.0) == 200
        assert not b.idle
