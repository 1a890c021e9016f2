"""One HTTP/2 connection on an asyncio transport, either end: frames read strictly (RFC 9113:
lengths per type, stream ids and states, SETTINGS values, flow control), the limits of
``H2Limits`` (frame and header-block sizes, streams, resets, unread data, unanswered control
frames), SETTINGS, PING and GOAWAY. Sending is ``send.Sender``'s.

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

from hpack import HPACKError, OversizedHeaderListError

from expert_router.h2 import frames as f
from expert_router.h2.headers import BlockDecoder
from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits
from expert_router.h2.send import Sender
from expert_router.h2.stream import ENDED, RESET_RECEIVED, RESET_SENT, ConnectionError_, H2Stream

log = logging.getLogger("expert_router.h2")

_FRAME_HEAD = f.HEAD.unpack_from
_MASK = f.STREAM_MASK
_DATA, _PADDED, _END_STREAM = f.DATA, f.PADDED, f.END_STREAM  # module globals: one lookup
_SELF_DEPENDENT = 0x100  # not a wire flag: HEADERS whose priority names its own stream
_ON_STREAMS = frozenset({f.DATA, f.HEADERS, f.PRIORITY, f.RST_STREAM, f.PUSH_PROMISE,
                         f.CONTINUATION})  # fmt: skip
_ON_CONNECTION = frozenset({f.SETTINGS, f.PING, f.GOAWAY})
_NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
          "GOAWAY", "WINDOW_UPDATE", "CONTINUATION")  # fmt: skip
_BAD_BLOCK = (HPACKError, IndexError, TypeError, ValueError, UnicodeDecodeError)

__all__ = ["ConnectionError_", "H2Connection", "H2Stream"]


def _error(code: int, message: str) -> ConnectionError_:
    return ConnectionError_(code, message)


def _name(kind: int) -> str:
    return _NAMES[kind] if kind < len(_NAMES) else f"frame type {kind}"


class H2Connection(Sender, asyncio.Protocol):
    """The frame layer shared by the server and client ends."""

    client_side = False

    def __init__(self, limits: H2Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.decoder = BlockDecoder()
        self.decoder.max_header_list_size = limits.max_header_list_size
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
            limit = self.limits.max_frame_size
            handle = self._frame
            while n - pos >= 9:
                hi, lo, kind, flags, sid = _FRAME_HEAD(buf, pos)
                length = hi << 16 | lo
                if length > limit:  # seen from the head: the payload is never buffered
                    self._check_stream_id(kind, sid & _MASK)
                    raise _error(
                        f.FRAME_SIZE_ERROR, f"{_name(kind)} of {length} bytes, over {limit}"
                    )
                end = pos + 9 + length
                if end > n:
                    break
                handle(kind, flags, sid & _MASK, buf[pos + 9 : end])
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
                raise _error(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._buf = buf
            return b""
        if not buf.startswith(f.PREFACE):
            raise _error(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
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
        t.write(f.goaway(self.last_peer_sid, code, message.encode()[:200]))
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

    # -- frames ----------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None:
            self._check_stream_id(kind, sid)
            if kind != f.CONTINUATION or sid != self._cont[0]:
                raise _error(f.PROTOCOL_ERROR, f"{_name(kind)} inside a header block")
            self._continuation(flags, payload)
        elif kind == _DATA:
            if not sid:
                raise _error(f.PROTOCOL_ERROR, "DATA on stream 0")
            self._data(flags, sid, payload)
        elif kind == f.HEADERS:
            self._headers(flags, sid, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == f.PING:
            self._check_length(kind, sid, payload, 8)
            if not flags & f.ACK:
                self._control(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.SETTINGS:
            self._check_stream_id(kind, sid)
            self._settings_frame(flags, payload)
        elif kind == f.RST_STREAM:
            self._check_length(kind, sid, payload, 4)
            self._rst_stream(sid, f.u32(payload))
        elif kind == f.PRIORITY:
            self._check_length(kind, sid, payload, 5)
            if f.u32(payload) & _MASK == sid:
                raise _error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
        elif kind == f.GOAWAY:
            self._check_stream_id(kind, sid)
            if len(payload) < 8:
                raise _error(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self.goaway_id = f.u32(payload) & _MASK
            self.on_goaway(self.goaway_id, f.u32(payload, 4))
        elif kind in (f.CONTINUATION, f.PUSH_PROMISE):
            self._check_stream_id(kind, sid)
            if kind == f.PUSH_PROMISE and len(payload) < (5 if flags & f.PADDED else 4):
                raise _error(f.FRAME_SIZE_ERROR, "PUSH_PROMISE too short for a stream id")
            raise _error(f.PROTOCOL_ERROR, f"unexpected {_name(kind)}")
        # Unknown frame types are ignored (RFC 9113 5.5).

    def _check_stream_id(self, kind: int, sid: int) -> None:
        if sid == 0 and kind in _ON_STREAMS:
            raise _error(f.PROTOCOL_ERROR, f"{_name(kind)} on stream 0")
        if sid != 0 and kind in _ON_CONNECTION:
            raise _error(f.PROTOCOL_ERROR, f"{_name(kind)} on stream {sid}")

    def _check_length(self, kind: int, sid: int, payload: bytes, length: int) -> None:
        self._check_stream_id(kind, sid)
        if len(payload) != length:
            raise _error(f.FRAME_SIZE_ERROR, f"{_name(kind)} of {len(payload)} bytes")

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        if flags & _PADDED:
            payload = self._unpad(payload)
        window = self.recv_window - size
        if window < 0:
            raise _error(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window = window
        stream = self.streams.get(sid)
        if stream is None or stream.remote_ended:
            self._stray_data(sid, size, stream)
            return
        window = stream.recv_window - size
        if window < 0:
            raise _error(f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window = window
        stream.owed += size
        end = flags & _END_STREAM
        if end:
            stream.remote_ended = True
        give = stream.on_data(payload, bool(end))
        if give > 0:
            if give > stream.owed:  # the stream closed meanwhile: its bytes were credited
                give = stream.owed
            stream.owed -= give
            stream.credit += give
            self.recv_credit += give
        if window <= self.stream_half or self.recv_window <= self.conn_half:
            self.announce(stream)  # the peer is down to half a window: see announce

    def _unpad(self, payload: bytes) -> bytes:
        size = len(payload)
        if not size:
            raise _error(f.FRAME_SIZE_ERROR, "padded DATA without its pad length")
        pad = payload[0]
        if pad >= size:
            raise _error(f.PROTOCOL_ERROR, "DATA padding longer than the frame")
        return payload[1 : size - pad]

    def _stray_data(self, sid: int, size: int, stream: H2Stream | None) -> None:
        """DATA for a stream that takes none: its bytes go back to the connection window."""
        self.recv_credit += size
        self.announce(None)
        if stream is not None:  # half-closed (remote): the peer had ended it
            self._stream_error(stream, f.STREAM_CLOSED)
        elif self._idle(sid):
            raise _error(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
        else:
            how = self._closed_ids.get(sid)
            if how == ENDED:
                raise _error(f.STREAM_CLOSED, f"DATA on closed stream {sid}")
            if how != RESET_SENT:  # reset by the peer, or skipped: a stream error
                self._control(f.rst_stream(sid, f.STREAM_CLOSED))

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise _error(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, stop, prio = 0, len(payload), 5 if flags & f.PRIORITY_FLAG else 0
        if flags & f.PADDED:
            if not stop:
                raise _error(f.FRAME_SIZE_ERROR, "padded HEADERS without its pad length")
            start = 1
        if stop - start < prio:
            raise _error(f.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
        if flags & f.PADDED:
            pad = payload[0]
            if pad > stop - start - prio:
                raise _error(f.PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            stop -= pad
        if prio:
            if f.u32(payload, start) & _MASK == sid:
                flags |= _SELF_DEPENDENT  # an error once the block is whole and the stream
                # state checked, in h2's order
            start += prio
        block = payload[start:stop]
        if flags & f.END_HEADERS:
            self._header_block(sid, flags, block)
        elif len(block) > self.limits.max_header_list_size:
            raise self._block_too_large()
        else:
            self._cont = [sid, flags, [block], len(block), 1]

    def _continuation(self, flags: int, payload: bytes) -> None:
        cont = self._cont
        assert cont is not None
        cont[3] += len(payload)
        cont[4] += 1
        if cont[3] > self.limits.max_header_list_size:
            raise self._block_too_large()
        if cont[4] > self.limits.max_header_frames:
            raise _error(f.ENHANCE_YOUR_CALM, f"header block in over {cont[4] - 1} frames")
        cont[2].append(payload)
        if flags & f.END_HEADERS:
            self._cont = None
            self._header_block(cont[0], cont[1], b"".join(cont[2]))

    def _block_too_large(self) -> ConnectionError_:
        size = self.limits.max_header_list_size
        return _error(f.ENHANCE_YOUR_CALM, f"header block over {size} bytes")

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:  # decoded even for a stream that is over: the HPACK table must follow the peer's
            headers = self.decoder.decode(block)
        except OversizedHeaderListError:
            size = self.limits.max_header_list_size
            raise _error(f.ENHANCE_YOUR_CALM, f"header list over {size} bytes") from None
        except _BAD_BLOCK:
            raise _error(f.COMPRESSION_ERROR, "undecodable header block") from None
        end = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:
            if stream.remote_ended:
                self._stream_error(stream, f.STREAM_CLOSED)
                return
            if flags & _SELF_DEPENDENT:
                raise _error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
            if end:
                stream.remote_ended = True
            stream.on_headers(headers, end)
        elif self._idle(sid):
            if flags & _SELF_DEPENDENT:
                raise _error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
            self._open(sid, headers, end)
        else:
            how = self._closed_ids.get(sid)
            if how == RESET_RECEIVED:
                self._control(f.rst_stream(sid, f.STREAM_CLOSED))
            elif how == ENDED:
                raise _error(f.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            elif how is None:
                raise _error(f.PROTOCOL_ERROR, f"new stream {sid} not above {self.last_peer_sid}")

    def _idle(self, sid: int) -> bool:
        """No frame has opened stream ``sid`` yet (RFC 9113 5.1: "idle")."""
        if sid & 1 == self._peer_parity:
            return sid > self.last_peer_sid
        return sid >= self.next_sid

    def _open(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if sid & 1 != self._peer_parity or self.client_side:
            raise _error(f.PROTOCOL_ERROR, f"stream {sid} opened by the wrong end")
        self.last_peer_sid = sid
        if len(self.streams) >= self.limits.max_concurrent_streams:
            self._spend_reset()
            self._control(f.rst_stream(sid, f.REFUSED_STREAM))
            self._remember(sid, RESET_SENT)
            return
        stream = self.on_new_stream(sid, headers, end)
        if stream is not None:
            self.streams[sid] = stream
            stream.remote_ended = end

    def _rst_stream(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise _error(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        if sid & 1 == self._peer_parity and not stream.closed:
            self._spend_reset()  # a call the peer opened and cancels (rapid reset)
        self._retire(stream, RESET_RECEIVED)
        stream.on_reset(code)

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _error(f.FRAME_SIZE_ERROR, f"WINDOW_UPDATE of {len(payload)} bytes")
        increment = f.u32(payload) & _MASK
        if sid == 0:
            if not increment:
                raise _error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise _error(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise _error(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
        elif not increment:
            self._stream_error(stream, f.PROTOCOL_ERROR)
        elif stream.send_window + increment > f.MAX_WINDOW:
            self._stream_error(stream, f.FLOW_CONTROL_ERROR)
        else:
            stream.send_window += increment
            self._flush(stream)

    def _settings_frame(self, flags: int, payload: bytes) -> None:
        if flags & f.ACK:
            if payload:
                raise _error(f.FRAME_SIZE_ERROR, "SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise _error(f.FRAME_SIZE_ERROR, f"SETTINGS of {len(payload)} bytes")
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise _error(f.FLOW_CONTROL_ERROR, f"initial window {value} over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise _error(f.FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME <= value <= f.MAX_FRAME:
                    raise _error(f.PROTOCOL_ERROR, f"bad max frame size {value}")
                self.peer_max_frame = value
            elif key == f.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == f.HEADER_TABLE_SIZE:
                self._table_update = True
            elif key in (f.ENABLE_PUSH, f.ENABLE_CONNECT_PROTOCOL) and value > 1:
                raise _error(f.PROTOCOL_ERROR, f"setting {key} of {value}, not 0 or 1")
            elif key == f.ENABLE_PUSH and value and self.client_side:
                raise _error(f.PROTOCOL_ERROR, "a server may not enable push")
        self._control(f.frame(f.SETTINGS, f.ACK, 0))
        self._unblock()

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

    def _spend_reset(self) -> None:
        """One stream refused or cancelled by the peer, against the rapid-reset budget."""
        now, lim = time.monotonic(), self.limits
        tokens = self._reset_tokens + (now - self._reset_at) * lim.reset_rate
        self._reset_at = now
        if tokens < 1:
            raise _error(f.ENHANCE_YOUR_CALM, "streams cancelled or refused too fast")
        self._reset_tokens = min(tokens, lim.reset_burst) - 1

    def _control(self, frame: bytes) -> None:
        """Write a frame that answers the peer, counting those its socket does not take."""
        if self._paused:
            self._unsent_control += 1
            if self._unsent_control > self.limits.max_unsent_control:
                raise _error(f.ENHANCE_YOUR_CALM, "control frames sent faster than read")
        self._write(frame)

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
        raise _error(f.PROTOCOL_ERROR, "this end takes no streams")

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        """The peer takes no stream above ``last_stream_id``."""

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
