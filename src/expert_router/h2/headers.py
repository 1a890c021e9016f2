"""Reading HPACK header blocks, memoised: gRPC peers send the same few blocks again and again
(request headers, response headers, ``grpc-status: 0`` trailers), so a block seen before is
looked up instead of decoded, for as long as the dynamic table it may refer to is unchanged.
``hpack.Decoder`` does the decoding itself.
"""

from __future__ import annotations

from hpack import Decoder
from hpack.table import HeaderTable

Headers = list[tuple[bytes, bytes]]
_MAX_BLOCK = 1024  # longer blocks are decoded every time
_MAX_MEMO = 256


class _CountingTable(HeaderTable):  # type: ignore[misc]  # hpack ships no type information
    """The dynamic table, counting its insertions (a memoised block is valid while none came)."""

    changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)


class BlockDecoder:
    """One connection's HPACK decoder (RFC 7541) with a memo of blocks that did not change
    the dynamic table. The lists it returns are shared: read them, never change them."""

    __slots__ = ("_decoder", "_table", "_memo")

    def __init__(self) -> None:
        self._decoder = Decoder()
        # A subclass, not a patched method: a closure on the table would make every closed
        # connection a reference cycle, left to the cyclic collector.
        self._table = self._decoder.header_table = _CountingTable()
        self._memo: dict[bytes, Headers] = {}

    @property
    def max_header_list_size(self) -> int:
        """The largest header list accepted (decoded size, RFC 7541 4.1)."""
        size: int = self._decoder.max_header_list_size
        return size

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        self._decoder.max_header_list_size = value
        self._memo.clear()

    def decode(self, block: bytes) -> Headers:
        """The (name, value) pairs of ``block``; ``hpack.HPACKError`` when it is malformed."""
        memo = self._memo
        hit = memo.get(block)
        if hit is not None:
            return hit
        changes, size = self._table.changes, self._table.maxsize
        headers: Headers = [
            (bytes(n), bytes(v))
            for n, v in self._decoder.decode(block, raw=True)  # type: ignore[misc]
        ]
        if self._table.changes != changes or self._table.maxsize != size:
            memo.clear()  # the table moved: blocks read before may now mean something else
        elif len(block) <= _MAX_BLOCK:
            if len(memo) >= _MAX_MEMO:
                memo.clear()
            memo[block] = headers
        return headers
