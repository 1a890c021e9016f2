"""A lean HTTP/1.1 client for OpenAI-compatible upstreams over plain TCP (``http://``).

One asyncio protocol per pooled keep-alive connection (``http1_conn.Http1Connection``); the
response body is de-chunked in ``data_received`` and handed to a synchronous sink, so relaying
an SSE event costs one callback and one write, no coroutine switch; a sink with
``write_framed`` gets whole chunks with their framing, as they came. ``send_now`` writes a
request on an idle connection at once and reports to a ``Listener`` by callbacks (the
gateway's callback relay); ``start`` is the awaitable way. ``https://`` keeps the aiohttp
adapter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

from expert_router.backends.base import BackendRequest, BackendSettings, ChunkSink
from expert_router.backends.http1_conn import _DONE, Http1Connection, Listener
from expert_router.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)

_MAX_ERROR_BODY = 64 * 1024


class Http1Response:
    """A response in progress on one pooled connection."""

    __slots__ = ("_c", "status", "content_type")

    def __init__(self, conn: Http1Connection) -> None:
        self._c = conn
        self.status = conn.status
        self.content_type = conn.content_type

    def at_eof(self) -> bool:
        c = self._c
        return c.state == _DONE and not c.pending and c.error is None

    async def readany(self) -> bytes:
        c = self._c
        while not c.pending:
            if c.error is not None:
                raise c.error
            if c.state == _DONE:
                return b""
            await c.wait()
        out = b"".join(c.pending) if len(c.pending) > 1 else c.pending[0]
        c.pending.clear()
        return out

    async def pipe(self, sink: ChunkSink) -> None:
        c = self._c
        for data in c.pending:
            sink.write(data)
        c.pending.clear()
        c.sink = sink
        c.framed = getattr(sink, "write_framed", None)
        c.framed_end = getattr(sink, "write_framed_end", None)
        try:
            while c.state != _DONE:
                await c.wait()
                if c.paused and c.state != _DONE:
                    await sink.drain()
                    c.resume()
        finally:
            c.sink = None
            c.framed = c.framed_end = None
        if c.error is not None:
            raise c.error

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self._c.close_or_keep()


class Http1Backend:
    """One replica over plain HTTP/1.1 with a keep-alive connection pool."""

    def __init__(self, settings: BackendSettings) -> None:
        self.s = settings
        base = settings.url.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        self.base = base
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path
        auth = f"Authorization: Bearer {settings.api_key}\r\n" if settings.api_key else ""
        self._head_tail = (
            f" HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Accept-Encoding: identity\r\n{auth}Content-Length: "
        ).encode("latin-1")
        self.idle: deque[Http1Connection] = deque()
        self._heads: dict[str, bytes] = {}
        self.first_byte = min(settings.first_byte_timeout, settings.read_timeout)

    async def _connect(self) -> Http1Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.s.connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: Http1Connection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise BackendUnavailable(f"{self.base}: connect timed out") from exc
        except OSError as exc:
            raise BackendUnavailable(f"{self.base}: {exc.strerror or exc!r}") from exc
        if conn.transport is None:  # uvloop may call connection_made after returning
            conn.transport = transport
        return conn

    def _acquire_idle(self) -> Http1Connection | None:
        while self.idle:
            c = self.idle.pop()
            if not c.closed and c.transport is not None and not c.transport.is_closing():
                return c
        return None

    def release(self, c: Http1Connection) -> None:
        c.reused = True
        c._reset()
        self.idle.append(c)

    def _message(self, req: BackendRequest) -> bytes:
        head = self._heads.get(req.path)
        if head is None:  # built once per path: the request head up to Content-Length's value
            head = self._heads[req.path] = (
                b"POST " + (self.prefix + req.path).encode() + self._head_tail
            )
        return b"%b%d\r\n\r\n%b" % (head, len(req.body), req.body)

    def send_now(self, req: BackendRequest, listener: Listener) -> Http1Connection | None:
        """Write ``req`` on an idle pooled connection now and report to ``listener``; None
        (nothing sent) when no idle connection is at hand. A connection that turns out stale
        fails before any byte (``conn.reused and not conn.got_bytes``): the caller may retry."""
        conn = self._acquire_idle()
        if conn is None:
            return None
        assert conn.transport is not None
        conn.listener = listener
        conn.transport.write(self._message(req))
        conn.arm(self.first_byte, self.s.read_timeout)
        return conn

    async def status_error(self, conn: Http1Connection) -> BackendStatusError:
        """The error an answer of status >= 400 becomes, with (up to 64 KB of) its body; the
        connection is done with afterwards."""
        resp = Http1Response(conn)
        body = b""
        try:
            async with asyncio.timeout(self.s.read_timeout):
                while len(body) < _MAX_ERROR_BODY and (chunk := await resp.readany()):
                    body += chunk
        except (BackendError, TimeoutError):
            pass
        resp.close()
        return BackendStatusError(
            f"{self.base} answered {resp.status}", status=resp.status, body=body
        )

    async def start(self, req: BackendRequest) -> Http1Response:
        message = self._message(req)
        for attempt in range(2):  # a stale pooled connection gets one fresh retry
            idle = self._acquire_idle()
            reused = idle is not None
            conn = idle if idle is not None else await self._connect()
            assert conn.transport is not None
            head = conn.expect_head()
            conn.transport.write(message)
            conn.arm(self.first_byte, self.s.read_timeout)
            try:
                await head  # the watchdog fails it after `first_byte` seconds
            except BackendUnavailable:
                if reused and not conn.got_bytes and attempt == 0:
                    continue
                raise
            except BaseException:
                conn._fail(BackendUnavailable(f"{self.base}: request abandoned"))
                raise
            break
        if conn.status >= 400:
            raise await self.status_error(conn)
        return Http1Response(conn)

    async def probe(self, path: str, timeout_s: float) -> int:
        message = (
            f"GET {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._connect()
                assert conn.transport is not None
                head = conn.expect_head()
                conn.transport.write(message)
                await head
                status = conn.status
                conn.transport.close()
                return status
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.base}{path}: probe timed out") from exc

    async def aclose(self) -> None:
        while self.idle:
            c = self.idle.pop()
            if c.transport is not None:
                c.transport.close()


def make(settings: BackendSettings) -> Http1Backend:
    return Http1Backend(settings)
