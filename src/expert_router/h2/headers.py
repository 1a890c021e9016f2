"""Reading HPACK header blocks, memoised: gRPC peers send the same few blocks again and again
(request headers, response headers, ``grpc-status: 0`` trailers), so a block seen before is
looked up instead of decoded, for as long as the dynamic table it may refer to is unchanged.
``hpack.Decoder`` does the decoding itself.
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder

Headers = list[tuple[bytes, bytes]]
_MAX_BLOCK = 1024  # longer blocks are decoded every time
_MAX_MEMO = 256


class BlockDecoder:
    """One connection's HPACK decoder (RFC 7541) with a memo of blocks that did not change
    the dynamic table. The lists it returns are shared: read them, never change them."""

    __slots__ = ("_decoder", "_table", "_memo", "_changes")

    def __init__(self) -> None:
        self._decoder = Decoder()
        self._table: Any = self._decoder.header_table
        self._memo: dict[bytes, Headers] = {}
        self._changes = 0
        add = self._table.add

        def counting_add(name: bytes, value: bytes) -> Any:
            self._changes += 1
            return add(name, value)

        self._table.add = counting_add  # type: ignore[method-assign]  # counts insertions

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
        changes, size = self._changes, self._table.maxsize
        headers: Headers = [
            (bytes(n), bytes(v))
            for n, v in self._decoder.decode(block, raw=True)  # type: ignore[misc]
        ]
        if self._changes != changes or self._table.maxsize != size:
            memo.clear()  # the table moved: blocks read before may now mean something else
        elif len(block) <= _MAX_BLOCK:
            if len(memo) >= _MAX_MEMO:
                memo.clear()
            memo[block] = headers
        return headers
