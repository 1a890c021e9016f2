"""gRPC over HTTP/2, the parts both ends share: length-prefixed messages, status codes and
messages (``grpc.StatusCode``), deadlines (``grpc-timeout``) and the error type.
"""

from __future__ import annotations

import zlib
from typing import Any
from urllib.parse import quote, unquote

import grpc

from expert_router.h2.stream import H2Stream

CONTENT_TYPE = b"application/grpc"
STATUS_BY_INT = {code.value[0]: code for code in grpc.StatusCode}
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
MAX_MESSAGE = 4 << 20  # grpc's max_receive_message_length; H2Limits.max_message
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class GrpcError(Exception):
    """An RPC ended with a non-OK status."""

    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{status.name}: {details}")
        self.status, self.details = status, details


def message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class Deframer:
    """Splits a stream's DATA into messages (compressed ones inflated per ``grpc-encoding``),
    refusing any longer than ``limit`` (RESOURCE_EXHAUSTED) as soon as its prefix arrives.

    A message that arrives in pieces is kept as a list of them and joined once it is whole,
    so a large message costs linear time, not one copy of the buffer per DATA frame. After
    each ``feed``, ``taken`` is the bytes that went into whole messages (prefixes included)
    and ``have`` the bytes of the message still arriving.
    """

    __slots__ = ("_parts", "have", "_need", "encoding", "limit", "taken")

    def __init__(self, encoding: bytes = b"identity", limit: int = MAX_MESSAGE) -> None:
        self._parts: list[bytes] = []
        self.have = 0  # bytes in _parts
        self._need = 0  # bytes _parts must hold before a message can be taken out
        self.encoding = encoding
        self.limit = limit
        self.taken = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._parts:
            self._parts.append(data)
            self.have += len(data)
            if self.have < self._need:
                self.taken = 0
                return []
            buf = b"".join(self._parts)
            self._parts = []
        else:
            buf = data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        limit = self.limit
        while n - pos >= 5:
            size = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if size > limit:
                self.clear()
                raise GrpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"message larger than max ({size} vs. {limit})",
                )
            end = pos + 5 + size
            if end > n:
                break
            body = buf[pos + 5 : end]
            if buf[pos]:
                body = self._inflate(body)
            out.append(body)
            pos = end
        self.taken = pos
        if pos < n:
            self._parts = [buf[pos:] if pos else buf]
            self.have = have = n - pos
            self._need = 5 + int.from_bytes(buf[pos + 1 : pos + 5], "big") if have >= 5 else 5
        else:
            self.have = 0
        return out

    def clear(self) -> int:
        """Drop the message still arriving; returns its bytes."""
        have, self.have, self._parts, self.taken = self.have, 0, [], 0
        return have

    def _inflate(self, body: bytes) -> bytes:
        wbits = _WBITS.get(self.encoding)
        if wbits is not None:
            try:
                inflater = zlib.decompressobj(wbits)
                out = inflater.decompress(body, self.limit + 1)
            except zlib.error as exc:
                self.clear()
                raise GrpcError(
                    grpc.StatusCode.INTERNAL, f"cannot decompress a message: {exc}"
                ) from None
            if len(out) > self.limit:
                self.clear()
                raise GrpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"decompressed message larger than max ({self.limit})",
                )
            return out
        self.clear()
        raise GrpcError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"compressed message with grpc-encoding {self.encoding.decode(errors='replace')!r}",
        )

    @property
    def partial(self) -> bool:
        return bool(self._parts)


_ASSEMBLING = "messages arriving on this connection exceed its limit"


class GrpcStream(H2Stream):
    """A stream carrying gRPC messages (``ServerCall``, ``ClientCall``): DATA through its
    ``Deframer``, with the connection's bytes of messages still arriving counted."""

    __slots__ = ("_deframer",)

    def __init__(self, conn: Any, sid: int, encoding: bytes = b"identity") -> None:
        super().__init__(conn, sid)
        self._deframer = Deframer(encoding, conn.limits.max_message)

    def messages(self, data: bytes) -> list[bytes] | None:
        """The whole messages ``data`` completes, counted in ``unread``; None when the call
        failed on them (``fail`` was called)."""
        d = self._deframer
        n = len(data)
        if not d.have and n >= 5 and not data[0] and n - 5 == int.from_bytes(data[1:5], "big"):
            if n - 5 <= d.limit:  # the usual case: one whole message in the frame
                self.unread += n
                return [data[5:]]
        have = d.have
        try:
            out = d.feed(data)
        except GrpcError as exc:
            self.conn.assembling -= have
            self.fail(exc.status, exc.details)
            return None
        self.unread += d.taken
        if d.have != have:
            conn = self.conn
            conn.assembling += d.have - have
            if conn.assembling > conn.limits.max_assembling:
                self.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, _ASSEMBLING)
                return None
        return out

    def fail(self, status: grpc.StatusCode, details: str) -> None:
        """End the call: what it received is broken or too large."""
        raise NotImplementedError

    def release_partial(self) -> int:
        return self._deframer.clear()


def parse_timeout(value: bytes) -> float:
    """``grpc-timeout`` in seconds: 1 to 8 ASCII digits and a unit (the gRPC spec's form).

    >>> parse_timeout(b"250m")
    0.25
    """
    digits, unit = value[:-1], _UNITS.get(value[-1:])
    if unit is None or not digits.isdigit() or len(digits) > 8:  # no sign, space, "_"
        raise GrpcError(grpc.StatusCode.INTERNAL, f"bad grpc-timeout {value[:16]!r}")
    return int(digits) * unit


def format_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value (at most 8 digits) for ``seconds``, in the finest unit that
    fits: milliseconds, rounded (never 0), else whole seconds, minutes or hours, rounded up.

    >>> format_timeout(4.007), format_timeout(1e9)
    (b'4007m', b'16666667M')
    """
    ms = max(1, round(seconds * 1000))
    if ms < 10**8:
        return b"%dm" % ms
    for unit, size in ((b"S", 1), (b"M", 60), (b"H", 3600)):
        n = -(-int(seconds) // size)
        if n < 10**8:
            return b"%d%s" % (n, unit)
    return b"99999999H"


def encode_message(text: str) -> bytes:
    """``grpc-message``: percent-encoded UTF-8."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


def decode_message(value: bytes) -> str:
    return unquote(value.decode("ascii", errors="replace"))


def status_of(value: bytes) -> grpc.StatusCode:
    try:
        return STATUS_BY_INT[int(value)]
    except (KeyError, ValueError):
        return grpc.StatusCode.UNKNOWN


def trailers(status: grpc.StatusCode, details: str = "") -> list[tuple[bytes, bytes]]:
    out = [(b"grpc-status", str(status.value[0]).encode())]
    if details:
        out.append((b"grpc-message", encode_message(details)))
    return out
