"""One HTTP/2 connection fed with frames and read back from what it writes: header blocks split
into CONTINUATION, flow control both ways, SETTINGS, PING, RST_STREAM and protocol errors."""

from __future__ import annotations

import asyncio
from typing import Any

import hpack
import pytest

from expert_router.h2 import frames as f
from expert_router.h2.connection import H2Connection, H2Stream
from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits

RECV_WINDOW, CONN_RECV_WINDOW = DEFAULT_LIMITS.stream_window, DEFAULT_LIMITS.connection_window

Frame = tuple[int, int, int, bytes]

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x")]
"""A well-formed request head (RFC 9113 8.3.1): a malformed one is reset, not opened."""


class Transport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> list[Frame]:
        raw, self.out = bytes(self.out), bytearray()
        return parse(raw)


def parse(raw: bytes) -> list[Frame]:
    out, pos = [], 0
    while pos < len(raw):
        hi, lo, kind, flags, sid = f.HEAD.unpack_from(raw, pos)
        end = pos + 9 + (hi << 16 | lo)
        assert end <= len(raw), "truncated frame"
        out.append((kind, flags, sid, raw[pos + 9 : end]))
        pos = end
    return out


class Stream(H2Stream):
    """Records its events; DATA is taken at once (``keep``: held unread until ``take``)."""

    __slots__ = ("events", "keep")

    def __init__(self, conn: H2Connection, sid: int, keep: bool = False) -> None:
        super().__init__(conn, sid)
        self.events: list[tuple[str, Any, Any]] = []
        self.keep = keep

    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.events.append(("headers", [(bytes(k), bytes(v)) for k, v in headers], end_stream))

    def on_data(self, data: bytes, end_stream: bool) -> int:
        self.events.append(("data", data, end_stream))
        if self.keep:
            self.unread = self.owed
        return self.owed - self.unread

    def take(self, n: int) -> None:
        """The reader takes ``n`` bytes of what was kept."""
        self.unread -= n
        self.settle()

    def on_reset(self, code: int) -> None:
        self.events.append(("reset", code, None))

    def on_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc, None))


class Conn(H2Connection):
    """A server-side connection that records the streams opened (and keeps none)."""

    def __init__(self, limits: H2Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.opened: list[tuple[int, list[tuple[bytes, bytes]], bool]] = []

    def on_new_stream(
        self, sid: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> H2Stream | None:
        self.opened.append((sid, [(bytes(k), bytes(v)) for k, v in headers], end))
        return None


class ClientConn(Conn):
    client_side = True


def opened(conn: H2Connection, sid: int, keep: bool = False) -> Stream:
    """A stream the peer opened, as the subclasses keep them."""
    stream = conn.streams[sid] = Stream(conn, sid, keep)
    conn.last_peer_sid = max(conn.last_peer_sid, sid)
    return stream


def connected(limits: H2Limits = DEFAULT_LIMITS) -> tuple[Conn, Transport]:
    conn, t = Conn(limits), Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(f.PREFACE)
    t.out.clear()  # our SETTINGS
    return conn, t


def test_connection_start_announces_settings_and_window() -> None:
    conn, t = ClientConn(), Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    assert bytes(t.out).startswith(f.PREFACE)
    frames = parse(bytes(t.out)[len(f.PREFACE) :])
    assert frames[0][0] == f.SETTINGS
    assert (f.INITIAL_WINDOW_SIZE, RECV_WINDOW) in f.parse_settings(frames[0][3])
    assert frames[1][:3] == (f.WINDOW_UPDATE, 0, 0)
    assert f.u32(frames[1][3]) == CONN_RECV_WINDOW - f.DEFAULT_WINDOW


@pytest.mark.parametrize("limit", [16_384, 20_000, 50_000])
def test_large_header_block_is_split_into_continuation(limit: int) -> None:
    conn, _ = connected()
    conn.peer_max_frame = limit
    headers = [*REQUEST, (b"x-big", b"v" * 45_000), (b"x-" + b"n" * 300, b"w" * 9000)]
    raw = conn.headers_frame(5, headers, True)
    frames = parse(raw)
    block = f.header_block(headers)
    assert all(len(p) <= limit for *_, p in frames)
    assert b"".join(p for *_, p in frames) == block
    assert frames[0][0] == f.HEADERS and frames[0][1] == f.END_STREAM  # no END_HEADERS yet
    assert [k for k, *_ in frames[1:]] == [f.CONTINUATION] * (len(frames) - 1)
    assert [fl for _, fl, *_ in frames[1:]] == [0] * (len(frames) - 2) + [f.END_HEADERS]
    assert {sid for _, _, sid, _ in frames} == {5}
    decoded = hpack.Decoder(1 << 20).decode(block, raw=True)
    assert [(bytes(k), bytes(v)) for k, v in decoded] == headers
    # and the connection's own reader puts it back together, END_STREAM kept
    reader, _ = connected(H2Limits(max_frame_size=1 << 16, max_header_list_size=1 << 20))
    for i in range(0, len(raw), 777):  # arriving in odd pieces
        reader.data_received(raw[i : i + 777])
    assert reader.opened == [(5, headers, True)]


def test_small_header_block_is_one_frame() -> None:
    conn, _ = connected()
    frames = parse(conn.headers_frame(3, [(b":status", b"200")], False))
    assert frames == [(f.HEADERS, f.END_HEADERS, 3, f.header_block([(b":status", b"200")]))]


def test_table_size_change_is_acknowledged_in_the_next_block() -> None:
    conn, t = connected()
    conn.data_received(f.settings([(f.HEADER_TABLE_SIZE, 0)]))
    assert t.take() == [(f.SETTINGS, f.ACK, 0, b"")]
    first = parse(conn.headers_frame(1, [(b"a", b"b")], False))[0][3]
    second = parse(conn.headers_frame(3, [(b"a", b"b")], False))[0][3]
    assert first == f.TABLE_SIZE_ZERO + second
    dec = hpack.Decoder()
    assert [(bytes(k), bytes(v)) for k, v in dec.decode(first, raw=True)] == [(b"a", b"b")]


def test_padded_and_prioritised_frames_are_read() -> None:
    conn, _ = connected()
    block = f.header_block(REQUEST)
    payload = bytes([3]) + b"\x00\x00\x00\x00\x10" + block + b"pad"
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS | f.PADDED | f.PRIORITY_FLAG, 1, payload))
    assert conn.opened == [(1, REQUEST, False)]
    s = opened(conn, 1)
    conn.data_received(f.frame(f.DATA, f.PADDED | f.END_STREAM, 1, b"\x02hi!xx"))
    assert s.events == [("data", b"hi!", True)]


def test_ping_is_answered_with_its_payload() -> None:
    conn, t = connected()
    conn.data_received(f.frame(f.PING, 0, 0, b"12345678"))
    assert t.take() == [(f.PING, f.ACK, 0, b"12345678")]
    conn.data_received(f.frame(f.PING, f.ACK, 0, b"87654321"))
    assert t.take() == []


def test_headers_interrupted_before_continuation_is_a_protocol_error() -> None:
    conn, t = connected()
    block = f.header_block([(b"a", b"b")])
    conn.data_received(f.frame(f.HEADERS, 0, 1, block[:2]) + f.frame(f.DATA, 0, 1, b"x"))
    (goaway,) = t.take()
    assert goaway[0] == f.GOAWAY and f.u32(goaway[3], 4) == f.PROTOCOL_ERROR
    assert t.closing


def test_bad_preface_is_refused() -> None:
    class Server(H2Connection):
        pass

    conn, t = Server(), Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    t.take()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (goaway,) = t.take()
    assert goaway[0] == f.GOAWAY and f.u32(goaway[3], 4) == f.PROTOCOL_ERROR


def _data(frames: list[Frame], sid: int) -> tuple[bytes, list[int]]:
    body = b"".join(p for kind, _, s, p in frames if kind == f.DATA and s == sid)
    flags = [fl for kind, fl, s, _ in frames if kind == f.DATA and s == sid]
    return body, flags


def test_send_respects_windows_and_frame_size_then_trailers() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    body = bytes(i % 251 for i in range(200_000))
    trailers = conn.headers_frame(1, [(b"grpc-status", b"0")], True)
    assert not conn.send(s, body, False, b"")
    conn.queue(s, b"", False, trailers)
    sent = t.take()
    got, _ = _data(sent, 1)
    assert len(got) == f.DEFAULT_WINDOW  # both windows start at 65535
    assert all(len(p) <= f.DEFAULT_FRAME for *_, p in sent)
    assert conn.info() == {"streams": 1, "blocked": 1}
    # the connection window opens first: still blocked on the stream's window
    conn.data_received(f.window_update(0, 1 << 20))
    assert t.take() == []
    conn.data_received(f.window_update(1, 100_000))
    more, _ = _data(t.take(), 1)
    assert len(more) == 100_000
    conn.data_received(f.window_update(1, 1 << 20))
    rest = t.take()
    tail, flags = _data(rest, 1)
    assert got + more + tail == body
    assert rest[-1][0] == f.HEADERS and rest[-1][1] & f.END_STREAM  # trailers after all data
    assert conn.info()["blocked"] == 0
    assert conn.send_window == f.DEFAULT_WINDOW + (1 << 20) - len(body)


def test_send_end_stream_on_the_last_frame_only() -> None:
    conn, t = connected()
    conn.peer_max_frame = 1000
    s = opened(conn, 3)
    assert conn.send(s, b"x" * 2500, True, conn.headers_frame(3, [(b"a", b"b")], False))
    frames = t.take()
    assert frames[0][0] == f.HEADERS
    body, flags = _data(frames, 3)
    assert body == b"x" * 2500 and flags == [0, 0, f.END_STREAM]
    assert conn.info()["blocked"] == 0  # it all fitted the windows, in three frames


def test_settings_change_of_initial_window_moves_open_streams() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    conn.data_received(f.window_update(0, 1 << 20))
    conn.send(s, b"a" * 60_000, False)
    conn.data_received(f.settings([(f.INITIAL_WINDOW_SIZE, 10_000)]))
    assert s.send_window == 10_000 - 60_000
    t.take()
    conn.send(s, b"b" * 5, False)
    assert _data(t.take(), 1)[0] == b""  # the window is negative: held back
    conn.data_received(f.settings([(f.INITIAL_WINDOW_SIZE, 100_000)]))
    assert _data(t.take(), 1)[0] == b"bbbbb"
    conn.data_received(f.settings([(f.INITIAL_WINDOW_SIZE, 2**31)]))
    (goaway,) = [fr for fr in t.take() if fr[0] == f.GOAWAY]
    assert f.u32(goaway[3], 4) == f.FLOW_CONTROL_ERROR


def test_max_frame_size_setting_allows_larger_frames() -> None:
    conn, t = connected()
    conn.data_received(
        f.settings([(f.MAX_FRAME_SIZE, 1 << 16), (f.INITIAL_WINDOW_SIZE, 1 << 20)])
        + f.window_update(0, 1 << 20)
    )
    t.take()
    s = opened(conn, 1)
    assert conn.send(s, b"y" * 60_000, True)
    assert [len(p) for k, _, _, p in t.take() if k == f.DATA] == [60_000]


async def test_reset_by_the_peer_drops_queued_data() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    assert not conn.send(s, b"z" * 100_000, False)
    conn.queue(s, b"", False, conn.headers_frame(1, [(b"grpc-status", b"0")], True))
    t.take()
    waiter = asyncio.ensure_future(s.drain())
    await asyncio.sleep(0)
    conn.data_received(f.rst_stream(1, f.CANCEL))
    assert s.events == [("reset", f.CANCEL, None)]
    async with asyncio.timeout(1):
        await waiter  # a writer waiting for room is released
    assert conn.info() == {"streams": 0, "blocked": 0}
    conn.data_received(f.window_update(0, 1 << 20) + f.window_update(1, 1 << 20))
    assert t.take() == []  # nothing more for a reset stream


async def test_our_reset_drops_queued_data_and_releases_writers() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    conn.send(s, b"z" * 100_000, False)
    t.take()
    waiter = asyncio.ensure_future(s.drain())
    await asyncio.sleep(0)
    conn.reset(s, f.CANCEL)
    assert t.take() == [(f.RST_STREAM, 0, 1, f.CANCEL.to_bytes(4, "big"))]
    async with asyncio.timeout(1):
        await waiter
    assert conn.info() == {"streams": 0, "blocked": 0}


async def test_lost_connection_releases_writers() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    conn.send(s, b"z" * 100_000, False)
    waiter = asyncio.ensure_future(s.drain())
    conn.pause_writing()
    paused = asyncio.ensure_future(conn.writable())
    await asyncio.sleep(0)
    conn.connection_lost(None)
    async with asyncio.timeout(1):
        await waiter
        await paused
    assert s.events[-1][0] == "lost"


def _updates(frames: list[Frame]) -> dict[int, int]:
    """WINDOW_UPDATE increments by stream id."""
    out: dict[int, int] = {}
    for kind, _, sid, p in frames:
        if kind == f.WINDOW_UPDATE:
            out[sid] = out.get(sid, 0) + f.u32(p)
    return out


def _goaway_code(frames: list[Frame]) -> int | None:
    codes = [f.u32(p, 4) for kind, _, _, p in frames if kind == f.GOAWAY]
    return codes[0] if codes else None


CHUNK = b"d" * 16_384


def test_data_taken_at_once_is_credited_as_it_arrives() -> None:
    conn, t = connected()
    s = opened(conn, 1)
    sent = 0
    while sent < 3 * RECV_WINDOW:  # three windows' worth: credited all along
        conn.data_received(f.frame(f.DATA, 0, 1, CHUNK))
        sent += len(CHUNK)
    ups = _updates(t.take())
    assert sent - ups[1] < RECV_WINDOW // 2  # the peer never runs out of window
    assert sum(len(d) for kind, d, _ in s.events if kind == "data") == sent
    # data in flight for a stream we reset still counts for the connection window
    conn.reset(opened(conn, 3), f.CANCEL)
    for _ in range(CONN_RECV_WINDOW // len(CHUNK)):
        conn.data_received(f.frame(f.DATA, 0, 3, CHUNK))
    ups = _updates(t.take())
    assert 3 not in ups and ups[0] > 0
    # nothing is held: the window left plus what is due to be announced is all of it
    assert conn.recv_window + conn.recv_credit == CONN_RECV_WINDOW
    assert conn.recv_credit < CONN_RECV_WINDOW // 2


def test_data_held_unread_is_credited_only_as_it_is_read() -> None:
    conn, t = connected()
    s = opened(conn, 1, keep=True)
    for _ in range(RECV_WINDOW // len(CHUNK)):  # a whole window, never read
        conn.data_received(f.frame(f.DATA, 0, 1, CHUNK))
    assert _updates(t.take()) == {}
    s.take(1000)  # the peer has no window left: what is read is announced at once
    assert _updates(t.take()) == {1: 1000}
    s.take(RECV_WINDOW // 2)
    assert _updates(t.take()) == {1: RECV_WINDOW // 2}
    s.take(1000)  # the peer has half a window again: small credits wait
    assert _updates(t.take()) == {}
    for _ in range(RECV_WINDOW // 2 // len(CHUNK)):  # about what was announced
        conn.data_received(f.frame(f.DATA, 0, 1, CHUNK))
    conn.data_received(f.frame(f.DATA, 0, 1, b"x" * 1000))
    assert _updates(t.take()) == {1: 1000}  # the peer went below half: the 1000 follow
    conn.data_received(f.frame(f.DATA, 0, 1, b"x" * 1001))  # one byte past the window
    assert _goaway_code(t.take()) == f.FLOW_CONTROL_ERROR


def test_unread_data_of_many_streams_is_bounded_by_the_connection_window() -> None:
    conn, t = connected()
    streams = [opened(conn, 2 * i + 1, keep=True) for i in range(5)]
    sent = 0
    for s in streams:  # 4 windows of 4 MiB fill the 16 MiB connection window
        for _ in range(RECV_WINDOW // len(CHUNK)):
            if sent + len(CHUNK) > CONN_RECV_WINDOW:
                break
            conn.data_received(f.frame(f.DATA, 0, s.sid, CHUNK))
            sent += len(CHUNK)
    assert sent == CONN_RECV_WINDOW and _updates(t.take()) == {}
    conn.data_received(f.frame(f.DATA, 0, 9, b"x"))
    assert _goaway_code(t.take()) == f.FLOW_CONTROL_ERROR


def test_a_closed_stream_gives_back_what_it_held() -> None:
    conn, t = connected()
    s = opened(conn, 1, keep=True)
    for _ in range(100):
        conn.data_received(f.frame(f.DATA, 0, 1, CHUNK))
    t.take()
    conn.reset(s, f.CANCEL)
    assert s.owed == 0 and conn.recv_window + conn.recv_credit == CONN_RECV_WINDOW
    s.take(len(CHUNK))  # reading after the close credits nothing twice
    assert conn.recv_window + conn.recv_credit == CONN_RECV_WINDOW


@pytest.mark.parametrize("value", [0, 16_383, 1 << 24])
def test_invalid_max_frame_size_is_a_protocol_error(value: int) -> None:
    conn, t = connected()
    conn.data_received(f.settings([(f.MAX_FRAME_SIZE, value)]))
    (goaway,) = [fr for fr in t.take() if fr[0] == f.GOAWAY]
    assert f.u32(goaway[3], 4) == f.PROTOCOL_ERROR
    assert conn.peer_max_frame == f.DEFAULT_FRAME


class Exploding(Stream):
    def on_data(self, data: bytes, end_stream: bool) -> int:
        raise ValueError(f"bad bytes {data!r}")  # a message quoting what the peer sent


def test_an_exception_while_reading_ends_only_that_connection_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn, t = connected()
    conn.streams[1] = Exploding(conn, 1)
    conn.last_peer_sid = 1
    other, t2 = connected()
    with caplog.at_level("DEBUG", logger="expert_router.h2"):
        conn.data_received(f.frame(f.DATA, 0, 1, b"Bearer sk-secret"))  # nothing raised here
    assert _goaway_code(t.take()) == f.INTERNAL_ERROR and t.closing
    assert "ValueError" in caplog.text and "sk-secret" not in caplog.text
    conn.data_received(f.frame(f.PING, 0, 0, b"12345678"))  # ended: nothing more is read
    assert t.take() == []
    other.data_received(f.frame(f.PING, 0, 0, b"12345678"))
    assert t2.take() == [(f.PING, f.ACK, 0, b"12345678")]


def test_an_oversized_frame_is_refused_from_its_head() -> None:
    conn, t = connected()
    conn.data_received(f.HEAD.pack(0, 16_385, f.DATA, 0, 1))  # the head alone, no payload
    assert _goaway_code(t.take()) == f.FRAME_SIZE_ERROR
    larger, t2 = connected(H2Limits(max_frame_size=1 << 16))
    opened(larger, 1)
    larger.data_received(f.frame(f.DATA, 0, 1, b"x" * 20_000))
    assert _goaway_code(t2.take()) is None


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (f.frame(f.HEADERS, 0, 1, b"\x00" * 40_000), f.FRAME_SIZE_ERROR),  # over the frame size
        (b"".join([f.frame(f.HEADERS, 0, 1, b"\x00" * 16_000)]
                  + [f.frame(f.CONTINUATION, 0, 1, b"\x00" * 16_000)] * 4), f.ENHANCE_YOUR_CALM),
        (b"".join([f.frame(f.HEADERS, 0, 1, b"")]
                  + [f.frame(f.CONTINUATION, 0, 1, b"")] * 64), f.ENHANCE_YOUR_CALM),
    ],
    ids=["frame-size", "block-bytes", "block-frames"],
)  # fmt: skip
def test_header_blocks_are_capped(frames: bytes, code: int) -> None:
    conn, t = connected()
    conn.data_received(frames)
    assert _goaway_code(t.take()) == code
    kept = sum(map(len, conn._cont[2])) if conn._cont else 0  # nothing past the cap is kept
    assert kept <= DEFAULT_LIMITS.max_header_list_size


def test_streams_past_the_limit_are_refused_and_cancels_budgeted() -> None:
    class Counting(Conn):
        def on_new_stream(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> Stream:
            return Stream(self, sid)

    limits = H2Limits(max_concurrent_streams=2, reset_burst=3, reset_rate=1e-6)
    conn, t = Counting(limits), Transport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(f.PREFACE)
    t.take()
    block = f.header_block(REQUEST)
    for sid in (1, 3, 5, 7, 9):
        conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, sid, block))
    assert sorted(conn.streams) == [1, 3]
    sent = t.take()
    assert [(sid, f.u32(p)) for k, _, sid, p in sent if k == f.RST_STREAM] == [
        (5, f.REFUSED_STREAM), (7, f.REFUSED_STREAM), (9, f.REFUSED_STREAM)
    ]  # fmt: skip
    # refusals cost nothing of the reset budget; streams the peer opens and cancels do
    for cancel, new in ((1, 11), (3, 13), (11, 15)):
        conn.data_received(f.rst_stream(cancel, f.CANCEL))
        conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, new, block))
    assert _goaway_code(t.take()) is None and sorted(conn.streams) == [13, 15]
    conn.data_received(f.rst_stream(13, f.CANCEL))  # the fourth cancel: over the burst
    assert _goaway_code(t.take()) == f.ENHANCE_YOUR_CALM
