"""A lean HTTP/1.1 client for OpenAI-compatible upstreams over plain TCP (``http://``).

``open`` writes the request on an idle pooled keep-alive connection at once (or on a new one
once connected) and the connection (``http1_conn``) reports the answer to the listener from
its ``data_received``: no task, coroutine or future per request on the common path. A pooled
connection found closed before any byte came back is replaced once, transparently.
``https://`` keeps the aiohttp adapter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

from expert_router.backends.base import BackendRequest, BackendSettings, Listener
from expert_router.backends.http1_conn import Http1Connection
from expert_router.errors import (
    BackendError,
    BackendRefused,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)


class Http1Call:
    """A request in flight: which connection carries it (it may change once, see
    ``Http1Backend.retry_fresh``) and the connect under way, if any."""

    __slots__ = ("conn", "connecting")

    def __init__(self) -> None:
        self.conn: Http1Connection | None = None
        self.connecting: asyncio.Task[None] | None = None

    def resume(self) -> None:
        if self.conn is not None:
            self.conn.resume()

    def cancel(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.conn is not None:
            self.conn.abandon(self)


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
        self.read_timeout = settings.read_timeout
        self.max_chunk = settings.max_chunk_bytes

    # -- requests ----------------------------------------------------------------------------
    def _message(self, req: BackendRequest) -> bytes:
        head = self._heads.get(req.path)
        if head is None:  # built once per path: the request head up to Content-Length's value
            head = self._heads[req.path] = (
                b"POST " + (self.prefix + req.path).encode() + self._head_tail
            )
        return b"%b%d\r\n\r\n%b" % (head, len(req.body), req.body)

    def open(self, req: BackendRequest, listener: Listener) -> Http1Call:
        call = Http1Call()
        message = self._message(req)
        conn = self._idle()
        if conn is not None:
            self._start(call, conn, message, listener)
        else:
            task = asyncio.get_running_loop().create_task(self._open(call, message, listener))
            call.connecting = task
        return call

    def _start(
        self, call: Http1Call, conn: Http1Connection, message: bytes, listener: Listener
    ) -> None:
        call.conn = conn
        conn.start(message, listener, call)

    async def _open(self, call: Http1Call, message: bytes, listener: Listener) -> None:
        try:
            conn = await self._connect()
        except BackendError as exc:
            call.connecting = None
            listener.on_error(exc)
            return
        call.connecting = None
        self._start(call, conn, message, listener)

    def retry_fresh(self, call: Http1Call, message: bytes, listener: Listener) -> None:
        """A connection reused from the pool closed before answering: the request never
        reached the upstream; send it again on a new connection."""
        call.conn = None
        call.connecting = asyncio.get_running_loop().create_task(
            self._open(call, message, listener)
        )

    # -- the pool ----------------------------------------------------------------------------
    def _idle(self) -> Http1Connection | None:
        while self.idle:
            c = self.idle.pop()
            if not c.closed and c.transport is not None and not c.transport.is_closing():
                return c
        return None

    def release(self, c: Http1Connection) -> None:
        """``c`` finished a request whole and may carry another."""
        c.reused = True
        self.idle.append(c)

    async def _connect(self) -> Http1Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.s.connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: Http1Connection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise BackendUnavailable(f"{self.base}: connect timed out") from exc
        except ConnectionRefusedError as exc:
            raise BackendRefused(f"{self.base}: connection refused") from exc
        except OSError as exc:
            raise BackendUnavailable(f"{self.base}: {exc.strerror or type(exc).__name__}") from exc
        if conn.transport is None:  # uvloop may call connection_made after returning
            conn.transport = transport
        return conn

    # -- health ------------------------------------------------------------------------------
    async def probe(self, path: str, timeout_s: float) -> int:
        message = (
            f"GET {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        probe = _Probe()
        call = Http1Call()
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._connect()
                call.conn = conn
                conn.start(message, probe, call, pooled=False)  # it asked for a close
                return await probe.status
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.base}{path}: probe timed out") from exc
        finally:
            call.cancel()

    async def aclose(self) -> None:
        while self.idle:
            c = self.idle.pop()
            c.abandon()


class _Probe:
    """The listener of a probe: its status (an error status too), nothing else."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_head(self, status: int, content_type: str) -> None:
        if not self.status.done():
            self.status.set_result(status)

    def on_data(self, data: bytes) -> bool:
        return True

    def on_end(self, last: bytes = b"") -> None:
        pass

    def on_error(self, exc: BackendError) -> None:
        if not self.status.done():
            if isinstance(exc, BackendStatusError):
                self.status.set_result(exc.status)
            else:
                self.status.set_exception(exc)


def make(settings: BackendSettings) -> Http1Backend:
    return Http1Backend(settings)
