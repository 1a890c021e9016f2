"""One pooled HTTP/1.1 upstream connection: its response parsed by httptools (llhttp).

``Http1Connection`` feeds what the upstream sends to an ``httptools.HttpResponseParser`` and
reports to the request's ``Listener`` once per read: the head, the body bytes that read
carried (de-chunked, joined), the end (with the last bytes when the same read carried both).
The body's pieces are collected by ``wire.http1_callbacks.BodyParts`` (compiled where built:
llhttp's per-chunk callbacks run no Python).
An error status is read (64 KiB at most) and reported as ``BackendStatusError``. Everything
the parser refuses, a chunk larger than the limit, a silent upstream (one lazily re-armed
watchdog per connection, kept across its pooled requests) and bytes from an idle connection
end the request or the connection;
nothing escapes ``data_received``. The common read, one whole chunk of a streamed answer, takes
a short path of its own to the listener.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING

import httptools

from expert_router.backends.base import MAX_ERROR_BODY, Listener, retry_after
from expert_router.errors import (
    BackendError,
    BackendProtocolError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)
from expert_router.wire.http1_callbacks import BodyParts

if TYPE_CHECKING:
    from expert_router.backends.http1 import Http1Backend, Http1Call

log = logging.getLogger("expert_router.backends")
IDLE, HEAD, BODY = range(3)
MAX_RESPONSE_HEAD = 64 * 1024
"""Bytes of an upstream's status line and headers; beyond, the answer is broken."""


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp (a limit passed, bytes after the answer)."""


class Http1Connection(asyncio.Protocol):
    """One upstream connection and the request in flight on it (at most one)."""

    __slots__ = (
        "backend", "transport", "closed", "reused", "loop", "parser", "listener", "state",
        "got_bytes", "status", "content_type", "framed", "body", "head_ready", "complete",
        "junk", "paused", "last", "watchdog", "error", "retry", "keep", "retry_after",
        "head_seen", "head_size", "owner", "pooled", "heard",
    )  # fmt: skip

    def __init__(self, backend: Http1Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.loop = asyncio.get_running_loop()
        self.listener: Listener | None = None
        self.state = IDLE
        self.watchdog: asyncio.TimerHandle | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.body = BodyParts(backend.max_chunk, MAX_ERROR_BODY)
        self.retry: tuple[Http1Call, bytes] | None = None
        self.owner: Http1Call | None = None  # the call of the request in flight (see abandon)
        self.pooled = True  # False: never back to the pool (a probe's "Connection: close")

    # -- a request ------------------------------------------------------------------------
    def start(
        self, message: bytes, listener: Listener, call: Http1Call, *, pooled: bool = True
    ) -> None:
        """Write ``message`` (a whole request) and report its answer to ``listener``. On a
        connection reused from the pool the request is sent again on a new connection if this
        one turns out closed before any byte came back. ``call`` owns the connection until
        the answer ends (only its ``abandon`` counts); ``pooled=False`` keeps it out of the
        pool afterwards."""
        assert self.transport is not None and self.state == IDLE
        self.listener = listener
        self.owner = call
        self.pooled = pooled
        self.state = HEAD
        self.got_bytes = self.framed = self.head_ready = self.complete = self.keep = False
        self.junk = self.paused = False
        self.status = 0
        self.content_type = "application/json"
        self.retry_after: bytes | None = None
        self.body.reset()
        self.head_seen = self.head_size = 0
        self.error: BackendError | None = None
        self.retry = (call, message) if self.reused else None
        self.transport.write(message)
        self.heard = False
        self.last = now = self.loop.time()
        deadline = now + self.backend.first_byte
        watchdog = self.watchdog
        # A pooled connection's timer, armed for an earlier request, fires before this
        # request's deadline and re-arms for it (``_check``): no timer per request.
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self.watchdog = self.loop.call_at(deadline, self._check)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        body = self.body
        callbacks = SimpleNamespace(
            on_message_begin=self.on_message_begin,
            on_header=self.on_header,
            on_headers_complete=self.on_headers_complete,
            on_body=body.on_body,
            on_chunk_complete=body.on_chunk_complete,
            on_message_complete=self.on_message_complete,
        )
        self.parser = httptools.HttpResponseParser(callbacks)  # one per connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_watchdog()
        # The parser holds this connection's bound methods: without it, the connection is
        # freed by its reference count, not left to the cyclic collector (no callback comes
        # after this one).
        self.parser = None
        if self.state == IDLE or self.listener is None:
            return
        if self.state == BODY and not self.framed:  # the body was delimited by the close
            self.complete = True
            self._report(None)
        elif self.state == HEAD and self.retry is not None and not self.got_bytes:
            # A kept-alive connection the upstream had closed: the request never reached it.
            listener, self.listener = self.listener, None
            (call, message), self.retry = self.retry, None
            self._end()
            self.backend.retry_fresh(call, message, listener)
        else:
            what = "before answering" if not self.got_bytes else "mid-response"
            self._report(BackendUnavailable(f"{self.backend.base}: connection closed {what}"))

    def data_received(self, data: bytes) -> None:
        if self.state == BODY:  # the path of every relayed event: kept to a few steps
            self.heard = True
            try:
                self.parser.feed_data(data)  # type: ignore[union-attr]
            except Exception as exc:
                self._report_safely(self._refusal(exc))
                return
            if not self.complete and (chunk := self.body.single()) is not None:  # one chunk
                try:
                    if not self.listener.on_data(chunk):  # type: ignore[union-attr]
                        self._hold()
                except Exception as exc:
                    self._listener_failed(exc)
                return
            self._report_safely(None)
            return
        if self.state == IDLE:  # an idle connection must stay silent: never reuse it
            self._close()
            return
        self.got_bytes = self.heard = True
        self.retry = None
        self.head_seen += len(data)
        error: BackendError | None = None
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except Exception as exc:
            error = self._refusal(exc)
        if self.state == HEAD and self.head_seen > MAX_RESPONSE_HEAD and error is None:
            error = BackendProtocolError(
                f"{self.backend.base}: a head over {MAX_RESPONSE_HEAD} bytes"
            )
        self._report_safely(error)

    def _refusal(self, exc: Exception) -> BackendError | None:
        """What ``feed_data`` raising ``exc`` means for the request (None: nothing, the bytes
        after a complete answer were refused)."""
        if isinstance(exc, httptools.HttpParserCallbackError):
            if self.body.over:
                limit = self.backend.max_chunk
                return BackendProtocolError(f"{self.backend.base}: a chunk exceeds {limit} bytes")
            if not self.junk or not self.complete:
                return self.error or BackendProtocolError(f"{self.backend.base}: bad response")
            return None
        if isinstance(exc, httptools.HttpParserError):
            return BackendProtocolError(f"{self.backend.base}: malformed response: {exc}")
        return BackendProtocolError(f"{self.backend.base}: {type(exc).__name__}")

    def _report_safely(self, error: BackendError | None) -> None:
        try:
            self._report(error)
        except Exception as exc:
            self._listener_failed(exc)

    def _listener_failed(self, exc: Exception) -> None:
        """A listener's failure while it listens (a fault of the relay, not of the
        connection): the connection closes and the request ends as an upstream failure
        (``_relay_failed``); the loop goes on (nothing escapes ``data_received``)."""
        listener = self.listener
        self.abandon()
        if listener is not None:
            self._relay_failed(listener, exc)

    def _relay_failed(self, listener: Listener, exc: Exception) -> None:
        """``listener`` raised ``exc``: it is told of an upstream failure instead, so that it
        answers its client and releases its replica."""
        log.error("upstream relay failed: %s", type(exc).__name__)
        try:
            listener.on_error(BackendProtocolError(f"{self.backend.base}: the answer failed"))
        except Exception as again:
            log.error("upstream relay failed, then its error too: %s", type(again).__name__)

    def _hold(self) -> None:
        """The listener refused more: stop reading until ``resume``."""
        if self.listener is not None and not self.paused:
            self.paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    # -- parser callbacks (inside feed_data) -------------------------------------------------
    def on_message_begin(self) -> None:
        if self.state != HEAD:  # a second answer to one request: the upstream is broken
            self.junk = True
            self.error = BackendProtocolError(f"{self.backend.base}: bytes after the response")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state == HEAD:
            self.head_size += len(name) + len(value)
            if self.head_size > MAX_RESPONSE_HEAD:
                limit = MAX_RESPONSE_HEAD
                self.error = BackendProtocolError(f"{self.backend.base}: a head over {limit} bytes")
                raise _Stop
            name = name.lower()
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"transfer-encoding":
                self.framed = self.body.chunked = True  # llhttp refuses any other coding
            elif name == b"content-length":
                self.framed = True
            elif name == b"retry-after":
                self.retry_after = value

    def on_headers_complete(self) -> None:
        status = self.status = self.parser.get_status_code()  # type: ignore[union-attr]
        if status < 200 and status != 101:
            return  # interim (100 Continue, 103 Early Hints): skipped (RFC 9110, 15.2)
        self.state = BODY
        self.head_ready = True
        if status >= 400:
            self.body.error_body = bytearray()  # read (capped) to report the error

    def on_message_complete(self) -> None:
        if self.state == HEAD:  # an interim answer ended: the final one follows
            self.content_type = "application/json"
            self.framed = self.body.chunked = False
            self.retry_after = None
            return
        self.complete = True
        self.keep = self.parser.should_keep_alive()  # type: ignore[union-attr]  # (False after)

    # -- reporting (after feed_data: one callback per read) ----------------------------------
    def _report(self, error: BackendError | None) -> None:
        listener = self.listener
        if listener is None:
            return
        last = b""
        got = self.body
        error_body = got.error_body
        if self.head_ready:
            self.head_ready = False
            if error_body is None:
                listener.on_head(self.status, self.content_type)
                if self.listener is None:
                    return  # the listener let go
        if error_body is not None:
            if error is None and not self.complete and len(error_body) < MAX_ERROR_BODY:
                return  # the rest of the error answer is on its way
            status, body = self.status, bytes(error_body)
            error = BackendStatusError(
                f"{self.backend.base} answered {status}",
                status=status,
                body=body,
                retry_after=retry_after(self.retry_after),
            )
        elif got.parts and (got.whole or not got.chunked):
            parts, whole = got.parts, got.whole
            if not got.chunked or whole == len(parts):
                got.parts = []
            else:  # a chunk is still arriving: the whole ones before it go
                got.parts, parts = parts[whole:], parts[:whole]
            got.whole = 0
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if self.complete and error is None:
                last = data  # the end came with it: on_end carries it (one client write)
            else:
                if not listener.on_data(data):
                    self._hold()
                if self.listener is None:
                    return
        if error is not None:
            self.listener = None
            self._end()
            if error_body is not None and self._reusable():
                self.backend.release(self)  # an error answer read whole: the line is fine
            else:
                self._close()
            try:
                listener.on_error(error)
            except Exception as exc:  # (the connection is the pool's again: left alone)
                log.error("upstream relay failed: %s", type(exc).__name__)
        elif self.complete:
            self.listener = None
            self._end()
            if self._reusable():
                self.backend.release(self)
            else:
                self._close()
            try:
                listener.on_end(last)
            except Exception as exc:  # (the connection is the pool's again: left alone)
                self._relay_failed(listener, exc)

    # -- the watchdog: one timer per connection; a read only raises a flag (no clock, no timer) --
    def _check(self) -> None:
        self.watchdog = None
        if self.listener is None:
            return  # idle in the pool: no timer until the next request
        backend = self.backend
        now = self.loop.time()
        if self.state == HEAD:
            deadline = self.last + backend.first_byte
            if now < deadline:  # armed for an earlier request on this connection
                self.watchdog = self.loop.call_at(deadline, self._check)
                return
            self._report(BackendTimeout(f"{backend.base}: no response headers in time"))
            return
        if self.heard:  # bytes came since the last look: the silence began now at the earliest
            self.heard = False
            self.last = now
        elif now - self.last >= backend.read_timeout:
            silent = f"{backend.read_timeout:g}s"
            self._report(BackendTimeout(f"{backend.base}: upstream silent for {silent}"))
            return
        # Looked at every quarter of the timeout: a silence is caught within 1.25 times it.
        self.watchdog = self.loop.call_at(now + backend.read_timeout / 4, self._check)

    def _reusable(self) -> bool:
        return self.complete and self.keep and not self.junk and not self.closed and self.pooled

    def _end(self) -> None:
        self.state = IDLE
        self.owner = None  # the connection may serve another call from here
        # The watchdog stays armed: back in the pool, it serves the next request (or, firing
        # on an idle connection, lapses); a closed connection stops it.

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    # -- the holder's controls ---------------------------------------------------------------
    def resume(self) -> None:
        """Read again after the listener refused more."""
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def abandon(self, call: Http1Call | None = None) -> None:
        """The requester left: close the connection (the upstream sees it and stops); no
        more callbacks. With ``call``, only while that call's request is in flight here: once
        its answer has ended the connection may already carry another call's request."""
        if call is not None and call is not self.owner:
            return
        self.listener = None
        self._end()
        self._close()

    def _close(self) -> None:
        self._stop_watchdog()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
