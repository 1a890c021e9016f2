"""The gateway's HTTP/1.1 ingress: an asyncio protocol whose requests httptools (llhttp) parses.

Every request on every route is read here: the parser's callbacks check the head as it comes
(its size and header count, and the headers the gateway reads, collected by
``wire.http1_callbacks.HeadFields``: compiled where built, no Python runs per header; then
Host, Authorization, framing and Expect, ``http_checks``) and collect the body (bounded);
whole requests are answered in order (pipelining included). A proxy request becomes a
``Cycle`` and this connection is its ``Sink`` (the writing side: ``http_sink``); a client
that stops reading pauses the upstream. Other routes are answered from ``routes``. Timeouts
(head, body, idle) share one lazily re-armed timer; ``http_front`` holds what the
connections of one socket share.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import httptools

from expert_router.errors import ExpertRouterError, RequestError
from expert_router.gateway.access import log_access
from expert_router.gateway.cycle import NONE, Cycle
from expert_router.gateway.http_checks import Refusal, check_head, refusal_for
from expert_router.gateway.http_front import HttpFrontend
from expert_router.gateway.http_sink import HttpResponder
from expert_router.gateway.responses import (
    error_for,
    error_json,
    head,
)
from expert_router.gateway.routes import KNOWN, PROXY, ROUTES, HttpProxyRequest
from expert_router.wire.http1_callbacks import HeadFields
from expert_router.wire.openai import Kind, parse_body

log = logging.getLogger("expert_router.gateway")

PROBE_RESERVE = 64
"""Connections accepted past ``server.max_connections`` to answer probes (and 503 to the
rest). Past that, a new connection closes an idle one (or one still sending its head) to get
in, as nginx reuses connections; with none to close it is closed itself: file descriptors
remain for upstreams and probes, and a flood cannot lock probes out."""
LINGER = 2.0
"""Seconds a refused connection keeps reading (and dropping) what the client still sends,
after its answer and a FIN: closing with unread bytes would reset the connection and lose
the answer (nginx's lingering close)."""
MAX_PIPELINED = 16
"""Whole requests waiting on one connection for their turn. Reading pauses once a read has
carried more than one (nothing more is read until they are answered), but one read (up to
256 KiB) may hold thousands of small requests: past this many, the rest of that read is not
parsed, and the connection closes once those waiting are answered (RFC 9112, 9.3.2: the
client sends the unanswered ones again). Each waiting request costs ~10 times its bytes."""
DRAIN_IDLE = 1.0
"""While draining, seconds an idle keep-alive connection is kept for a request a front end may
already have sent on it (closing it at once would race with that request)."""
IDLE, HEAD, BODY = range(3)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


SPENT = httptools.HttpRequestParser(SimpleNamespace())
"""The parser of a closed connection: calls nothing back (see ``connection_lost``)."""


class _Enough(Exception):
    """Raised in ``on_message_complete`` to stop llhttp: ``MAX_PIPELINED`` requests wait."""


@dataclass(slots=True)
class _Request:
    """A whole request, waiting for its turn; or a refused one (``reject``), to be answered
    in its turn and then the connection closed."""

    method: bytes
    path: bytes  # without its query
    body: bytes
    keep_alive: bool
    version: bytes
    reject: Refusal | None = None


class HttpConnection(HttpResponder, asyncio.Protocol):
    """One client connection: parsing, the request queue, timeouts (answers: the base)."""

    def __init__(self, front: HttpFrontend) -> None:
        self.front = front
        self.gw = front.gw
        self.limits = front.limits
        self.loop = asyncio.get_running_loop()
        self.t: Any = None
        limits = self.limits
        self.fields = fields = HeadFields(Refusal, limits.max_headers, limits.max_head_bytes)
        self.parser = httptools.HttpRequestParser(
            SimpleNamespace(
                on_message_begin=self.on_message_begin,
                on_url=fields.on_url,
                on_header=fields.on_header,
                on_headers_complete=self.on_headers_complete,
                on_body=self.on_body,
                on_message_complete=self.on_message_complete,
            )
        )
        self.state = IDLE
        self.queue: deque[_Request] = deque()
        self.cycle: Cycle | None = None
        self.busy = False  # a request is being answered
        self.dispatching = False  # _serve_queue is running (further down this stack)
        self.closing = False  # no more requests: close once the current answer is out
        self.over_cap = False
        self.write_paused = self.read_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.timer_at = 0.0
        self._begin()
        self.responding = False
        self.tail = b""
        self.version = b"1.1"
        self.close_after = False

    def _begin(self) -> None:
        self.continue_due = False  # a 100 Continue owed to the request being read
        self.path = b""
        self.head_seen = self.body_size = 0
        self.fields.reset()
        self.body: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        front, limits = self.front, self.limits
        n = len(front.conns) + 1
        if n > limits.max_connections + PROBE_RESERVE and not front.evict():
            self.closing = True
            transport.close()
            return
        front.conns[self] = None
        self.over_cap = n > limits.max_connections
        high = limits.write_buffer_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        self._deadline(limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.conns.pop(self, None)
        self.closing = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        cycle, self.cycle = self.cycle, None
        if cycle is not None:
            cycle.abort()
        if self.front.draining:
            self.front.check_quiet()
        # The parser holds this connection's bound methods: a reference cycle that only the
        # cyclic collector would free, whose collections under load walk every request in
        # flight. No callback comes after this one; an inert parser breaks the cycle.
        self.parser = SPENT

    def eof_received(self) -> bool:
        """The client closed its side: it is gone (nginx reads it so too); its request, if
        any, is cancelled upstream."""
        return False

    def data_received(self, data: bytes) -> None:
        try:
            self._feed(data)
        except Exception as exc:  # nothing escapes: no bytes of the request reach a log
            log.error("HTTP/1.1 connection dropped after %s", type(exc).__name__)
            self._close()

    def evictable(self) -> bool:
        """Idle, or still sending its head: may be closed to let another connection in."""
        return not self.busy and self.state != BODY and not self.closing

    def drain(self) -> None:
        if not self.busy and self.state == IDLE:
            self._deadline(DRAIN_IDLE)

    def stop(self, exc: ExpertRouterError) -> None:
        self.queue.clear()
        self.close_after = True
        if self.cycle is not None:
            self.cycle.stop(exc)
        else:
            self._close()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.queue:
            self._resume_reading()
        if self.cycle is not None:
            self.cycle.resume()

    # -- parsing ---------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self.closing:
            return  # a decision to close was taken: what follows is not read
        if self.state == HEAD:
            self.head_seen += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            reason = exc.__context__
            if isinstance(reason, Refusal):
                self._reject(reason.status, reason.code, reason.message)
            elif not isinstance(reason, _Enough):
                raise
        except httptools.HttpParserUpgrade:
            self.closing = True  # the rest is another protocol: answer what came, then close
        except httptools.HttpParserError as exc:  # llhttp's reason names no request byte
            refusal = refusal_for(exc, data)
            self._reject(refusal.status, refusal.code, refusal.message)
        if self.state == HEAD:
            if self.head_seen > self.limits.max_head_bytes:
                self._reject(431, "headers_too_large", "the request head is too large")
            elif self.deadline is None:  # the head is incomplete: it has head_timeout from now
                self._deadline(self.limits.head_timeout)
        elif self.state == BODY:
            self._deadline(self.limits.body_timeout)
        if self.queue and not self.busy:
            self._serve_queue()

    def on_message_begin(self) -> None:
        self.state = HEAD
        self._begin()
        self.deadline = None  # set after this read if the request is not whole by then

    def on_headers_complete(self) -> None:
        self.state = BODY
        parser, fields = self.parser, self.fields
        check_head(parser.get_http_version(), fields.hosts, fields.te)
        method = parser.get_method()
        if method == b"CONNECT":
            raise Refusal(405, "method_not_allowed", "CONNECT is not served here")
        self.path = _path(fields.url)
        route = ROUTES.get(self.path)
        if route is not None and route.auth and not self.gw.key_ok(fields.auth):
            raise Refusal(401, "invalid_api_key", "Incorrect or missing API key. "
                          "Send 'Authorization: Bearer <key>'.")  # fmt: skip
        if self.over_cap and (route is None or not route.probe):
            raise Refusal(503, "too_many_connections", "the gateway has too many connections")
        if fields.length is not None and int(fields.length) > self.gw.max_body:  # llhttp: digits
            raise self._too_large()
        if fields.expect is not None:
            if fields.expect.strip().lower() != b"100-continue":
                raise Refusal(417, "expectation_failed", "only 100-continue is understood")
            if self.busy or self.queue:  # answers before it are due first: sent in its turn
                self.continue_due = True
            else:
                self.t.write(CONTINUE)

    def _too_large(self) -> Refusal:
        return Refusal(413, "request_too_large", f"request body exceeds {self.gw.max_body} bytes")

    def on_body(self, body: bytes) -> None:
        self.continue_due = False  # the body came without it
        self.body_size += len(body)
        if self.body_size > self.gw.max_body:
            raise self._too_large()
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.state = IDLE
        parser = self.parser
        body = self.body
        req = _Request(
            parser.get_method(),
            self.path,
            body[0] if len(body) == 1 else b"".join(body),
            parser.should_keep_alive(),
            parser.get_http_version().encode(),
        )
        queue = self.queue
        queue.append(req)
        if len(queue) > 1 or self.busy:
            # Pipelined: no more reads until the answers before it are out.
            self._pause_reading()
            if len(queue) >= MAX_PIPELINED:  # and no more of this read: see MAX_PIPELINED
                self.closing = True
                raise _Enough

    # -- answering -------------------------------------------------------------------------
    def _serve_queue(self) -> None:
        """Answer the waiting requests in order while none is in flight. A loop, entered once:
        an answer given at once ends in ``_done`` inside ``_dispatch``, and the next request
        is taken here, not one call deeper (thousands of pipelined requests in one read)."""
        if self.dispatching:
            return
        self.dispatching = True
        try:
            while self.queue and not self.busy and not self.t.is_closing():
                self._dispatch(self.queue.popleft())
        finally:
            self.dispatching = False

    def _dispatch(self, req: _Request) -> None:
        if req.reject is not None:
            self._refuse(req.reject)
            return
        self.busy = True
        self.responding = False
        self.deadline = None
        self.version = req.version
        self.close_after = (
            not req.keep_alive
            or req.version != b"1.1"
            or self.front.draining
            or (self.closing and not self.queue)  # the last answer before we close
        )
        t0 = perf_counter()
        path = req.path
        route = ROUTES.get(path)
        method = req.method
        if route is None:
            body = error_json(f"Unknown route for {method.decode()}; {KNOWN}", code="unknown_url")
            self._answer(404, body, t0, b"-", method)
            return
        if method not in route.methods:
            allow = ", ".join(m.decode() for m in route.methods)
            body = error_json(f"{method.decode()} is not allowed here", code="method_not_allowed")
            self._answer(405, body, t0, path, method, {"Allow": allow})
            return
        if route.handler is not PROXY:
            result = route.handler(self.gw, self.front, req.body)
            self._write_answer(result, t0, path, method)
            return
        kind: Kind = "chat" if path == b"/v1/chat/completions" else "completion"
        try:
            parsed = parse_body(req.body, kind)
        except RequestError as exc:
            status, body, _ = error_for(exc)
            self.gw.metrics.count_request(NONE, NONE, status)
            self._answer(status, body, t0, path, method, {"x-expert-router-cluster": NONE})
            return
        proxy = HttpProxyRequest(path.decode(), parsed, req.body, self.gw.text_mode)
        self.cycle = cycle = Cycle(self.gw, proxy, self, t0)
        cycle.start()

    def _reject(self, status: int, code: str, message: str) -> None:
        """A request cannot be read on (its head or body is refused): it is answered in its
        turn, then the connection closes; nothing after it is read."""
        self.closing = True
        self.state = IDLE
        self.deadline = None
        refusal = Refusal(status, code, message)
        if self.busy or self.queue:
            self.queue.append(_Request(b"", b"", b"", False, b"1.1", refusal))
        else:
            self._refuse(refusal)

    def _refuse(self, refusal: Refusal) -> None:
        body = error_json(refusal.message, code=refusal.code)
        headers = {"Content-Type": "application/json", "x-expert-router-cluster": NONE}
        self._write(head(refusal.status, headers, length=len(body), close=True) + body)
        self.gw.metrics.count_request(NONE, NONE, refusal.status)
        if self.gw.config.access_log:
            log_access("-", refusal.status, perf_counter(), method="-", remote=self.remote())
        self._linger()

    # -- between requests ----------------------------------------------------------------------
    def _done(self) -> None:
        """The answer is out: the next request, or idle, or close."""
        self.busy = False
        if self.close_after or self.closing and not self.queue:
            if self.closing:  # our decision, while the client may still send (pipelined
                self._linger()  # requests left unparsed): unread bytes would reset the answer
            else:
                self._close()
        elif self.queue:
            self._serve_queue()
        else:
            if self.continue_due and self.state == BODY:  # its turn has come
                self.continue_due = False
                self.t.write(CONTINUE)
            if not self.write_paused:
                self._resume_reading()
            limits = self.limits
            if self.state == IDLE:
                self._deadline(DRAIN_IDLE if self.front.draining else limits.idle_timeout)
            else:  # the next request began to arrive during the answer: its own timeout
                self._deadline(limits.head_timeout if self.state == HEAD else limits.body_timeout)

    def _close(self) -> None:
        self.closing = True
        if self.t is not None:
            self.t.close()

    def _linger(self) -> None:
        """Close without losing the answer just written: FIN after it, then read and drop
        what the client still sends until it closes or ``LINGER`` seconds pass."""
        self.closing = True
        t = self.t
        if t is None or t.is_closing():
            return
        if not t.can_write_eof():
            t.close()
            return
        self.read_paused = True  # resume_reading below must act
        self._resume_reading()
        t.write_eof()
        self.loop.call_later(LINGER, t.close)

    def _pause_reading(self) -> None:
        if not self.read_paused and self.t is not None and not self.t.is_closing():
            self.read_paused = True
            self.t.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.t is not None and not self.t.is_closing():
            self.read_paused = False
            self.t.resume_reading()

    # -- timeouts: one timer per connection, moved only when a deadline comes earlier --------------
    def _deadline(self, seconds: float) -> None:
        when = self.loop.time() + seconds
        self.deadline = when
        if self.timer is None:
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_at = when
        elif when < self.timer_at:
            self.timer.cancel()
            self.timer = self.loop.call_at(when, self._on_timer)
            self.timer_at = when

    def _on_timer(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.busy or self.closing:
            return
        now = self.loop.time()
        if now < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        if self.state == IDLE:
            self._close()  # an idle keep-alive connection (or one that never sent a byte)
        else:
            what = "request head" if self.state == HEAD else "request body"
            self._reject(408, "request_timeout", f"the {what} did not arrive in time")


def _path(target: bytes) -> bytes:
    """The path of a request target (origin or absolute form), without its query."""
    if target[:1] != b"/":
        try:
            return httptools.parse_url(target).path or b""
        except httptools.HttpParserInvalidURLError:
            return b""
    cut = target.find(b"?")
    return target if cut < 0 else target[:cut]
