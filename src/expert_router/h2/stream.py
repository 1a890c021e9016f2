"""One HTTP/2 stream's state as both connection ends keep it: its send and receive windows,
what is queued for it, what its reader holds unread, and how it closed; plus the error a
peer's protocol violation raises.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expert_router.h2.connection import H2Connection

# How a stream closed, remembered for the frames that may still come for it (RFC 9113 5.1).
RESET_SENT = 0  # we sent RST_STREAM: its frames are ignored (they may have been in flight)
RESET_RECEIVED = 1  # the peer reset it: DATA or HEADERS is a stream error STREAM_CLOSED
ENDED = 2  # both ends sent END_STREAM: DATA or HEADERS is a connection error STREAM_CLOSED


class ConnectionError_(Exception):  # noqa: N801  (the builtin's name is taken)
    """The peer broke the protocol; the connection is closed with GOAWAY ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2Stream:
    """One stream; subclasses (``ServerCall``, ``ClientCall``) add what they do with frames.

    Receive-side flow control: ``owed`` counts the bytes received and not yet credited back
    to the peer, ``unread`` the bytes of whole messages waiting for the reader. Everything
    else (padding, a message still arriving, what a listener took at once) is credited when
    it arrives; a reader that takes a message lowers ``unread`` (no call: this is the hot
    path), and the bytes are credited with the next DATA frame or when it sleeps.
    """

    __slots__ = (
        "conn", "sid", "send_window", "pending", "drained", "closed", "_waiter",
        "recv_window", "owed", "unread", "credit", "remote_ended", "length",
    )  # fmt: skip

    def __init__(self, conn: H2Connection, sid: int) -> None:
        self.conn, self.sid = conn, sid
        self.send_window = conn.peer_initial_window
        self.pending: deque[tuple[bytes | memoryview, bool, bytes]] | None = None  # data, end, then
        self.drained: asyncio.Future[None] | None = None
        self.closed = False  # over for us: nothing more is sent or read
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting for frames
        self.recv_window = conn.limits.stream_window  # what the peer may still send
        self.owed = 0
        self.unread = 0
        self.credit = 0  # credited, not yet announced with WINDOW_UPDATE
        self.remote_ended = False  # the peer sent END_STREAM
        self.length = -1  # DATA bytes still due by the peer's content-length (-1: none said)

    async def _wait(self) -> None:
        """Sleep until ``_wake``: frames for this stream arrived, or it ended."""
        if self.owed > self.unread:
            self.settle()
        self._waiter = self.conn.future()
        await self._waiter

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def on_open(self) -> None:
        """The peer opened this stream and it is in the connection's table (a server's)."""

    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, data: bytes, end_stream: bool) -> int:
        """DATA ``data`` (padding removed) arrived; returns how many of the stream's ``owed``
        bytes may be credited now (all but ``unread``; 0 or less: none)."""
        raise NotImplementedError

    def on_reset(self, code: int) -> None:
        raise NotImplementedError

    def on_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def on_drained(self) -> None:
        """What was queued for this stream has left (its flow-control window reopened)."""

    def release_partial(self) -> int:
        """Drop a message still arriving, if any; returns its bytes (they were counted in
        the connection's ``assembling``)."""
        return 0

    def settle(self) -> None:
        """Credit what the reader has taken since the last DATA frame (``on_data`` credits
        all but ``unread`` as each frame arrives; a reader settles before it sleeps)."""
        give = self.owed - self.unread
        if give > 0 and not self.closed:  # once closed, what it held was credited
            self.owed -= give
            self.conn.credit(self, give)

    async def drain(self) -> None:
        """Wait until this stream's queued data has left and the transport accepts more."""
        if self.pending is not None:
            if self.drained is None:
                self.drained = self.conn.future()
            await asyncio.shield(self.drained)
        await self.conn.writable()
