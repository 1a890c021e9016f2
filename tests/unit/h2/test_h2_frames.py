"""HTTP/2 framing and HPACK output: what ``frames`` writes is what a real decoder reads back."""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from expert_router.h2 import frames as f

_names = st.binary(min_size=1, max_size=40)
_values = st.binary(max_size=300)
_headers = st.lists(st.tuples(_names, _values), max_size=12)


def _decode(block: bytes, limit: int = 1 << 16) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in hpack.Decoder(limit).decode(block, raw=True)]


@given(_headers)
def test_header_block_decodes_to_the_same_headers(headers: list[tuple[bytes, bytes]]) -> None:
    assert _decode(f.header_block(headers)) == headers


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=0, max_value=70_000),
    st.integers(min_value=0, max_value=70_000),
    st.sampled_from([b"a", b"x-long-name"]),
)
def test_long_names_and_values_use_the_prefix_integer_continuation(
    name_len: int, value_len: int, seed: bytes
) -> None:
    name = (seed * (name_len // len(seed) + 1))[: max(name_len, 1)]
    value = bytes(i % 251 for i in range(value_len))
    block = f.header_block([(name, value), (b"after", b"ok")])
    assert _decode(block, limit=1 << 20) == [(name, value), (b"after", b"ok")]


def test_prefix_integer_boundaries() -> None:
    # RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix, 42 in an 8-bit prefix.
    assert f._integer(10, 5, 0) == b"\x0a"
    assert f._integer(1337, 5, 0) == b"\x1f\x9a\x0a"
    assert f._integer(42, 8, 0) == b"\x2a"
    for n in (126, 127, 128, 254, 255, 16_383, 16_384, 16_510, 16_511, 2_097_279, 2_097_280):
        value = b"v" * n
        assert _decode(f.header_block([(b"k", value)]), limit=1 << 23) == [(b"k", value)]


def test_table_size_update_is_accepted_before_a_block() -> None:
    dec = hpack.Decoder()
    got = dec.decode(f.TABLE_SIZE_ZERO + f.header_block([(b":status", b"200")]), raw=True)
    assert [(bytes(k), bytes(v)) for k, v in got] == [(b":status", b"200")]
    assert dec.header_table_size == 0


@given(
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.binary(max_size=2000) | st.just(b"z" * 70_000),
)
def test_frame_head_round_trip(kind: int, flags: int, sid: int, payload: bytes) -> None:
    raw = f.frame(kind, flags, sid, payload)
    hi, lo, k, fl, s = f.HEAD.unpack_from(raw)
    assert (hi << 16 | lo, k, fl, s) == (len(payload), kind, flags, sid)
    assert raw[9:] == payload and len(raw) == 9 + len(payload)


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)),
        max_size=10,
    )
)
def test_settings_round_trip(values: list[tuple[int, int]]) -> None:
    raw = f.settings(values)
    assert raw[3] == f.SETTINGS and raw[4] == 0 and f.u32(raw, 5) == 0
    assert f.parse_settings(raw[9:]) == values


def test_control_frames() -> None:
    raw = f.window_update(7, 1000)
    assert (raw[3], f.u32(raw, 5), f.u32(raw, 9)) == (f.WINDOW_UPDATE, 7, 1000)
    raw = f.rst_stream(9, f.CANCEL)
    assert (raw[3], f.u32(raw, 5), f.u32(raw, 9)) == (f.RST_STREAM, 9, f.CANCEL)
    raw = f.goaway(11, f.PROTOCOL_ERROR, b"why")
    assert (raw[3], f.u32(raw, 9), f.u32(raw, 13), raw[17:]) == (
        f.GOAWAY,
        11,
        f.PROTOCOL_ERROR,
        b"why",
    )
