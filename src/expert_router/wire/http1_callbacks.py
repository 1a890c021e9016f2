"""The httptools callbacks that run per header and per body piece, compiled where built.

llhttp calls its protocol back once per header of a request and once or twice per relayed
chunk of an answer. A Python callback costs a frame each time, and on a core that an event
wakes, that frame is most of a relayed event's cost (docs/benchmarks.md). These two
collectors take those callbacks; the connections keep the per-message ones
(``on_headers_complete``, ``on_message_complete``) and read what was collected:

- ``HeadFields``: a request head's target (``on_url``) and the headers the gateway acts on
  (``on_header``), counting every header against the limits;
- ``BodyParts``: an upstream answer's body pieces (``on_body``, ``on_chunk_complete``), a
  chunk bounded until whole, an error answer's body capped.

``wire/_http1.c`` implements both; this module is their Python twin (the same attributes and
behaviour, which tests check side by side) and the fallback where the C module is not built.
"""

from __future__ import annotations

from collections.abc import Callable

Refuse = Callable[[int, str, str], Exception]
"""Makes the exception a head's collector raises: ``refuse(status, code, message)``."""


class PyHeadFields:
    """A request head's target and the headers the gateway reads (see the module)."""

    __slots__ = ("refuse", "max_headers", "max_bytes", "url", "size", "count", "hosts",
                 "length", "auth", "te", "expect")  # fmt: skip

    def __init__(self, refuse: Refuse, max_headers: int, max_bytes: int) -> None:
        self.refuse, self.max_headers, self.max_bytes = refuse, max_headers, max_bytes
        self.reset()

    def reset(self) -> None:
        """Ready for the next request's head."""
        self.url = b""
        self.size = self.count = 0
        self.hosts: list[bytes] = []
        self.length: bytes | None = None  # Content-Length as sent (llhttp checked its digits)
        self.auth: bytes | None = None
        self.te: bytes | None = None
        self.expect: bytes | None = None

    def on_url(self, url: bytes) -> None:
        self.size += len(url)
        if self.size > self.max_bytes:
            raise self.refuse(414, "uri_too_long", "request target too long")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count += 1
        self.size += len(name) + len(value) + 4
        if self.count > self.max_headers:
            raise self.refuse(431, "too_many_headers", "too many request headers")
        if self.size > self.max_bytes:
            raise self.refuse(431, "headers_too_large", "the request head is too large")
        name = name.lower()
        if name == b"host":
            self.hosts.append(value)
        elif name == b"content-length":
            self.length = value
        elif name == b"authorization":
            if self.auth is not None:
                raise self.refuse(400, "duplicate_header", "more than one Authorization header")
            self.auth = value
        elif name == b"transfer-encoding":
            self.te = value
        elif name == b"expect":
            self.expect = value


class PyBodyParts:
    """An answer's body pieces as llhttp de-chunks them (see the module)."""

    __slots__ = ("max_chunk", "max_error", "parts", "whole", "chunk", "chunked", "over",
                 "error_body")  # fmt: skip

    def __init__(self, max_chunk: int, max_error: int) -> None:
        self.max_chunk, self.max_error = max_chunk, max_error
        self.reset()

    def reset(self) -> None:
        """Ready for the next answer."""
        self.parts: list[bytes] = []
        self.whole = 0  # a chunked answer's parts[:whole] are whole chunks (the rest waits)
        self.chunk = 0  # bytes of the chunk being read
        self.chunked = False
        self.over = False  # a chunk passed max_chunk
        self.error_body: bytearray | None = None  # set: the body is an error's, capped

    def on_body(self, body: bytes) -> None:
        error_body = self.error_body
        if error_body is not None:
            error_body += body[: self.max_error - len(error_body)]
            return
        if self.chunked:  # a chunk is held until whole: bounded
            self.chunk += len(body)
            if self.chunk > self.max_chunk:
                self.over = True
                raise PyChunkTooLarge
        self.parts.append(body)

    def on_chunk_complete(self) -> None:
        self.whole = len(self.parts)  # what came so far is whole chunks: it may be relayed
        self.chunk = 0

    def single(self) -> bytes | None:
        """The one whole chunk collected, taken (the common read of a streamed answer); None
        when what was collected is anything else (left as it is)."""
        if self.whole == 1 and len(self.parts) == 1:
            self.whole = 0
            return self.parts.pop()
        return None


class PyChunkTooLarge(Exception):
    """Raised inside llhttp when a chunk grows past ``max_chunk`` (llhttp stops)."""


ChunkTooLarge: type[Exception]
HeadFields: type[PyHeadFields]
BodyParts: type[PyBodyParts]
try:
    from expert_router.wire import _http1
except ImportError:  # not built: the Python twins do the same
    ChunkTooLarge, HeadFields, BodyParts = PyChunkTooLarge, PyHeadFields, PyBodyParts
    COMPILED = False
else:
    ChunkTooLarge, HeadFields, BodyParts = _http1.ChunkTooLarge, _http1.HeadFields, _http1.BodyParts
    COMPILED = True
