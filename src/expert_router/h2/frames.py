"""HTTP/2 frames (RFC 9113) and the HPACK output the transport needs (RFC 7541).

Frames are built as bytes in one call. Header blocks are written as literals without
indexing and without Huffman coding, so the peer's decoder state never depends on ours;
reading header blocks is ``hpack.Decoder``'s job.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers (RFC 9113 6.5.2; 8: RFC 8441)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6
ENABLE_CONNECT_PROTOCOL = 8

# Error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE's default and minimum
MAX_FRAME = (1 << 24) - 1
MAX_WINDOW = 2**31 - 1
STREAM_MASK = 0x7FFFFFFF  # stream ids and window increments: the top bit is reserved

HEAD = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


def frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    """One frame: the 9-byte head and ``payload``."""
    n = len(payload)
    return HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def settings(values: Iterable[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS payload whose length is a multiple of 6."""
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int = NO_ERROR, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream_id) + _U32.pack(code) + debug)


def u32(payload: bytes, offset: int = 0) -> int:
    value: int = _U32.unpack_from(payload, offset)[0]
    return value


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's prefix-coded integer (RFC 7541, 5.1) with ``first``'s high bits kept."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BLOCKS: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}


def cached_header_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``header_block``, remembered for the few header lists a gRPC peer sends again and
    again (response headers, ``grpc-status: 0``, a channel's request headers)."""
    key = tuple(headers)
    block = _BLOCKS.get(key)
    if block is None:
        block = header_block(key)
        if len(block) <= 512:
            if len(_BLOCKS) >= 512:
                _BLOCKS.clear()
            _BLOCKS[key] = block
    return block


def header_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A header block of literal fields without indexing, new names, no Huffman coding.

    >>> header_block([(b":status", b"200")])
    b'\\x00\\x07:status\\x03200'
    """
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value
    return bytes(out)


TABLE_SIZE_ZERO = _integer(0, 5, 0x20)  # "dynamic table size update: 0", always allowed
