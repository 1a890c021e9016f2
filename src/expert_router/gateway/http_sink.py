"""How the HTTP/1.1 ingress writes answers: the ``Sink`` a ``Cycle`` streams a proxied answer
into (the head leaves with the first chunk; HTTP/1.0 clients get it delimited by the close),
and the whole answers of the gateway's own routes and errors.

``HttpResponder`` is the base of ``http_ingress.HttpConnection``: it owns the response side of
a connection; the subclass owns the parsing, the request queue and the timers (``_done``:
what happens once an answer is out).
"""

from __future__ import annotations

from typing import Any

from expert_router.errors import ExpertRouterError
from expert_router.gateway.access import log_access
from expert_router.gateway.cycle import Cycle
from expert_router.gateway.responses import (
    REASONS,
    error_for,
    head,
    status_for,
    stream_error_event,
)
from expert_router.gateway.routes import Answer

_SSE = "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
_LAST = b"0\r\n\r\n"
_CRLF = b"\r\n"
_SIZE_LINES = tuple(b"%x\r\n" % n for n in range(4096))
"""The chunk-size lines of the usual sizes, made once: a relayed event is framed by two
concatenations (bytes ``%`` formatting costs several times more on a core woken by the event)."""


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    n = len(data)
    return (_SIZE_LINES[n] if n < 4096 else b"%x\r\n" % n) + data + _CRLF


class HttpResponder:
    """The response side of one client connection (see the module docstring)."""

    t: Any
    gw: Any
    cycle: Cycle | None
    version: bytes  # the request's HTTP version: b"1.1" or b"1.0"
    close_after: bool  # the connection closes once this answer is out
    responding: bool  # a streamed answer's head has left
    tail: bytes  # the last bytes streamed (an error event must start on its own line)
    write_paused: bool  # the transport's buffer is full

    def _done(self) -> None:
        """The answer is out (the subclass goes on to the next request)."""
        raise NotImplementedError

    def _answer(
        self,
        status: int,
        body: bytes,
        t0: float,
        path: bytes,
        method: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        result = Answer(status, body, "application/json", headers or {})
        self._write_answer(result, t0, path, method)

    def _write_answer(self, result: Answer, t0: float, path: bytes, method: bytes) -> None:
        """Write a whole answer; ``path`` is a known route's (or ``-``): logs never carry
        request bytes."""
        headers = {"Content-Type": result.content_type, **result.headers}
        body = b"" if method == b"HEAD" else result.body
        out = head(result.status, headers, length=len(result.body), close=self.close_after)
        self._write(out + body)
        if self.gw.config.access_log and result.log:
            log_access(path.decode(), result.status, t0, method=method.decode(),
                       remote=self.remote())  # fmt: skip
        self._done()

    # -- the cycle's sink --------------------------------------------------------------------
    def send(self, cycle: Cycle, data: bytes) -> bool:
        # The path of every relayed event: kept to a few steps (see docs/benchmarks.md).
        self.tail = data  # the last bytes sent (an error event must start on its own line)
        if self.version == b"1.1":
            n = len(data)
            out = (_SIZE_LINES[n] if n < 4096 else b"%x\r\n" % n) + data + _CRLF
        else:
            out = data
        if not self.responding:
            out = self._stream_head(cycle) + out
            self.responding = True
        self.t.write(out)  # (never after connection_lost: it aborts the cycle first)
        return not self.write_paused

    def send_end(self, cycle: Cycle, last: bytes = b"") -> bool:
        out = b"" if self.responding else self._stream_head(cycle)
        if self.version == b"1.1":
            self._write(out + (chunk(last) if last else b"") + _LAST)
        else:
            self._write(out + last)
            self.close_after = True
        return True

    def send_whole(self, cycle: Cycle, body: bytes) -> None:
        headers = self._route_headers(cycle, {"Content-Type": cycle.content_type})
        self._write(head(cycle.status, headers, length=len(body), close=self.close_after) + body)

    def send_error(self, cycle: Cycle, exc: ExpertRouterError, status: int) -> None:
        _, body, extra = error_for(exc)
        headers = self._route_headers(cycle, {"Content-Type": "application/json", **extra})
        self._write(head(status, headers, length=len(body), close=self.close_after) + body)

    def send_abort(self, cycle: Cycle, exc: ExpertRouterError) -> None:
        if not self.responding:  # the first bytes never left (their relay failed): a whole
            self.send_error(cycle, exc, status_for(exc))  # error answer, not a cut stream
            return
        event = stream_error_event(exc)
        if not self.tail.endswith(b"\n\n"):
            event = b"\n\n" + event  # the upstream cut an event short: end it first
        if self.version == b"1.1":
            self._write(chunk(event) + _LAST)
        else:
            self._write(event)
            self.close_after = True

    def finished(self, cycle: Cycle) -> None:
        self.cycle = None
        self._done()

    def remote(self) -> str | None:
        peer = self.t.get_extra_info("peername") if self.t is not None else None
        return str(peer[0]) if peer else None

    def _route_headers(self, cycle: Cycle, headers: dict[str, str]) -> dict[str, str]:
        headers["x-expert-router-cluster"] = cycle.cluster
        if cycle.replica is not None:
            headers["x-expert-router-replica"] = cycle.replica.name
        if cycle.t2:
            headers["Server-Timing"] = cycle.server_timing()
        return headers

    def _stream_head(self, cycle: Cycle) -> bytes:
        ctype = cycle.content_type
        sse = _SSE if ctype.startswith("text/event-stream") else ""
        replica = f"x-expert-router-replica: {cycle.replica.name}\r\n" if cycle.replica else ""
        framing = "Transfer-Encoding: chunked\r\n" if self.version == b"1.1" else ""
        close = "Connection: close\r\n" if self.close_after or self.version != b"1.1" else ""
        status = cycle.status
        return (
            f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n{sse}"
            f"x-expert-router-cluster: {cycle.cluster}\r\n{replica}"
            f"Server-Timing: {cycle.server_timing()}\r\n{framing}{close}\r\n"
        ).encode("latin-1")

    def _write(self, data: bytes) -> None:
        t = self.t
        if t is not None and not t.is_closing():
            t.write(data)
