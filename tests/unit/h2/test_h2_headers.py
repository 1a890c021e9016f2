"""The memoised HPACK reader gives what a fresh ``hpack.Decoder`` fed the same blocks gives."""

from __future__ import annotations

import hpack

from expert_router.h2.headers import BlockDecoder

HEADERS = [
    (b":method", b"POST"),
    (b":path", b"/inference.GRPCInferenceService/ModelStreamInfer"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-python/1.85"),
]


def _reference(blocks: list[bytes]) -> list[list[tuple[bytes, bytes]]]:
    dec = hpack.Decoder()
    return [[(bytes(n), bytes(v)) for n, v in dec.decode(b, raw=True)] for b in blocks]


def test_repeated_blocks_are_memoised_and_insertions_are_not() -> None:
    enc = hpack.Encoder()
    first = enc.encode(HEADERS)  # inserts every header into the dynamic table
    again = enc.encode(HEADERS)  # only refers to those entries
    assert len(again) < len(first)
    blocks = [first, again, again, again]
    dec = BlockDecoder()
    assert [dec.decode(b) for b in blocks] == _reference(blocks)
    assert first not in dec._memo and again in dec._memo


def test_a_table_change_forgets_what_blocks_meant_before() -> None:
    enc = hpack.Encoder()
    first = enc.encode(HEADERS)
    again = enc.encode(HEADERS)
    other = enc.encode([(b"x-new", b"shifts every dynamic index by one")])
    # The same bytes as ``again`` now name other entries: the memo must not answer for them.
    blocks = [first, again, other, again]
    dec = BlockDecoder()
    got = [dec.decode(b) for b in blocks]
    assert got == _reference(blocks)
    assert got[3] != got[1]


def test_a_table_size_update_clears_the_memo() -> None:
    enc = hpack.Encoder()
    first = enc.encode(HEADERS)
    again = enc.encode(HEADERS)
    enc.header_table_size = 0  # the next block starts with a size update emptying the table
    emptied = enc.encode([(b"a", b"b")])
    blocks = [first, again, emptied]
    dec = BlockDecoder()
    assert [dec.decode(b) for b in blocks] == _reference(blocks)
    assert not dec._memo
