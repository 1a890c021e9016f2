"""What the HTTP/1.1 ingress checks beyond llhttp, and how it names what it refuses.

llhttp (strict) refuses malformed framing, header syntax and request lines; these functions
sort its refusals into error codes and add the rules it leaves to the server: the HTTP
version, Host (RFC 9112 3.2), Transfer-Encoding's codings (RFC 9112 6.1, 6.3). A ``Refusal``
is answered with its status and the connection closed; no message quotes a request byte.
"""

from __future__ import annotations

import re

import httptools


class Refusal(Exception):
    """A request that cannot be served or read on: ``status``, ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# reg-name / IPv4 / IP-literal, then an optional port (RFC 3986 3.2.2, RFC 9110 7.2)
_HOST = re.compile(
    rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.vV\-._~!$&'()*+,;=]+\])(?::\d*)?"
)
_TOKEN = re.compile(rb"[A-Z]{1,24}")
MAX_KNOWN_HOSTS = 256
"""Host values remembered as valid (clients repeat theirs, and a known one skips the regex);
past this many the memory starts over, so a client inventing hosts costs only the regex."""
_known_hosts: set[bytes] = set()


def refusal_for(exc: httptools.HttpParserError, data: bytes) -> Refusal:
    """The answer to llhttp refusing ``data``: its reason (which names no request byte),
    sorted into ``invalid_framing``, ``invalid_header`` or ``invalid_request_line``; an
    unknown but well-formed method is 501 (RFC 9110 9.1)."""
    reason = str(exc)
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        method = data.lstrip(b"\r\n").split(b" ", 1)[0]
        if _TOKEN.fullmatch(method):
            return Refusal(501, "method_not_implemented", "this method is not implemented")
        return Refusal(400, "invalid_request_line", "malformed HTTP/1.1 request: bad method")
    low = reason.lower()
    if any(w in low for w in ("content-length", "transfer-encoding", "chunk")):
        return Refusal(400, "invalid_framing", f"malformed HTTP/1.1 request: {reason}")
    if "header" in low:
        return Refusal(400, "invalid_header", f"malformed HTTP/1.1 request: {reason}")
    return Refusal(400, "invalid_request_line", f"malformed HTTP/1.1 request: {reason}")


def check_head(version: str, hosts: list[bytes], te: bytes | None) -> None:
    """The rules llhttp leaves to the server, for a head it accepted."""
    if version == "0.9":
        raise Refusal(400, "invalid_request_line", "HTTP/0.9 is not served")
    if not version.startswith("1."):
        raise Refusal(505, "http_version_not_supported", "only HTTP/1.x is served here")
    if len(hosts) > 1 or (version != "1.0" and not hosts):
        raise Refusal(400, "invalid_host", "a request needs exactly one Host header")
    if hosts and hosts[0] not in _known_hosts:
        if not _HOST.fullmatch(hosts[0]):
            raise Refusal(400, "invalid_host", "the Host header is not a host[:port]")
        if len(_known_hosts) >= MAX_KNOWN_HOSTS:
            _known_hosts.clear()
        _known_hosts.add(hosts[0])
    if te is not None:
        if version == "1.0":
            raise Refusal(400, "invalid_framing", "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip().lower() for c in te.split(b",")]
        if codings[-1] != b"chunked":  # the body's length cannot be known (RFC 9112 6.3)
            raise Refusal(400, "invalid_framing", "chunked must be the last transfer coding")
        if len(codings) > 1:
            raise Refusal(
                501, "unsupported_transfer_encoding", "only the chunked transfer coding is served"
            )
