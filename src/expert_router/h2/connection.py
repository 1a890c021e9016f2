"""One HTTP/2 connection on an asyncio transport, either end: frame parsing, SETTINGS, PING,
GOAWAY, header blocks (CONTINUATION included) and flow control in both directions.

Streams are ``H2Stream`` objects that the subclasses (``server``, ``client``) create; the
connection calls their ``on_headers`` / ``on_data`` / ``on_reset`` / ``on_lost`` hooks.
Received data is acknowledged (WINDOW_UPDATE) as it arrives: a stream's reader buffers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from hpack import HPACKError

from expert_router.h2 import frames as f
from expert_router.h2.headers import BlockDecoder

log = logging.getLogger("expert_router.h2")

RECV_WINDOW = 1 << 22  # what each stream may send us before we acknowledge
CONN_RECV_WINDOW = 1 << 24
_FRAME_HEAD = f.HEAD.unpack_from


class ConnectionError_(Exception):  # noqa: N801  (the builtin's name is taken)
    """The peer broke the protocol; the connection is closed with GOAWAY ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2Stream:
    """Send-side state of one stream; subclasses add what they do with received frames."""

    __slots__ = (
        "conn", "sid", "send_window", "pending", "drained", "recv_unacked", "closed", "_waiter",
    )  # fmt: skip

    def __init__(self, conn: H2Connection, sid: int) -> None:
        self.conn, self.sid = conn, sid
        self.send_window = conn.peer_initial_window
        self.pending: deque[tuple[bytes | memoryview, bool, bytes]] | None = None  # data, end, then
        self.drained: asyncio.Future[None] | None = None
        self.recv_unacked = 0
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting for frames

    async def _wait(self) -> None:
        """Sleep until ``_wake``: frames for this stream arrived, or it ended."""
        self._waiter = self.conn.future()
        await self._waiter

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, code: int) -> None:
        raise NotImplementedError

    def on_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        """Wait until this stream's queued data has left and the transport accepts more."""
        if self.pending is not None:
            if self.drained is None:
                self.drained = self.conn.future()
            await asyncio.shield(self.drained)
        await self.conn.writable()


class H2Connection(asyncio.Protocol):
    """The frame layer shared by the server and client ends."""

    client_side = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.decoder = BlockDecoder()
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop (a test): the first future looks it up
            self.loop = None
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_FRAME
        self.peer_max_streams = 2**31 - 1
        self.send_window = f.DEFAULT_WINDOW
        self.recv_unacked = 0
        self.closed = False
        self.goaway_id: int | None = None  # the peer's last stream id after its GOAWAY
        self._buf = b""
        self._preface = not self.client_side  # a server first reads the client's preface
        self._cont: tuple[int, int, list[bytes]] | None = None  # HEADERS awaiting CONTINUATION
        self._table_update = False
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._blocked: list[H2Stream] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]  # uvloop's is no subclass
        ours = [(f.INITIAL_WINDOW_SIZE, RECV_WINDOW), (f.MAX_HEADER_LIST_SIZE, 1 << 16)]
        if self.client_side:
            ours.append((f.ENABLE_PUSH, 0))
        head = f.PREFACE if self.client_side else b""
        grow = f.window_update(0, CONN_RECV_WINDOW - f.DEFAULT_WINDOW)
        t.write(head + f.settings(ours) + grow)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._drop(stream)
            stream.on_lost(exc)
        self._wake_writers()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        fut, self._resumed = self._resumed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The connection's loop, looked up once (``asyncio.get_running_loop()`` costs a
        ``getpid`` system call every time)."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        return loop

    def future(self) -> asyncio.Future[Any]:
        """A future of the connection's loop."""
        return self.event_loop().create_future()

    async def writable(self) -> None:
        """Return once the transport's buffer is below its high-water mark (or closed)."""
        while self._paused and not self.closed:
            if self._resumed is None:
                self._resumed = self.future()
            await asyncio.shield(self._resumed)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        try:
            if self._preface:
                if len(buf) < len(f.PREFACE):
                    self._buf = buf
                    return
                if not buf.startswith(f.PREFACE):
                    raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                buf, self._preface = buf[len(f.PREFACE) :], False
            pos, n = 0, len(buf)
            while n - pos >= 9:
                hi, lo, kind, flags, sid = _FRAME_HEAD(buf, pos)
                end = pos + 9 + (hi << 16 | lo)
                if end > n:
                    break
                self._frame(kind, flags, sid & 0x7FFFFFFF, buf[pos + 9 : end])
                pos = end
            self._buf = buf[pos:] if pos < n else b""
            if len(self._buf) > 9 + (1 << 24):
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "frame larger than allowed")
        except ConnectionError_ as exc:
            self.abort(exc.code, str(exc))

    def abort(self, code: int, message: str) -> None:
        """Close the connection after a GOAWAY naming ``code``."""
        log.debug("closing HTTP/2 connection: %s", message)
        if self.transport is not None and not self.closed:
            last = max((s for s in self.streams if s % 2 != self.client_side), default=0)
            self.transport.write(f.goaway(last, code, message.encode()[:200]))
            self.transport.close()

    # -- frames ----------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None and kind != f.CONTINUATION:
            raise ConnectionError_(f.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == f.DATA:
            self._data(flags, sid, payload)
        elif kind == f.HEADERS:
            if flags & f.PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & f.PRIORITY_FLAG:
                payload = payload[5:]
            if flags & f.END_HEADERS:
                self._headers(sid, flags, payload)
            else:
                self._cont = (sid, flags, [payload])
        elif kind == f.CONTINUATION:
            if self._cont is None or self._cont[0] != sid:
                raise ConnectionError_(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._cont[2].append(payload)
            if flags & f.END_HEADERS:
                csid, cflags, parts = self._cont
                self._cont = None
                self._headers(csid, cflags, b"".join(parts))
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, f.u32(payload) & 0x7FFFFFFF)
        elif kind == f.PING:
            if not flags & f.ACK:
                self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.SETTINGS:
            if not flags & f.ACK:
                self._settings(payload)
        elif kind == f.RST_STREAM:
            stream = self.streams.pop(sid, None)
            if stream is not None:
                stream.closed = True
                self._drop(stream)  # no DATA may follow a reset
                stream.on_reset(f.u32(payload))
        elif kind == f.GOAWAY:
            self.goaway_id = f.u32(payload) & 0x7FFFFFFF
            self.on_goaway(self.goaway_id, f.u32(payload, 4))
        # PRIORITY, PUSH_PROMISE (disabled) and unknown frames are ignored.

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        if flags & f.PADDED:
            payload = payload[1 : size - payload[0]]
        self.recv_unacked += size
        if self.recv_unacked >= CONN_RECV_WINDOW // 2:
            self._write(f.window_update(0, self.recv_unacked))
            self.recv_unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            return  # a stream we already closed or reset: the window is acknowledged above
        end = bool(flags & f.END_STREAM)
        if not end:
            stream.recv_unacked += size
            if stream.recv_unacked >= RECV_WINDOW // 2:
                self._write(f.window_update(sid, stream.recv_unacked))
                stream.recv_unacked = 0
        stream.on_data(payload, end)

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HPACKError as exc:
            raise ConnectionError_(f.COMPRESSION_ERROR, f"bad header block: {exc}") from None
        end = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if stream is None:
            self.on_new_stream(sid, headers, end)
        else:
            stream.on_headers(headers, end)

    def _settings(self, payload: bytes) -> None:
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionError_(f.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME <= value < 1 << 24:
                    raise ConnectionError_(f.PROTOCOL_ERROR, f"bad max frame size {value}")
                self.peer_max_frame = value
            elif key == f.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == f.HEADER_TABLE_SIZE:
                self._table_update = True
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        self._unblock()

    def _window_update(self, sid: int, increment: int) -> None:
        if sid == 0:
            self.send_window += increment
        else:
            stream = self.streams.get(sid)
            if stream is None:
                return
            stream.send_window += increment
        self._unblock()

    # -- hooks for the subclasses ----------------------------------------------------------
    def on_new_stream(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """HEADERS opening a stream this connection does not know."""

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        """The peer takes no stream above ``last_stream_id``."""

    # -- sending ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed and not t.is_closing():
            t.write(data)

    def headers_frame(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> bytes:
        """HEADERS (+ CONTINUATION) carrying ``headers``; written by the caller."""
        block = f.cached_header_block(headers)
        if self._table_update:
            block, self._table_update = f.TABLE_SIZE_ZERO + block, False
        flags = f.END_STREAM if end else 0
        limit = self.peer_max_frame
        if len(block) <= limit:
            return f.frame(f.HEADERS, flags | f.END_HEADERS, sid, block)
        parts = [block[i : i + limit] for i in range(0, len(block), limit)]
        out = [f.frame(f.HEADERS, flags, sid, parts[0])]
        out += [f.frame(f.CONTINUATION, 0, sid, p) for p in parts[1:-1]]
        out.append(f.frame(f.CONTINUATION, f.END_HEADERS, sid, parts[-1]))
        return b"".join(out)

    def send(self, stream: H2Stream, data: bytes, end: bool, before: bytes = b"") -> bool:
        """Write ``before`` (frames) then DATA ``data`` within the flow-control windows; what
        does not fit waits for WINDOW_UPDATE. True when everything left at once."""
        n = len(data)
        if (
            stream.pending is None
            and n <= self.send_window
            and n <= stream.send_window
            and n <= self.peer_max_frame
        ):
            self.send_window -= n
            stream.send_window -= n
            self._write(before + f.frame(f.DATA, f.END_STREAM if end else 0, stream.sid, data))
            return True
        if before:
            self._write(before)
        self.queue(stream, data, end, b"")
        return stream.pending is None

    def queue(self, stream: H2Stream, data: bytes | memoryview, end: bool, then: bytes) -> None:
        """Add DATA (and a frame to write after it, e.g. trailers) behind the stream's queue."""
        if stream.pending is None:
            stream.pending = deque()
            self._blocked.append(stream)
        stream.pending.append((data, end, then))
        self._flush(stream)

    def _unblock(self) -> None:
        if self._blocked:
            for stream in list(self._blocked):
                self._flush(stream)

    def _flush(self, stream: H2Stream) -> None:
        pending = stream.pending
        assert pending is not None
        while pending:
            data, end, then = pending[0]
            room = min(self.send_window, stream.send_window, self.peer_max_frame)
            if data and room <= 0:
                return
            chunk: bytes | memoryview = data
            if len(data) > room:  # a view: the rest is not copied for every frame
                data = data if isinstance(data, memoryview) else memoryview(data)
                chunk = data[:room]
            whole = len(chunk) == len(data)
            flags = f.END_STREAM if end and whole else 0
            if data or flags or whole:
                self.send_window -= len(chunk)
                stream.send_window -= len(chunk)
                out = f.frame(f.DATA, flags, stream.sid, chunk) if data or end else b""
                self._write(out + then if whole else out)
            if whole:
                pending.popleft()
            else:
                pending[0] = (data[len(chunk) :], end, then)
        self._drop(stream)  # all sent: no longer blocked, its writer released
        if stream.closed:
            self.streams.pop(stream.sid, None)

    def forget(self, stream: H2Stream) -> None:
        """Drop a finished stream; one with frames still queued goes once they have left."""
        stream.closed = True
        if stream.pending is None:
            self.streams.pop(stream.sid, None)

    def reset(self, stream: H2Stream, code: int) -> None:
        """RST_STREAM ``stream`` (dropping anything queued for it)."""
        stream.closed = True
        self.streams.pop(stream.sid, None)
        self._drop(stream)
        self._write(f.rst_stream(stream.sid, code))

    def _drop(self, stream: H2Stream) -> None:
        """Forget what is queued for ``stream`` and release a writer waiting for it to leave."""
        if stream.pending is not None:
            stream.pending = None
            if stream in self._blocked:
                self._blocked.remove(stream)
        waiter, stream.drained = stream.drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def info(self) -> dict[str, Any]:
        return {"streams": len(self.streams), "blocked": len(self._blocked)}
