"""A ``ClientCall``'s listener holds the window: a message it could not pass on (``message``
returned False) keeps its flow-control credit until ``release``, so a slow reader downstream
stops the server at the stream's window instead of piling its answer up in the gateway."""

from __future__ import annotations

from typing import Any

from expert_router.h2 import frames as f
from expert_router.h2.client import ClientCall, ClientConnection
from expert_router.h2.grpc import GrpcError, message
from expert_router.h2.limits import H2Limits

LIMITS = H2Limits(stream_window=1 << 16, connection_window=1 << 20)
BODY = b"m" * 1000


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def stream_credit(self, sid: int) -> int:
        """WINDOW_UPDATE increments written for stream ``sid`` since the last look."""
        raw, self.out, pos, total = bytes(self.out), bytearray(), 0, 0
        while pos < len(raw):
            hi, lo, kind, _, frame_sid = f.HEAD.unpack_from(raw, pos)
            end = pos + 9 + (hi << 16 | lo)
            if kind == f.WINDOW_UPDATE and frame_sid == sid:
                total += f.u32(raw, pos + 9)
            pos = end
        return total


class Listener:
    def __init__(self) -> None:
        self.full = True
        self.got: list[bytes] = []

    def message(self, framed: bytes) -> bool:
        self.got.append(framed)
        return not self.full

    def end(self, error: GrpcError | None) -> None:
        pass


def _call() -> tuple[ClientConnection, ClientCall, Transport]:
    conn = ClientConnection(LIMITS)
    t = Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(f.settings([]))
    call = ClientCall(conn, 1, object)
    conn.streams[1] = call
    conn.next_sid = 3
    head = f.header_block([(b":status", b"200"), (b"content-type", b"application/grpc")])
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, head))
    t.stream_credit(1)
    return conn, call, t


async def test_messages_a_listener_holds_keep_their_credit_until_it_releases_them() -> None:
    conn, call, t = _call()
    listener = Listener()
    call.listen(listener)
    framed = message(BODY)
    sent = 0
    while sent + len(framed) <= LIMITS.stream_window:  # a whole window, every message held
        conn.data_received(f.frame(f.DATA, 0, 1, framed))
        sent += len(framed)
    assert len(listener.got) == sent // len(framed)
    assert t.stream_credit(1) == 0 and call.unread == sent  # the server is out of window
    listener.full = False
    call.release()  # passed on: the whole window goes back at once
    assert t.stream_credit(1) == sent and call.unread == 0


async def test_a_message_split_across_frames_is_held_too() -> None:
    conn, call, t = _call()
    listener = Listener()
    call.listen(listener)
    framed = message(BODY * 40)  # 40 kB in three frames, over half the window
    for i in range(0, len(framed), 16_000):
        conn.data_received(f.frame(f.DATA, 0, 1, framed[i : i + 16_000]))
    assert listener.got == [framed]
    early = t.stream_credit(1)  # a message still arriving is credited as it comes
    assert early < len(framed) and call.unread > 0  # the rest waits for the listener
    call.release()  # all of it credited; announced once the server is down to half a window
    assert early + t.stream_credit(1) + call.credit == len(framed) and call.unread == 0


async def test_messages_passed_on_at_once_are_credited_as_they_arrive() -> None:
    conn, call, t = _call()
    listener = Listener()
    listener.full = False
    call.listen(listener)
    framed = message(BODY)
    for _ in range(3 * LIMITS.stream_window // len(framed)):  # three windows' worth
        conn.data_received(f.frame(f.DATA, 0, 1, framed))
    assert t.stream_credit(1) > 2 * LIMITS.stream_window and call.unread == 0


async def test_a_malformed_status_ends_that_call_alone() -> None:
    """``:status: 2OO`` is a malformed response (RFC 9113, 8.3.2): that call ends UNKNOWN; the
    connection (and every other call on it) goes on, and stays usable."""
    conn = ClientConnection(LIMITS)
    t = Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(f.settings([]))
    calls = [ClientCall(conn, sid, object) for sid in (1, 3)]
    for call in calls:
        conn.streams[call.sid] = call
    conn.next_sid = 5
    head = f.header_block([(b":status", b"2OO"), (b"content-type", b"application/grpc")])
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, 3, head))
    assert calls[1].error is not None and calls[1].error.status.name == "UNKNOWN"
    assert calls[0].error is None and not calls[0].done
    assert not conn.closed and conn.usable()
    conn.abort(0, "ended by us")
    assert not conn.usable()  # GOAWAY sent: never reused, even before the socket closes
