"""One pooled HTTP/1.1 upstream connection: the response parser and its callbacks.

``Http1Connection`` parses a response in ``data_received`` (head, chunked / length / until
close), de-chunks the body into a synchronous sink (whole chunks with their framing into
``framed`` when the sink takes them so), keeps one lazily re-armed read timer per response and
reports to a ``Listener`` (the gateway's callback relay) or wakes an awaiting coroutine.
``backends/http1.py`` pools these connections and writes the requests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from expert_router.backends.base import ChunkSink
from expert_router.errors import (
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)

if TYPE_CHECKING:
    from expert_router.backends.http1 import Http1Backend

_MAX_HEAD = 64 * 1024
_HEAD, _CHUNKED, _LENGTH, _UNTIL_CLOSE, _DONE = range(5)
_LAST = b"0\r\n\r\n"  # the last chunk, no trailers
_CONTENT_TYPE = re.compile(rb"\r\n(?i:content-type)[ \t]*:[ \t]*([^\r\n]*)")
_CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked")
_LENGTH_RE = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)")
_CONNECTION_RE = re.compile(rb"\r\nconnection[ \t]*:[ \t]*([a-z-]+)")


def _whole_chunks(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole, non-final HTTP/1.1 chunks (plain hex
    sizes, no extensions); 0 when the first is partial, final or unusual."""
    pos, n = 0, len(data)
    while pos < n:
        eol = data.find(b"\r\n", pos, pos + 18)
        if eol <= pos:
            break
        try:
            size = int(data[pos:eol], 16)
        except ValueError:
            break
        stop = eol + 4 + size
        if size <= 0 or stop > n or data[stop - 2 : stop] != b"\r\n":
            break
        pos = stop
    return pos


class Listener(Protocol):
    """Told what happens to a request sent with ``Http1Backend.send_now``, from callbacks."""

    def on_head(self, conn: Http1Connection) -> None:
        """The response head arrived (``conn.status``, ``conn.content_type``); a listener that
        relays the body sets ``conn.sink`` (and ``framed``/``framed_end``) now."""

    def on_pause(self, conn: Http1Connection) -> None:
        """The sink refused more: reading is paused until ``conn.resume()``."""

    def on_done(self, conn: Http1Connection) -> None:
        """The response ended, or failed (``conn.error``); called once, listener detached."""


class Http1Connection(asyncio.Protocol):
    """One upstream connection and the response being read on it."""

    def __init__(self, backend: Http1Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time
        self._reset()

    def _reset(self) -> None:
        self.state = _HEAD
        self.buf = b""
        self.got_bytes = False
        self.status = 0
        self.content_type = "application/json"
        self.keep_alive = True
        self.remaining = 0
        self.pending: list[bytes] = []
        self.sink: ChunkSink | None = None
        self.framed: Callable[[bytes], bool] | None = None
        self.framed_end: Callable[[bytes], bool] | None = None
        self.head: asyncio.Future[None] | None = None  # made by ``expect_head`` when awaited
        self.wake: asyncio.Future[None] | None = None
        self.listener: Listener | None = None
        self.error: BackendError | None = None
        self.paused = False
        self.last = 0.0
        self.watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _UNTIL_CLOSE:
            self.state = _DONE
        elif self.state != _DONE:
            what = "before answering" if not self.got_bytes else "mid-response"
            self._fail(BackendUnavailable(f"{self.backend.base}: connection closed {what}"))
        self._notify()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last = self.now()
        state = self.state
        if state == _CHUNKED:
            framed = self.framed
            if framed is not None and not self.buf:
                # Fast path: whole chunks (SSE events) leave as they came, framing included,
                # in one write; the rest (a partial chunk, the last chunk) is parsed.
                end = _whole_chunks(data)
                if end:
                    rest = len(data) - end
                    if rest == 5 and self.framed_end is not None and data.endswith(_LAST):
                        self.framed_end(data)  # the last events and the end, in one write
                        self._finish()
                        return
                    if not framed(data if not rest else data[:end]):
                        self._pause()
                    if not rest:
                        return
                    data = data[end:]
            self._chunked(data)
        elif state == _HEAD:
            self._head(data)
        elif state == _LENGTH:
            n = self.remaining
            if len(data) >= n:
                self._deliver(data[:n])
                self.remaining = 0
                self._finish()
            else:
                self.remaining = n - len(data)
                self._deliver(data)
        elif state == _UNTIL_CLOSE:
            self._deliver(data)

    # -- parsing ---------------------------------------------------------------------------
    def _head(self, data: bytes) -> None:
        buf = self.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            if len(buf) > _MAX_HEAD:
                self._fail(BackendProtocolError(f"{self.backend.base}: response head too large"))
            return
        self.buf = b""
        head = buf[:end]
        low = head.lower()
        try:
            self.status = int(head[9:12])
        except ValueError:
            self._fail(BackendProtocolError(f"{self.backend.base}: bad status line"))
            return
        m = _CONTENT_TYPE.search(head)
        if m:
            self.content_type = m.group(1).strip().decode("latin-1")
        chunked = _CHUNKED_RE.search(low) is not None
        m = _LENGTH_RE.search(low)
        length = int(m.group(1)) if m else -1
        conn = _CONNECTION_RE.search(low)
        if head.startswith(b"HTTP/1.1"):
            self.keep_alive = conn is None or conn.group(1) != b"close"
        else:
            self.keep_alive = conn is not None and conn.group(1) == b"keep-alive"
        head_seen = self.head
        if head_seen is not None and not head_seen.done():
            head_seen.set_result(None)
        if self.listener is not None:
            self.listener.on_head(self)
        rest = buf[end + 4 :]
        if chunked:
            self.state = _CHUNKED
            if rest:
                self._chunked(rest)
        elif length >= 0:
            self.state = _LENGTH
            self.remaining = length
            if length == 0:
                self._finish()
            elif rest:
                self.data_received(rest)
        else:
            self.state = _UNTIL_CLOSE
            self.keep_alive = False
            if rest:
                self._deliver(rest)

    def _chunked(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        n = len(buf)
        while pos < n:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(buf[pos:eol], 16)
            except ValueError:
                try:  # a chunk extension (";name=value"), never sent by OpenAI servers
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    self._fail(BackendProtocolError(f"{self.backend.base}: bad chunk size"))
                    return
            if size == 0:  # last chunk; trailers are not used by OpenAI servers
                if buf.find(b"\r\n", eol + 2) < 0:
                    break
                self.buf = b""
                self._finish()
                return
            start = eol + 2
            stop = start + size
            if stop + 2 > n:
                break
            self._deliver(buf[start:stop])
            pos = stop + 2
        self.buf = buf[pos:] if pos < n else b""

    # -- delivery --------------------------------------------------------------------------
    def _deliver(self, payload: bytes) -> None:
        sink = self.sink
        if sink is not None:
            if not sink.write(payload):
                self._pause()
        else:
            self.pending.append(payload)
            self._notify()

    def _pause(self) -> None:
        """The sink is full: stop reading the upstream until it drains."""
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            self._notify()

    # -- read timeout: one timer per response, re-armed lazily (no timer work per chunk) ----
    def arm(self, first_byte: float, read: float) -> None:
        """Watch for ``first_byte`` seconds without a response head, then for ``read``
        seconds of silence between chunks."""
        self.last = self.now()
        self.watchdog = self.loop.call_at(self.last + first_byte, self._check, first_byte, read)

    def _check(self, first_byte: float, read: float) -> None:
        if self.state == _DONE:
            return
        if self.state == _HEAD:
            self._fail(BackendTimeout(f"{self.backend.base}: no response headers in time"))
            return
        due = self.last + read
        if self.now() >= due:
            self._fail(BackendTimeout(f"{self.backend.base}: upstream silent for {read:g}s"))
        else:
            self.watchdog = self.loop.call_at(due, self._check, first_byte, read)

    def _finish(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.state = _DONE
        self._notify()

    def _fail(self, exc: BackendError) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.error is None:
            self.error = exc
        head_seen = self.head
        if head_seen is not None and not head_seen.done():
            head_seen.set_exception(exc)
            head_seen.exception()  # mark retrieved: the caller may be gone
        self.state = _DONE
        if self.transport is not None:
            self.transport.close()
        self._notify()

    def _notify(self) -> None:
        w = self.wake
        if w is not None and not w.done():
            w.set_result(None)
        listener = self.listener
        if listener is not None:
            if self.state == _DONE:
                self.listener = None
                listener.on_done(self)
            elif self.paused:
                listener.on_pause(self)

    def expect_head(self) -> asyncio.Future[None]:
        """A future done when the response head arrives (failed with the error if none does);
        made before the request is written."""
        self.head = self.loop.create_future()
        return self.head

    def resume(self) -> None:
        """Read again after a pause (the sink drained)."""
        self.paused = False
        if self.transport is not None and not self.closed and self.state != _DONE:
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The requester left: close the connection (the upstream sees it and aborts); no
        more callbacks."""
        self.listener = None
        self.sink = None
        self.framed = self.framed_end = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def close_or_keep(self) -> None:
        """The response is over for its reader: back to the pool when whole and kept alive."""
        if self.state == _DONE and self.error is None and self.keep_alive and not self.closed:
            self.backend.release(self)
        elif self.transport is not None:
            self.closed = True
            self.transport.close()  # the upstream sees the client leave and aborts

    async def wait(self) -> None:
        self.wake = self.loop.create_future()
        await self.wake
        self.wake = None
