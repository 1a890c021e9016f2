"""Malformed requests (RFC 9113 8.1.1, 8.2, 8.3): each rule's header list is refused by
``request_problem`` (or ``trailer_problem``), and on the wire the connection resets that
stream alone (PROTOCOL_ERROR) and goes on; well-formed requests open their stream."""

from __future__ import annotations

from typing import Any

import pytest

from expert_router.h2 import frames as f
from expert_router.h2.connection import H2Connection
from expert_router.h2.fields import content_length, request_problem, trailer_problem
from expert_router.h2.limits import DEFAULT_LIMITS
from expert_router.h2.stream import H2Stream

PSEUDO = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x")]
GOOD = [*PSEUDO, (b"content-type", b"application/grpc")]

MALFORMED = {
    "uppercase name": [*PSEUDO, (b"Content-Type", b"x")],
    "space in a name": [*PSEUDO, (b"x y", b"1")],
    "non-ASCII name": [*PSEUDO, (b"x\xc3\xa9", b"1")],
    "colon in a name": [*PSEUDO, (b"x:y", b"1")],
    "empty name": [*PSEUDO, (b"", b"1")],
    "NUL in a value": [*PSEUDO, (b"x", b"a\x00b")],
    "CR in a value": [*PSEUDO, (b"x", b"a\rb")],
    "LF in a value": [*PSEUDO, (b"x", b"a\nb")],
    "leading space": [*PSEUDO, (b"x", b" a")],
    "trailing tab": [*PSEUDO, (b"x", b"a\t")],
    "connection": [*PSEUDO, (b"connection", b"close")],
    "keep-alive": [*PSEUDO, (b"keep-alive", b"5")],
    "proxy-connection": [*PSEUDO, (b"proxy-connection", b"x")],
    "transfer-encoding": [*PSEUDO, (b"transfer-encoding", b"chunked")],
    "upgrade": [*PSEUDO, (b"upgrade", b"h2c")],
    "te: gzip": [*PSEUDO, (b"te", b"gzip")],
    "pseudo after a field": [(b":method", b"POST"), (b":scheme", b"http"), (b"x", b"1"),
                             (b":path", b"/x")],
    "a response's pseudo": [*PSEUDO, (b":status", b"200")],
    "unknown pseudo": [*PSEUDO, (b":foo", b"1")],
    "repeated :path": [*PSEUDO, (b":path", b"/y")],
    "no :method": PSEUDO[1:],
    "no :scheme": [PSEUDO[0], PSEUDO[2]],
    "no :path": PSEUDO[:2],
    "empty :path": [*PSEUDO[:2], (b":path", b"")],
    "CONNECT with :path": [(b":method", b"CONNECT"), (b":authority", b"a"), (b":path", b"/")],
    "CR in a pseudo's value": [*PSEUDO[:2], (b":path", b"/x\r\n")],
}  # fmt: skip


@pytest.mark.parametrize("headers", MALFORMED.values(), ids=MALFORMED.keys())
def test_each_rule_is_named(headers: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(headers) is not None


@pytest.mark.parametrize(
    "headers",
    [
        GOOD,
        [*PSEUDO, (b":authority", b"a")],  # pseudo-headers in any order, before the fields
        [*PSEUDO, (b"te", b"trailers"), (b"grpc-timeout", b"1S"), (b"x-b", b"a b")],
        [(b":method", b"CONNECT"), (b":authority", b"a:443")],
    ],
)
def test_well_formed_requests_pass(headers: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(headers) is None


def test_trailers_and_content_length() -> None:
    assert trailer_problem([(b"grpc-status", b"0"), (b"x", b"y")]) is None
    assert trailer_problem([]) is None  # an empty trailer section ends the request
    assert trailer_problem([(b":status", b"200")]) is not None
    assert trailer_problem([(b"X", b"y")]) is not None
    assert content_length(GOOD) is None
    assert content_length([*GOOD, (b"content-length", b"12")]) == 12
    assert content_length([*GOOD, (b"content-length", b"-1")]) == -1
    assert content_length([*GOOD, (b"content-length", b"1" * 40)]) == -1


class Stream(H2Stream):
    def on_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.conn.events.append(("trailers", self.sid))  # type: ignore[attr-defined]

    def on_data(self, data: bytes, end_stream: bool) -> int:
        self.conn.events.append(("data", self.sid))  # type: ignore[attr-defined]
        return self.owed

    def on_reset(self, code: int) -> None:
        self.conn.events.append(("reset", self.sid))  # type: ignore[attr-defined]

    def on_lost(self, exc: BaseException | None) -> None:
        pass


class Conn(H2Connection):
    def __init__(self) -> None:
        super().__init__(DEFAULT_LIMITS)
        self.events: list[tuple[str, int]] = []
        self.out = bytearray()
        self.connection_made(self)  # type: ignore[arg-type]
        self.data_received(f.PREFACE)
        self.out.clear()

    def on_new_stream(self, sid: int, headers: Any, end: bool) -> Stream:
        self.events.append(("open", sid))
        return Stream(self, sid)

    # the transport
    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def resets(self) -> list[tuple[int, int]]:
        raw, self.out, pos, out = bytes(self.out), bytearray(), 0, []
        while pos < len(raw):
            hi, lo, kind, _, sid = f.HEAD.unpack_from(raw, pos)
            if kind == f.RST_STREAM:
                out.append((sid, f.u32(raw, pos + 9)))
            elif kind == f.GOAWAY:
                out.append((0, -1))
            pos += 9 + (hi << 16 | lo)
        return out


def _headers(sid: int, headers: list[tuple[bytes, bytes]], end: bool = False) -> bytes:
    return f.frame(f.HEADERS, f.END_HEADERS | (f.END_STREAM if end else 0), sid,
                   f.header_block(headers))  # fmt: skip


def test_on_the_wire_a_malformed_request_resets_its_stream_alone() -> None:
    conn = Conn()
    conn.data_received(_headers(1, MALFORMED["uppercase name"]))
    assert conn.resets() == [(1, f.PROTOCOL_ERROR)] and conn.events == []
    conn.data_received(f.frame(f.DATA, 0, 1, b"x"))  # frames after the reset: ignored
    conn.data_received(_headers(3, GOOD))
    assert conn.events == [("open", 3)] and conn.resets() == []
    # a content-length the DATA does not match, too much or too little
    conn.data_received(_headers(5, [*GOOD, (b"content-length", b"3")]))
    conn.data_received(f.frame(f.DATA, 0, 5, b"abcd"))
    conn.data_received(_headers(7, [*GOOD, (b"content-length", b"3")]))
    conn.data_received(f.frame(f.DATA, f.END_STREAM, 7, b"ab"))
    conn.data_received(_headers(9, [*GOOD, (b"content-length", b"3")], end=True))
    assert conn.resets() == [(5, f.PROTOCOL_ERROR), (7, f.PROTOCOL_ERROR), (9, f.PROTOCOL_ERROR)]
    # the declared length, exactly: served
    conn.data_received(_headers(11, [*GOOD, (b"content-length", b"3")]))
    conn.data_received(f.frame(f.DATA, f.END_STREAM, 11, b"abc"))
    assert ("data", 11) in conn.events and conn.resets() == []
    # trailers with a pseudo-header
    conn.data_received(_headers(13, GOOD))
    conn.data_received(_headers(13, [(b":status", b"200")], end=True))
    assert conn.resets() == [(13, f.PROTOCOL_ERROR)] and ("trailers", 13) not in conn.events
    assert 3 in conn.streams and not conn.closed  # the connection went on throughout
