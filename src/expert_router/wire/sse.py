"""Server-sent events: encode one event, decode a byte stream incrementally.

The gateway relays OpenAI SSE untouched; these helpers build its own error events and let
tests and clients read streams without a third-party parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

DONE = b"data: [DONE]\n\n"


def encode_event(data: Any) -> bytes:
    """One ``data:`` event carrying ``data`` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class SSEDecoder:
    """Feed bytes as they arrive; get the ``data`` payload of every complete event.

    >>> d = SSEDecoder()
    >>> list(d.feed(b"data: {}\\n\\ndata: [DO")), list(d.feed(b"NE]\\n\\n"))
    (['{}'], ['[DONE]'])
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[str]:
        self._buf = (self._buf + chunk).replace(b"\r\n", b"\n")
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return
            raw, self._buf = self._buf[:end], self._buf[end + 2 :]
            lines = [
                line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")
            ]
            if lines:
                yield b"\n".join(lines).decode("utf-8", errors="replace")
