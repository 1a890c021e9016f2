"""The sending half of an HTTP/2 connection: header blocks (split into CONTINUATION at the
peer's frame size) and DATA within the peer's flow-control windows, queued per stream when a
window is closed and written as WINDOW_UPDATE frames reopen it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from expert_router.h2 import frames as f
from expert_router.h2.stream import H2Stream

_HEAD = f.HEAD.pack
_DATA, _END_STREAM = f.DATA, f.END_STREAM


class Sender:
    """What ``H2Connection`` sends; its receiving half sets the windows and calls ``_flush``."""

    transport: asyncio.Transport | None
    closed: bool
    streams: dict[int, H2Stream]
    send_window: int
    peer_max_frame: int
    _blocked: list[H2Stream]
    _table_update: bool

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _finished(self, stream: H2Stream) -> None:
        """``stream`` is over for us and all it queued has left."""
        raise NotImplementedError

    def headers_frame(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> bytes:
        """HEADERS (+ CONTINUATION) carrying ``headers``; written by the caller."""
        return self.block_frame(sid, f.cached_header_block(headers), end)

    def block_frame(self, sid: int, block: bytes, end: bool) -> bytes:
        """HEADERS (+ CONTINUATION) carrying an encoded header ``block``."""
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
            head = _HEAD(n >> 16, n & 0xFFFF, _DATA, _END_STREAM if end else 0, stream.sid)
            t = self.transport  # f.frame and _write, inlined: the path of every message
            if t is not None and not self.closed and not t.is_closing():
                t.write(before + head + data if before else head + data)
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
        if pending is None:
            return
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
            self._finished(stream)

    def _drop(self, stream: H2Stream) -> None:
        """Forget what is queued for ``stream`` and release a writer waiting for it to leave."""
        drained = stream.pending is not None
        if drained:
            stream.pending = None
            if stream in self._blocked:
                self._blocked.remove(stream)
        waiter, stream.drained = stream.drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if drained:
            stream.on_drained()

    def info(self) -> dict[str, Any]:
        return {"streams": len(self.streams), "blocked": len(self._blocked)}
