"""One HTTP/2 connection on an asyncio transport, either end: frames read strictly (RFC 9113:
lengths per type, stream ids and states, SETTINGS values, flow control), the limits of
``H2Limits`` (frame and header-block sizes, streams, resets, unread data, unanswered control
frames), SETTINGS, PING and GOAWAY. Frames are checked in ``receive``; sending is ``send``'s.

Streams are ``H2Stream`` objects that the subclasses (``server``, ``client``) create; the
connection calls their ``on_headers`` / ``on_data`` / ``on_reset`` / ``on_lost`` hooks. A
violation ends the stream (RST_STREAM) or the connection (GOAWAY) with the RFC's error code;
nothing raised while reading escapes ``data_received``, and nothing the peer sent is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from typing import Any

from expert_router.h2 import frames as f
from expert_router.h2.headers import BlockDecoder
from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits
from expert_router.h2.receive import Receiver, error, frame_name
from expert_router.h2.stream import ENDED, RESET_SENT, ConnectionError_, H2Stream

log = logging.getLogger("expert_router.h2")

_FRAME_HEAD = f.HEAD.unpack_from
_MASK = f.STREAM_MASK
_DATA = f.DATA

__all__ = ["ConnectionError_", "H2Connection", "H2Stream"]


class H2Connection(Receiver, asyncio.Protocol):
    """The frame layer shared by the server and client ends."""

    client_side = False

    def __init__(self, limits: H2Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.max_frame = limits.max_frame_size  # what we advertised
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.decoder = BlockDecoder()
        self.decoder.max_header_list_size = limits.max_header_list_size
        self._checked: dict[int, tuple[Any, str | None, int | None]] = {}  # receive._check
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop (a test): the first future looks it up
            self.loop = None
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_FRAME
        self.peer_max_streams = f.MAX_WINDOW
        self.send_window = f.DEFAULT_WINDOW
        self.recv_window = limits.connection_window  # what the peer may still send
        self.recv_credit = 0  # credited, not yet announced with WINDOW_UPDATE
        self.stream_half = limits.stream_window // 2
        self.conn_half = limits.connection_window // 2
        self.assembling = 0  # bytes of messages still arriving, all streams
        self.closed = False
        self.goaway_id: int | None = None  # the peer's last stream id after its GOAWAY
        self.next_sid = 1 if self.client_side else 2  # the next stream id we would open
        self.last_peer_sid = 0  # the highest stream id the peer opened
        self._peer_parity = 0 if self.client_side else 1
        self._closed_ids: dict[int, int] = {}  # recently closed stream id -> how (stream.py)
        self._buf = b""
        self._preface = not self.client_side  # a server first reads the client's preface
        self._cont: list[Any] | None = None  # [sid, flags, parts, bytes, frames] of a block
        self._table_update = False
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._blocked: list[H2Stream] = []
        self._ended = False  # we sent GOAWAY: nothing more is read
        self._unsent_control = 0  # control frames written while the transport was full
        self._reset_tokens = float(limits.reset_burst)
        self._reset_at = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]  # uvloop's is no subclass
        lim = self.limits
        ours = [(f.INITIAL_WINDOW_SIZE, lim.stream_window),
                (f.MAX_HEADER_LIST_SIZE, lim.max_header_list_size)]  # fmt: skip
        if self.client_side:
            ours.append((f.ENABLE_PUSH, 0))
        else:
            ours.append((f.MAX_CONCURRENT_STREAMS, lim.max_concurrent_streams))
        if lim.max_frame_size != f.DEFAULT_FRAME:
            ours.append((f.MAX_FRAME_SIZE, lim.max_frame_size))
        out = (f.PREFACE if self.client_side else b"") + f.settings(ours)
        if lim.connection_window > f.DEFAULT_WINDOW:
            out += f.window_update(0, lim.connection_window - f.DEFAULT_WINDOW)
        t.write(out)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self._ended = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._drop(stream)
            stream.on_lost(exc)
        self._wake_writers()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._unsent_control = 0
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
        if self._ended:
            return
        try:  # one function for the whole read: a call per frame less
            buf = self._buf + data if self._buf else data
            if self._preface:
                buf = self._skip_preface(buf)
                if self._preface:
                    return
            pos, n = 0, len(buf)
            limit = self.max_frame
            handle, data_frame = self._frame, self._data
            while n - pos >= 9:
                hi, lo, kind, flags, sid = _FRAME_HEAD(buf, pos)
                length = hi << 16 | lo
                if length > limit:  # seen from the head: the payload is never buffered
                    self._check_stream_id(kind, sid & _MASK)
                    raise error(
                        f.FRAME_SIZE_ERROR, f"{frame_name(kind)} of {length} bytes, over {limit}"
                    )
                end = pos + 9 + length
                if end > n:
                    break
                sid &= _MASK
                if kind == _DATA and sid and self._cont is None:  # the frame of every message
                    data_frame(flags, sid, buf[pos + 9 : end])
                else:
                    handle(kind, flags, sid, buf[pos + 9 : end])
                pos = end
            self._buf = buf[pos:] if pos < n else b""
        except ConnectionError_ as exc:
            self.abort(exc.code, str(exc))
        except Exception as exc:  # a bug, or a stream hook's: this connection only
            where = traceback.extract_tb(exc.__traceback__)[-1]  # no message: it may quote
            log.error(  # what the peer sent
                "HTTP/2 connection ended by an internal error: %s in %s (%s:%d)",
                type(exc).__name__, where.name, os.path.basename(where.filename), where.lineno,
            )  # fmt: skip
            self.abort(f.INTERNAL_ERROR, "internal error")

    def _skip_preface(self, buf: bytes) -> bytes:
        """What follows the client's connection preface (kept in ``_buf`` while it is
        incomplete, ``_preface`` still set)."""
        if len(buf) < len(f.PREFACE):
            if not f.PREFACE.startswith(buf):
                raise error(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._buf = buf
            return b""
        if not buf.startswith(f.PREFACE):
            raise error(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
        self._preface = False
        self._buf = b""
        return buf[len(f.PREFACE) :]

    def abort(self, code: int, message: str, linger: bool = True) -> None:
        """Send GOAWAY naming ``code`` and close: after ``close_linger`` seconds of reading
        and dropping what the peer still sends (closing with unread input would reset the
        connection, and the peer could lose the GOAWAY), or at once without ``linger``; at
        once and dropping what is buffered when the peer is not reading."""
        t = self.transport
        if self._ended or t is None:
            return
        self._ended = True
        log.debug("closing HTTP/2 connection (error %d): %s", code, message)
        self._write(f.goaway(self.last_peer_sid, code, message.encode()[:200]))
        if self._paused:
            t.abort()
        elif linger and self.limits.close_linger > 0 and self._loop_running():
            self.event_loop().call_later(self.limits.close_linger, t.close)
        else:
            t.close()

    def _loop_running(self) -> bool:
        """False for a connection driven by hand, outside any event loop (a test)."""
        try:
            self.event_loop()
        except RuntimeError:
            return False
        return True

    # -- streams ending, budgets -----------------------------------------------------------
    def _stream_error(self, stream: H2Stream, code: int) -> None:
        """RST_STREAM ``code`` for a stream the peer misused; its reader sees a reset."""
        self._control(f.rst_stream(stream.sid, code))
        self._retire(stream, RESET_SENT)
        stream.on_reset(code)

    def _retire(self, stream: H2Stream, how: int) -> None:
        """``stream`` leaves the table: what it queued is dropped, what it held unread goes
        back to the connection window, and how it closed is remembered."""
        stream.closed = True
        if self.streams.pop(stream.sid, None) is None:
            return
        self._remember(stream.sid, how)
        self._drop(stream)
        if not self.streams:
            self.on_idle()
        self.assembling -= stream.release_partial()
        held, stream.owed = stream.owed, 0
        if held:
            self.credit(stream, held)

    def _remember(self, sid: int, how: int) -> None:
        closed = self._closed_ids
        closed[sid] = how
        if len(closed) > self.limits.closed_streams_kept:
            del closed[next(iter(closed))]

    def _finished(self, stream: H2Stream) -> None:
        self._retire(stream, ENDED if stream.remote_ended else RESET_SENT)

    def credit(self, stream: H2Stream, n: int) -> None:
        """``n`` bytes received on ``stream`` are no longer held: give them back to the peer."""
        stream.credit += n
        self.recv_credit += n
        self.announce(stream)

    def announce(self, stream: H2Stream | None) -> None:
        """WINDOW_UPDATE for what was credited, once the peer is down to half a window.
        With nothing held that is when half a window is due; with unread data holding part
        of the window, every credit goes at once (waiting for half a window of credit could
        then wait for ever)."""
        out = b""
        if stream is not None and stream.credit and stream.recv_window <= self.stream_half:
            credit, stream.credit = stream.credit, 0
            if not (stream.remote_ended or stream.closed):
                stream.recv_window += credit
                out = f.window_update(stream.sid, credit)
        credit = self.recv_credit
        if credit and self.recv_window <= self.conn_half:
            self.recv_credit = 0
            self.recv_window += credit
            out += f.window_update(0, credit)
        if out:
            self._write(out)

    # -- hooks for the subclasses ----------------------------------------------------------
    def on_new_stream(
        self, sid: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> H2Stream | None:
        """HEADERS opening stream ``sid``: the stream to keep, or None once it was answered
        and reset (``reject``)."""
        raise error(f.PROTOCOL_ERROR, "this end takes no streams")

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        """The peer takes no stream above ``last_stream_id``."""

    def on_idle(self) -> None:
        """The last open stream has left the table."""

    # -- sending ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed and not t.is_closing():
            t.write(data)

    def reject(self, sid: int, frames: bytes) -> None:
        """Answer a new stream with ``frames`` and reset it (NO_ERROR: nothing more is read)."""
        self._write(frames + f.rst_stream(sid, f.NO_ERROR))
        self._remember(sid, RESET_SENT)

    def forget(self, stream: H2Stream) -> None:
        """Drop a finished stream; one with frames still queued goes once they have left."""
        stream.closed = True
        if stream.pending is None:
            self._finished(stream)

    def reset(self, stream: H2Stream, code: int) -> None:
        """RST_STREAM ``stream`` (dropping anything queued for it); once."""
        if stream.sid in self.streams:
            self._write(f.rst_stream(stream.sid, code))
            self._retire(stream, RESET_SENT)
        stream.closed = True
