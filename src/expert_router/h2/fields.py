"""What makes a request's header list malformed (RFC 9113, 8.1.1, 8.2 and 8.3): the checks a
server makes before a stream is handed to its method. A malformed request is a stream error
of type PROTOCOL_ERROR: the stream is reset, the connection goes on.

>>> request_problem([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x")])
>>> request_problem([(b":path", b"/x"), (b"Host", b"a")])
'a field name with uppercase, space, control or non-ASCII bytes'
"""

from __future__ import annotations

_NAME_BYTES = bytes(range(0x21, 0x41)) + bytes(range(0x5B, 0x7F)) + b"\n"
"""8.2.1: a field name holds none of 0x00-0x20, 0x41-0x5a (uppercase), 0x7f-0xff."""
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
"""8.2.2: fields of HTTP/1.1 connections, never sent in HTTP/2 (``te`` only as ``trailers``)."""
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_REQUIRED = frozenset({b":method", b":scheme", b":path"})  # 8.3.1, all but CONNECT


def _fields_problem(names: list[bytes], values: list[bytes]) -> str | None:
    """Why regular field ``names`` or any of ``values`` break 8.2.1, or None. Each list is
    checked whole, joined by LF (itself refused in both): two scans, not two per field."""
    joined = b"\n".join(values)
    if (
        joined.count(b"\n") != max(len(values) - 1, 0)  # (no field: no separator)
        or b"\r" in joined
        or b"\x00" in joined
        or joined[:1] in (b" ", b"\t")
        or joined[-1:] in (b" ", b"\t")
        or b"\n " in joined
        or b" \n" in joined
        or b"\n\t" in joined
        or b"\t\n" in joined
    ):
        return "a field value with NUL, CR, LF or whitespace at an end"
    joined = b"\n".join(names)
    if not all(names) or joined.translate(None, _NAME_BYTES):
        return "a field name with uppercase, space, control or non-ASCII bytes"
    if b":" in joined:
        return "a colon in a field name"
    return None


def check_request(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, int | None]:
    """Why a request's header list is malformed (None: it is not), and the ``content-length``
    it declares (None: none; -1: a malformed one)."""
    seen: set[bytes] = set()
    names: list[bytes] = []
    values: list[bytes] = []
    method = path = b""
    length: int | None = None
    for name, value in headers:
        values.append(value)
        if name[:1] == b":":
            if names:
                return "a pseudo-header after a regular field", length
            if name not in REQUEST_PSEUDO:
                return "a pseudo-header that is not a request's", length
            if name in seen:
                return "a repeated pseudo-header", length
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            continue
        names.append(name)
        if name in CONNECTION_SPECIFIC:
            return "a connection-specific field", length
        if name == b"te" and value != b"trailers":
            return "te other than trailers", length
        if name == b"content-length" and length is None:
            length = int(value) if value.isdigit() and len(value) < 19 else -1
    return _request_problem(names, values, seen, method, path), length


def _request_problem(
    names: list[bytes], values: list[bytes], seen: set[bytes], method: bytes, path: bytes
) -> str | None:
    why = _fields_problem(names, values)
    if why is not None:
        return why
    if method == b"CONNECT":
        if b":authority" not in seen or b":scheme" in seen or b":path" in seen:
            return "a CONNECT request without :authority alone"
        return None
    if not _REQUIRED <= seen:
        return "a request without :method, :scheme and :path"
    if not path:
        return "an empty :path"
    return None


def request_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header list is malformed, or None."""
    return check_request(headers)[0]


def trailer_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's trailers are malformed (8.1: no pseudo-header in them), or None."""
    names = [name for name, _ in headers]
    if any(name[:1] == b":" for name in names):
        return "a pseudo-header in trailers"
    if any(name in CONNECTION_SPECIFIC for name in names):
        return "a connection-specific field"
    return _fields_problem(names, [value for _, value in headers])


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The ``content-length`` a request declares (-1: a malformed one), or None."""
    return check_request(headers)[1]
