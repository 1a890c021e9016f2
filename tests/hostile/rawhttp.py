"""A raw HTTP/1.1 client for hostile tests: exact bytes out, responses parsed minimally in.

``RawConn`` writes whatever it is given (send errors are recorded, not raised: a server may
close while a hostile client is still sending) and reads responses with a deadline through
httptools' response parser, noting interim (1xx) responses, framing, and whether and how the
server ended the connection. Nothing here sleeps to synchronise: reads wait on the socket.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httptools

from expert_router.wire.sse import SSEDecoder


@dataclass
class Response:
    status: int
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = False

    def header(self, name: str) -> str | None:
        found = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(found) if found else None

    @property
    def closes(self) -> bool:
        return "close" in (self.header("connection") or "").lower()

    @property
    def chunked(self) -> bool:
        return self.header("transfer-encoding") is not None

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The ``data`` payloads of an SSE body."""
        return list(SSEDecoder().feed(self.body))


@dataclass
class Result:
    """What came back on one connection."""

    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the server ended the connection (FIN or RST)
    reset: bool = False
    error: str | None = None  # bytes that do not parse as an HTTP/1.1 response
    raw: bytes = b""
    elapsed: float = 0.0

    @property
    def finals(self) -> list[Response]:
        return [r for r in self.responses if r.status >= 200 and r.complete]

    def describe(self) -> str:
        parts = []
        for r in self.responses:
            text = f"{r.status}"
            if r.closes:
                text += " Connection: close"
            if not r.complete:
                text += " (incomplete)"
            parts.append(text)
        if self.error:
            parts.append(f"unparsable {self.raw[:40]!r}")
        if not parts:
            parts.append("no response")
        end = "reset" if self.reset else "closed" if self.closed else "open"
        return f"{' + '.join(parts)}, {end} after {self.elapsed:.1f}s"


class _Parser:
    """httptools callbacks collecting responses."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.current: Response | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._name = b""

    def on_message_begin(self) -> None:
        self.current = Response(0, "", [])
        self.result.responses.append(self.current)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()
        self.current.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.complete = True

    def feed(self, data: bytes) -> None:
        if self.result.error is not None:
            self.result.raw += data
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.result.error = str(exc)
            self.result.raw += data

    def eof(self) -> None:
        """A body delimited by the connection's end is complete at EOF."""
        r = self.current
        if r is not None and not r.complete and r.status and r.header("content-length") is None:
            if not r.chunked:
                r.complete = True


class RawConn:
    """One client connection; use as a context manager."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.result = Result()
        self._parser = _Parser(self.result)
        self.send_error: str | None = None
        self.sent = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, *, timeout: float = 3.0) -> bool:
        """Write ``data``; False (and ``send_error`` set) when the server stopped taking it."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (OSError, TimeoutError) as exc:
            self.send_error = type(exc).__name__
            return False
        self.sent += len(data)
        return True

    def read(
        self, deadline: float, *, finals: int = 1, until_close: bool = False, interim: bool = False
    ) -> Result:
        """Read until ``finals`` whole final responses arrived (and, with ``until_close``, the
        server closed), the server closed, or ``deadline`` (seconds from now) passed;
        ``interim``: or until any response, a 1xx included, is whole."""
        end = time.monotonic() + deadline
        res = self.result
        while not res.closed:
            if len(res.finals) >= finals and not until_close:
                break
            if interim and any(r.complete for r in res.responses):
                break
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            except ConnectionResetError:
                res.closed = res.reset = True
                break
            if not data:
                res.closed = True
                self._parser.eof()
                break
            self._parser.feed(data)
        res.elapsed = time.monotonic() - self.t0
        return res

    def wait_closed(self, deadline: float) -> bool:
        """True when the server ends the connection within ``deadline`` s (bytes it sends in
        the meantime are parsed as responses)."""
        self.read(deadline, finals=10**9)
        return self.result.closed


def exchange(host: str, port: int, data: bytes, deadline: float, **read: Any) -> Result:
    """Open a connection, send ``data``, read as ``RawConn.read`` does, close."""
    with RawConn(host, port) as conn:
        conn.send(data)
        return conn.read(deadline, **read)
