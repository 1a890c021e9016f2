"""gRPC's shared parts: message framing (split anywhere, compressed), deadlines, status text."""

from __future__ import annotations

import gzip
import zlib

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expert_router.h2 import grpc as g

_messages = st.lists(st.binary(max_size=64), min_size=1, max_size=8)


def _feed_all(d: g.Deframer, parts: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for part in parts:
        out += d.feed(part)
    return out


def test_message_prefix() -> None:
    assert g.message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert g.message(b"") == b"\x00\x00\x00\x00\x00"


def test_every_single_split_point() -> None:
    msgs = [b"", b"a", b"hello world", bytes(range(256)) * 3, b""]
    wire = b"".join(g.message(m) for m in msgs)
    for i in range(len(wire) + 1):
        d = g.Deframer()
        assert _feed_all(d, [wire[:i], wire[i:]]) == msgs, i
        assert not d.partial
    d = g.Deframer()
    assert _feed_all(d, [wire[i : i + 1] for i in range(len(wire))]) == msgs


@given(_messages, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_arbitrary_splits(msgs: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(g.message(m) for m in msgs)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    parts = [wire[a:b] for a, b in zip(points, points[1:], strict=False)]
    d = g.Deframer()
    got = _feed_all(d, parts)
    assert got == msgs
    assert not d.partial


def test_partial_is_reported_until_the_message_is_whole() -> None:
    d = g.Deframer()
    wire = g.message(b"x" * 100)
    assert d.feed(wire[:3]) == [] and d.partial
    assert d.feed(wire[3:50]) == [] and d.partial
    assert d.feed(wire[50:]) == [b"x" * 100] and not d.partial


def test_large_message_in_many_small_pieces() -> None:
    body = bytes(i % 253 for i in range(3 << 20))
    wire = g.message(body) + g.message(b"next")
    d = g.Deframer()
    got = _feed_all(d, [wire[i : i + 16_384] for i in range(0, len(wire), 16_384)])
    assert got == [body, b"next"]


def _compressed(body: bytes) -> bytes:
    return b"\x01" + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [(b"gzip", gzip.compress), (b"deflate", zlib.compress)],
)
def test_compressed_messages_are_inflated(encoding: bytes, pack: object) -> None:
    msgs = [b"plain", b"squeeze me " * 50, "non-ascii é ✓".encode()]
    wire = g.message(msgs[0]) + b"".join(_compressed(pack(m)) for m in msgs[1:])  # type: ignore[operator]
    d = g.Deframer(encoding)
    assert _feed_all(d, [wire[i : i + 7] for i in range(0, len(wire), 7)]) == msgs


def test_compressed_message_with_an_unknown_encoding() -> None:
    with pytest.raises(g.GrpcError) as err:
        g.Deframer(b"snappy").feed(_compressed(b"xx"))
    assert err.value.status == grpc.StatusCode.UNIMPLEMENTED


def test_corrupt_compressed_message_is_a_grpc_error() -> None:
    with pytest.raises(g.GrpcError) as err:
        g.Deframer(b"gzip").feed(_compressed(b"not gzip at all"))
    assert err.value.status == grpc.StatusCode.INTERNAL


def test_oversized_length_is_rejected_before_the_body_arrives() -> None:
    head = b"\x00" + (g.MAX_MESSAGE + 1).to_bytes(4, "big")
    with pytest.raises(g.GrpcError) as err:
        g.Deframer().feed(head + b"abc")
    assert err.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    d = g.Deframer()
    assert d.feed(head[:3]) == []
    with pytest.raises(g.GrpcError):
        d.feed(head[3:])
    # exactly the maximum is allowed (only the prefix is fed here)
    assert g.Deframer().feed(b"\x00" + g.MAX_MESSAGE.to_bytes(4, "big")) == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"7u", 7e-6),
        (b"99999999n", 0.099999999),
        (b"0m", 0.0),
    ],
)
def test_parse_timeout_units(value: bytes, seconds: float) -> None:
    assert g.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [b"", b"S", b"5", b"5x", b"abcS", b"-5S", b" 5S", b"1_0m", b"123456789S", b"1" * 400 + b"S"],
)
def test_bad_timeouts(value: bytes) -> None:
    with pytest.raises(g.GrpcError) as err:
        g.parse_timeout(value)
    assert err.value.status == grpc.StatusCode.INTERNAL


@given(st.floats(min_value=0.0, max_value=3e11, allow_nan=False))
def test_format_timeout_round_trip(seconds: float) -> None:
    value = g.format_timeout(seconds)
    digits, unit = value[:-1], value[-1:]
    assert digits.isdigit() and 1 <= len(digits) <= 8, value
    back = g.parse_timeout(value)
    step = g._UNITS[unit]
    assert back > 0
    assert abs(back - seconds) <= max(step, 1e-3), (seconds, value)


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=10**8 - 1))
def test_milliseconds_survive_a_round_trip(ms: int) -> None:
    value = b"%dm" % ms
    assert g.format_timeout(g.parse_timeout(value)) == value


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_status_message_round_trip(text: str) -> None:
    raw = g.encode_message(text)
    assert all(0x20 <= b <= 0x7E for b in raw)
    assert g.decode_message(raw) == text


def test_status_message_encoding() -> None:
    assert g.encode_message("100% sure") == b"100%25 sure"
    assert g.encode_message("café") == b"caf%C3%A9"
    assert g.encode_message("a\nb") == b"a%0Ab"
    assert g.decode_message(b"caf%C3%A9 %25") == "café %"


def test_status_codes() -> None:
    for code in grpc.StatusCode:
        assert g.status_of(str(code.value[0]).encode()) is code
    assert g.status_of(b"99") is grpc.StatusCode.UNKNOWN
    assert g.status_of(b"x") is grpc.StatusCode.UNKNOWN
    tail = g.trailers(grpc.StatusCode.NOT_FOUND, "no ✓")
    assert tail == [(b"grpc-status", b"5"), (b"grpc-message", b"no %E2%9C%93")]
    assert g.trailers(grpc.StatusCode.OK) == [(b"grpc-status", b"0")]


def test_decompressed_size_is_bounded() -> None:
    d = g.Deframer(b"gzip", limit=10_000)
    assert d.feed(_compressed(gzip.compress(b"\0" * 10_000))) == [b"\0" * 10_000]
    with pytest.raises(g.GrpcError) as err:
        d.feed(_compressed(gzip.compress(b"\0" * 10_001)))
    assert err.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
