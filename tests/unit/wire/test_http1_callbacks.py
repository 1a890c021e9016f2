"""The compiled httptools callbacks (``wire/_http1.c``) against their Python twins: the same
heads and answers, cut anywhere, fed through llhttp to both, leave the same fields, the same
pieces and the same refusals."""

from __future__ import annotations

import sys
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expert_router.gateway.http_checks import Refusal
from expert_router.wire import http1_callbacks as cb

pytestmark = pytest.mark.skipif(
    not cb.COMPILED, reason="expert_router.wire._http1 is not built (no C compiler at install)"
)

NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Authorization",
         b"AUTHORIZATION", b"Transfer-Encoding", b"Expect", b"X-Other", b"Hostx", b"Authorizatio",
         b"Accept", b"User-Agent"]  # fmt: skip


def _cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


def _head_outcome(fields: Any, pieces: list[bytes]) -> tuple[Any, ...]:
    parser = httptools.HttpRequestParser(
        type("P", (), {"on_url": fields.on_url, "on_header": fields.on_header})()
    )
    refused: tuple[int, str] | None = None
    try:
        for piece in pieces:
            parser.feed_data(piece)
    except httptools.HttpParserCallbackError as exc:
        reason = exc.__context__
        assert isinstance(reason, Refusal)
        refused = (reason.status, reason.code)
    except httptools.HttpParserError as exc:
        refused = (0, type(exc).__name__)
    return (refused, fields.url, fields.hosts, fields.length, fields.auth, fields.te,
            fields.expect, fields.count, fields.size)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    target=st.binary(min_size=1, max_size=40).map(
        lambda b: b"/" + bytes(c for c in b if 0x21 <= c < 0x7F)
    ),
    headers=st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.binary(max_size=30).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F)),
        ),
        max_size=12,
    ),  # fmt: skip
    max_headers=st.integers(0, 14),
    max_bytes=st.integers(0, 400),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_a_head_leaves_the_same_fields_and_refusals(
    target: bytes, headers: list[tuple[bytes, bytes]], max_headers: int, max_bytes: int,
    cuts: list[int],
) -> None:  # fmt: skip
    head = b"GET " + target + b" HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    pieces = _cuts(head, cuts)
    compiled = _head_outcome(cb.HeadFields(Refusal, max_headers, max_bytes), pieces)
    python = _head_outcome(cb.PyHeadFields(Refusal, max_headers, max_bytes), pieces)
    assert compiled == python


def _body_states(parts: Any, status: int, chunks: list[bytes], cuts: list[int]) -> list[Any]:
    """Feeds a chunked answer in pieces; after each piece, what the collector holds (and
    what ``single`` takes, every other piece)."""

    def on_headers_complete() -> None:
        if status >= 400:
            parts.error_body = bytearray()

    proto = type("P", (), {"on_body": parts.on_body, "on_chunk_complete": parts.on_chunk_complete,
                           "on_headers_complete": staticmethod(on_headers_complete)})()  # fmt: skip
    parser = httptools.HttpResponseParser(proto)
    answer = b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status
    answer += b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    parts.chunked = True
    states: list[Any] = []
    for i, piece in enumerate(_cuts(answer, cuts)):
        try:
            parser.feed_data(piece)
        except httptools.HttpParserCallbackError:
            states.append("stopped")
            break
        taken = parts.single() if i % 2 else "-"
        eb = parts.error_body
        states.append((taken, list(parts.parts), parts.whole, parts.chunk, parts.over,
                       None if eb is None else bytes(eb)))  # fmt: skip
    return states


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    status=st.sampled_from([200, 200, 500]),
    max_chunk=st.integers(1, 50),
    max_error=st.integers(0, 60),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_an_answer_leaves_the_same_pieces(
    chunks: list[bytes], status: int, max_chunk: int, max_error: int, cuts: list[int]
) -> None:
    compiled = _body_states(cb.BodyParts(max_chunk, max_error), status, chunks, cuts)
    python = _body_states(cb.PyBodyParts(max_chunk, max_error), status, chunks, cuts)
    assert compiled == python


def test_a_chunk_past_the_limit_stops_llhttp_with_over_set() -> None:
    parts = cb.BodyParts(8, 0)
    parts.chunked = True
    parser = httptools.HttpResponseParser(
        type("P", (), {"on_body": parts.on_body, "on_chunk_complete": parts.on_chunk_complete})()
    )
    parser.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
    assert parts.single() == b"abcd" and not parts.over
    with pytest.raises(httptools.HttpParserCallbackError) as caught:
        parser.feed_data(b"9\r\nabcde")  # 5 bytes of a 9-byte chunk: held so far
        parser.feed_data(b"fghi\r\n")
    assert isinstance(caught.value.__context__, cb.ChunkTooLarge)
    assert parts.over and parts.parts == [b"abcde"] and parts.whole == 0


def test_the_compiled_callbacks_refuse_what_llhttp_never_passes() -> None:
    fields = cb.HeadFields(Refusal, 10, 100)
    with pytest.raises(TypeError):
        fields.on_header(b"Host")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        fields.on_url("/text")  # type: ignore[arg-type]
    parts = cb.BodyParts(10, 10)
    with pytest.raises(TypeError):
        parts.on_body(bytearray(b"x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parts.parts = (b"x",)  # type: ignore[assignment]
    with pytest.raises(TypeError):
        parts.error_body = b"x"  # type: ignore[assignment]


def test_the_compiled_callbacks_hold_no_reference_once_reset() -> None:
    """What the C code keeps, it lets go: a value's reference count is back where it was."""
    value, piece = b"Bearer " + b"k" * 40, b"p" * 64
    before = sys.getrefcount(value), sys.getrefcount(piece)
    fields, parts = cb.HeadFields(Refusal, 1000, 10**9), cb.BodyParts(10**9, 10)
    for _ in range(1000):
        fields.on_url(piece)
        fields.on_header(b"Authorization", value)
        fields.on_header(b"Host", value)
        fields.reset()
        parts.on_body(piece)
        parts.on_chunk_complete()
        assert parts.single() is piece
        parts.on_body(piece)
        parts.reset()
    assert (sys.getrefcount(value), sys.getrefcount(piece)) == before
