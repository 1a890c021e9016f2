"""The receiving half of an HTTP/2 connection: each frame checked as RFC 9113 asks (its length
for its type, its stream id, the stream's state: idle, open, half-closed or closed and how,
SETTINGS values, flow-control windows) and handed to its stream, with the limits of
``H2Limits`` on header blocks, streams, resets and unanswered control frames.
``H2Connection`` (``connection``) owns the state and the transport.
"""

from __future__ import annotations

import time
from typing import Any

from hpack import HPACKError, OversizedHeaderListError

from expert_router.h2 import frames as f
from expert_router.h2.fields import check_request, trailer_problem
from expert_router.h2.headers import BlockDecoder
from expert_router.h2.limits import H2Limits
from expert_router.h2.send import Sender
from expert_router.h2.stream import ENDED, RESET_RECEIVED, RESET_SENT, ConnectionError_, H2Stream

_MASK = f.STREAM_MASK
_DATA, _PADDED, _END_STREAM = f.DATA, f.PADDED, f.END_STREAM  # module globals: one lookup
_SELF_DEPENDENT = 0x100  # not a wire flag: HEADERS whose priority names its own stream
_ON_STREAMS = frozenset({f.DATA, f.HEADERS, f.PRIORITY, f.RST_STREAM, f.PUSH_PROMISE,
                         f.CONTINUATION})  # fmt: skip
_ON_CONNECTION = frozenset({f.SETTINGS, f.PING, f.GOAWAY})
_NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
          "GOAWAY", "WINDOW_UPDATE", "CONTINUATION")  # fmt: skip
_BAD_BLOCK = (HPACKError, IndexError, TypeError, ValueError, UnicodeDecodeError)
_MAX_CHECKED = 64  # header lists whose check is remembered (see _check)


def error(code: int, message: str) -> ConnectionError_:
    """The exception that ends the connection with GOAWAY ``code``."""
    return ConnectionError_(code, message)


def frame_name(kind: int) -> str:
    return _NAMES[kind] if kind < len(_NAMES) else f"frame type {kind}"


class Receiver(Sender):
    """Frame handlers; the state they read and the stream bookkeeping they call are
    ``H2Connection``'s."""

    limits: H2Limits
    decoder: BlockDecoder
    client_side: bool
    peer_initial_window: int
    peer_max_streams: int
    goaway_id: int | None
    recv_window: int
    recv_credit: int
    stream_half: int
    conn_half: int
    next_sid: int
    last_peer_sid: int
    _peer_parity: int
    _closed_ids: dict[int, int]
    _checked: dict[int, tuple[Any, str | None, int | None]]
    _cont: list[Any] | None
    _paused: bool
    _unsent_control: int
    _reset_tokens: float
    _reset_at: float

    def _stream_error(self, stream: H2Stream, code: int) -> None:
        raise NotImplementedError

    def _retire(self, stream: H2Stream, how: int) -> None:
        raise NotImplementedError

    def _remember(self, sid: int, how: int) -> None:
        raise NotImplementedError

    def _check(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, int | None]:
        """``fields.check_request`` of a new stream's headers, memoised by the list: the
        decoder hands back the same list for a block it has seen (a client's calls often send
        the same block), and the memo holds the list, so its id is not reused meanwhile."""
        memo = self._checked
        hit = memo.get(id(headers))
        if hit is not None and hit[0] is headers:
            return hit[1], hit[2]
        why, length = check_request(headers)
        if len(memo) >= _MAX_CHECKED:
            memo.clear()
        memo[id(headers)] = (headers, why, length)
        return why, length

    def malformed(self, sid: int, why: str) -> None:
        """A malformed request on stream ``sid`` (RFC 9113 8.1.1, 8.2, 8.3; ``why`` names the
        rule): a stream error of type PROTOCOL_ERROR, the connection goes on."""
        stream = self.streams.get(sid)
        if stream is not None:
            self._stream_error(stream, f.PROTOCOL_ERROR)
        else:
            self._control(f.rst_stream(sid, f.PROTOCOL_ERROR))
            self._remember(sid, RESET_SENT)

    def refuse(self, sid: int) -> None:
        """RST_STREAM REFUSED_STREAM for a new stream: never processed, safe to retry."""
        self._control(f.rst_stream(sid, f.REFUSED_STREAM))
        self._remember(sid, RESET_SENT)

    def announce(self, stream: H2Stream | None) -> None:
        raise NotImplementedError

    def on_new_stream(
        self, sid: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> H2Stream | None:
        raise NotImplementedError

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        raise NotImplementedError

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None:
            self._check_stream_id(kind, sid)
            if kind != f.CONTINUATION or sid != self._cont[0]:
                raise error(f.PROTOCOL_ERROR, f"{frame_name(kind)} inside a header block")
            self._continuation(flags, payload)
        elif kind == _DATA:
            if not sid:
                raise error(f.PROTOCOL_ERROR, "DATA on stream 0")
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
                raise error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
        elif kind == f.GOAWAY:
            self._check_stream_id(kind, sid)
            if len(payload) < 8:
                raise error(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self.goaway_id = f.u32(payload) & _MASK
            self.on_goaway(self.goaway_id, f.u32(payload, 4))
        elif kind in (f.CONTINUATION, f.PUSH_PROMISE):
            self._check_stream_id(kind, sid)
            if kind == f.PUSH_PROMISE and len(payload) < (5 if flags & f.PADDED else 4):
                raise error(f.FRAME_SIZE_ERROR, "PUSH_PROMISE too short for a stream id")
            raise error(f.PROTOCOL_ERROR, f"unexpected {frame_name(kind)}")
        # Unknown frame types are ignored (RFC 9113 5.5).

    def _check_stream_id(self, kind: int, sid: int) -> None:
        if sid == 0 and kind in _ON_STREAMS:
            raise error(f.PROTOCOL_ERROR, f"{frame_name(kind)} on stream 0")
        if sid != 0 and kind in _ON_CONNECTION:
            raise error(f.PROTOCOL_ERROR, f"{frame_name(kind)} on stream {sid}")

    def _check_length(self, kind: int, sid: int, payload: bytes, length: int) -> None:
        self._check_stream_id(kind, sid)
        if len(payload) != length:
            raise error(f.FRAME_SIZE_ERROR, f"{frame_name(kind)} of {len(payload)} bytes")

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        if flags & _PADDED:
            payload = self._unpad(payload)
        window = self.recv_window - size
        if window < 0:
            raise error(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window = window
        stream = self.streams.get(sid)
        if stream is None or stream.remote_ended:
            self._stray_data(sid, size, stream)
            return
        window = stream.recv_window - size
        if window < 0:
            raise error(f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window = window
        stream.owed += size
        end = flags & _END_STREAM != 0
        if stream.length >= 0:  # a declared content-length: the DATA must add up to it
            left = stream.length - len(payload)
            if left < 0 or end and left:
                self.malformed(sid, "DATA not of the declared content-length")
                return
            stream.length = left
        if end:
            stream.remote_ended = True
        give = stream.on_data(payload, end)
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
            raise error(f.FRAME_SIZE_ERROR, "padded DATA without its pad length")
        pad = payload[0]
        if pad >= size:
            raise error(f.PROTOCOL_ERROR, "DATA padding longer than the frame")
        return payload[1 : size - pad]

    def _stray_data(self, sid: int, size: int, stream: H2Stream | None) -> None:
        """DATA for a stream that takes none: its bytes go back to the connection window."""
        self.recv_credit += size
        self.announce(None)
        if stream is not None:  # half-closed (remote): the peer had ended it
            self._stream_error(stream, f.STREAM_CLOSED)
        elif self._idle(sid):
            raise error(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
        else:
            how = self._closed_ids.get(sid)
            if how == ENDED:
                raise error(f.STREAM_CLOSED, f"DATA on closed stream {sid}")
            if how != RESET_SENT:  # reset by the peer, or skipped: a stream error
                self._control(f.rst_stream(sid, f.STREAM_CLOSED))

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise error(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, stop, prio = 0, len(payload), 5 if flags & f.PRIORITY_FLAG else 0
        if flags & f.PADDED:
            if not stop:
                raise error(f.FRAME_SIZE_ERROR, "padded HEADERS without its pad length")
            start = 1
        if stop - start < prio:
            raise error(f.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
        if flags & f.PADDED:
            pad = payload[0]
            if pad > stop - start - prio:
                raise error(f.PROTOCOL_ERROR, "HEADERS padding longer than the frame")
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
            raise error(f.ENHANCE_YOUR_CALM, f"header block in over {cont[4] - 1} frames")
        cont[2].append(payload)
        if flags & f.END_HEADERS:
            self._cont = None
            self._header_block(cont[0], cont[1], b"".join(cont[2]))

    def _block_too_large(self) -> ConnectionError_:
        size = self.limits.max_header_list_size
        return error(f.ENHANCE_YOUR_CALM, f"header block over {size} bytes")

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:  # decoded even for a stream that is over: the HPACK table must follow the peer's
            headers = self.decoder.decode(block)
        except OversizedHeaderListError:
            size = self.limits.max_header_list_size
            raise error(f.ENHANCE_YOUR_CALM, f"header list over {size} bytes") from None
        except _BAD_BLOCK:
            raise error(f.COMPRESSION_ERROR, "undecodable header block") from None
        end = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:
            if stream.remote_ended:
                self._stream_error(stream, f.STREAM_CLOSED)
                return
            if flags & _SELF_DEPENDENT:
                raise error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
            if not self.client_side:  # a request's trailers (RFC 9113 8.1)
                why = "trailers without END_STREAM" if not end else trailer_problem(headers)
                if why is None and stream.length > 0:
                    why = "trailers before the declared content-length"
                if why is not None:
                    self.malformed(sid, why)
                    return
            if end:
                stream.remote_ended = True
            stream.on_headers(headers, end)
        elif self._idle(sid):
            if flags & _SELF_DEPENDENT:
                raise error(f.PROTOCOL_ERROR, f"stream {sid} depends on itself")
            self._open(sid, headers, end)
        else:
            how = self._closed_ids.get(sid)
            if how == RESET_RECEIVED:
                self._control(f.rst_stream(sid, f.STREAM_CLOSED))
            elif how == ENDED:
                raise error(f.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            elif how is None:
                raise error(f.PROTOCOL_ERROR, f"new stream {sid} not above {self.last_peer_sid}")

    def _idle(self, sid: int) -> bool:
        """No frame has opened stream ``sid`` yet (RFC 9113 5.1: "idle")."""
        if sid & 1 == self._peer_parity:
            return sid > self.last_peer_sid
        return sid >= self.next_sid

    def _open(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if sid & 1 != self._peer_parity or self.client_side:
            raise error(f.PROTOCOL_ERROR, f"stream {sid} opened by the wrong end")
        self.last_peer_sid = sid
        why, length = self._check(headers)
        if why is None and (length == -1 or end and length):
            why = "a content-length that is not the body's"
        if why is not None:
            self.malformed(sid, why)
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:  # not against the reset
            self.refuse(sid)  # budget: clients that open many calls before our SETTINGS
            return  # arrive are refused a burst, and retry
        stream = self.on_new_stream(sid, headers, end)
        if stream is not None:
            self.streams[sid] = stream
            stream.remote_ended = end
            if length is not None:
                stream.length = length
            stream.on_open()

    def _rst_stream(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise error(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        if sid & 1 == self._peer_parity and not stream.closed:
            self._spend_reset()  # a call the peer opened and cancels (rapid reset)
        self._retire(stream, RESET_RECEIVED)
        stream.on_reset(code)

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise error(f.FRAME_SIZE_ERROR, f"WINDOW_UPDATE of {len(payload)} bytes")
        increment = f.u32(payload) & _MASK
        if sid == 0:
            if not increment:
                raise error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise error(f.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._unblock()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise error(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
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
                raise error(f.FRAME_SIZE_ERROR, "SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise error(f.FRAME_SIZE_ERROR, f"SETTINGS of {len(payload)} bytes")
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise error(f.FLOW_CONTROL_ERROR, f"initial window {value} over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise error(f.FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME <= value <= f.MAX_FRAME:
                    raise error(f.PROTOCOL_ERROR, f"bad max frame size {value}")
                self.peer_max_frame = value
            elif key == f.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == f.HEADER_TABLE_SIZE:
                self._table_update = True
            elif key in (f.ENABLE_PUSH, f.ENABLE_CONNECT_PROTOCOL) and value > 1:
                raise error(f.PROTOCOL_ERROR, f"setting {key} of {value}, not 0 or 1")
            elif key == f.ENABLE_PUSH and value and self.client_side:
                raise error(f.PROTOCOL_ERROR, "a server may not enable push")
        self._control(f.frame(f.SETTINGS, f.ACK, 0))
        self._unblock()

    # -- budgets ---------------------------------------------------------------------------
    def _spend_reset(self) -> None:
        """One stream refused or cancelled by the peer, against the rapid-reset budget."""
        now, lim = time.monotonic(), self.limits
        tokens = self._reset_tokens + (now - self._reset_at) * lim.reset_rate
        self._reset_at = now
        if tokens < 1:
            raise error(f.ENHANCE_YOUR_CALM, "streams cancelled or refused too fast")
        self._reset_tokens = min(tokens, lim.reset_burst) - 1

    def _control(self, frame: bytes) -> None:
        """Write a frame that answers the peer, counting those its socket does not take."""
        if self._paused:
            self._unsent_control += 1
            if self._unsent_control > self.limits.max_unsent_control:
                raise error(f.ENHANCE_YOUR_CALM, "control frames sent faster than read")
        self._write(frame)
