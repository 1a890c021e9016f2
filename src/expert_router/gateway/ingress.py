"""A lean HTTP/1.1 ingress for the hot path: streaming POSTs to the two proxy routes.

Every connection starts here. A well-formed streaming request (HTTP/1.1, Content-Length,
authorised, valid body) is classified and routed in ``data_received``; when its replica has an
idle pooled connection it is written upstream there and then, and an ``Exchange`` relays the
answer by callbacks; otherwise (and to retry) a coroutine serves it. Responses have a
hand-written head. The first request that is anything else hands the connection, bytes read so
far included, to aiohttp's request handler (``proxy.Proxy``) for the rest of its life.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from aiohttp import web

from expert_router.backends import BackendRequest, UpstreamResponse
from expert_router.backends.http1 import Http1Backend
from expert_router.backends.http1_conn import Http1Connection
from expert_router.errors import BackendError, ExpertRouterError, RequestError, RoutingError
from expert_router.gateway.app import Gateway
from expert_router.gateway.exchange import LAST, Exchange, Job, chunk, response_head
from expert_router.gateway.pools import Replica
from expert_router.gateway.proxy import _SSE_HEADERS, NONE, _ClientSink
from expert_router.gateway.responses import for_exception, stream_error_event
from expert_router.routing import RouteDecision
from expert_router.wire.openai import Kind, ParsedRequest, parse_body, with_model

access_log = logging.getLogger("expert_router.access")
ROUTES: dict[bytes, tuple[Kind, str]] = {
    b"/v1/chat/completions": ("chat", "/v1/chat/completions"),
    b"/v1/completions": ("completion", "/v1/completions"),
}
_MAX_HEAD = 64 * 1024
_MAX_PENDING = 1024 * 1024
IDLE_TIMEOUT = 75.0  # seconds a kept-alive connection may sit idle (aiohttp's default)


class _EndingSink(_ClientSink):
    """A client sink that may also take the upstream's last chunk (a plain ``0\r\n\r\n``,
    as this response ends too) with the events before it: one write less per stream."""

    __slots__ = ("ended",)

    def __init__(self, transport: Any) -> None:
        super().__init__(transport)
        self.ended = False

    def write_framed_end(self, data: bytes) -> bool:
        self.ended = True
        return self.write_framed(data)


class FastIngress(asyncio.Protocol):
    """One client connection, served here until a request needs aiohttp."""

    def __init__(self, gw: Gateway, fallback: Callable[[], Any], conns: set[FastIngress]) -> None:
        self.gw = gw
        self.fallback = fallback
        self.conns = conns
        self.t: Any = None
        self.buf = b""
        self.task: asyncio.Task[None] | None = None
        self.exchange: Exchange | None = None
        self.handed_off = False
        self.paused = False
        self.last = 0.0
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.conns.add(self)
        self.last = self.loop.time()
        self.timer = self.loop.call_at(self.last + IDLE_TIMEOUT, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()  # the relay's finally closes the upstream request
        if self.exchange is not None:
            self.exchange.abort()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.task is None and self.exchange is None:
            self._next()
        elif len(self.buf) > _MAX_PENDING and not self.paused:
            self.paused = True
            self.t.pause_reading()

    def _idle(self) -> None:
        now = self.loop.time()
        due = self.last + IDLE_TIMEOUT
        if self.task is not None or self.exchange is not None or self.buf:
            self.timer = self.loop.call_at(now + IDLE_TIMEOUT, self._idle)
        elif now >= due:
            self.t.close()
        else:
            self.timer = self.loop.call_at(due, self._idle)

    # -- requests --------------------------------------------------------------------------
    def _next(self) -> None:
        """Start the next whole request in the buffer, or hand the connection over."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD or (buf and not buf.startswith(b"POST ")):
                self._hand_off()
            return
        t0 = perf_counter()
        lines = buf[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        route = ROUTES.get(parts[1]) if len(parts) == 3 else None
        if route is None or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
            return self._hand_off()
        length = -1
        close = False
        auth = ""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                if length >= 0 or not value.strip().isdigit():
                    return self._hand_off()
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"authorization":
                auth = value.strip().decode("latin-1")
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                return self._hand_off()
        gw = self.gw
        if length < 0 or length > gw.max_body or not gw.key_ok(auth):
            return self._hand_off()
        total = end + 4 + length
        if len(buf) < total:
            return  # the body is still on its way
        body = buf[end + 4 : total]
        try:
            parsed = parse_body(body, route[0])
        except RequestError:
            return self._hand_off()  # aiohttp answers with the exact error
        if not parsed.stream:
            return self._hand_off()
        self.buf = buf[total:]
        self._start(route[1], parsed, body, close, t0)

    def _start(self, path: str, parsed: ParsedRequest, body: bytes, close: bool, t0: float) -> None:
        """Classify and route; write the request upstream now if a pooled connection is idle
        (the callback relay), else leave it to a coroutine."""
        gw = self.gw
        fleet = gw.fleet
        assert fleet is not None
        t1 = perf_counter()
        pred = gw.predict(parsed)
        t2 = perf_counter()
        decision = fleet.try_acquire(pred)
        headers = {"x-expert-router-cluster": NONE}
        job = Job(path, parsed, body, close, t0, headers, pred, t1, t2, [])
        if decision is None:  # every replica busy: the coroutine path waits in the queue
            self.task = self.loop.create_task(self._serve(job))
            return
        t3 = perf_counter()
        job.decided.append(decision)
        replica = fleet.replicas[decision.replica or ""]
        backend = replica.backend
        ex: Exchange | None = None
        if type(backend) is Http1Backend:
            ex = Exchange(self, job, replica)
            req = BackendRequest(path, with_model(parsed, body, replica.model), True)
            ex.t_sent = perf_counter()
            ex.conn = backend.send_now(req, ex)
        # Accounting after the write, off the request's way upstream.
        gw.timed(headers, pred, t1, t2, t3)
        if ex is None or ex.conn is None:
            self.task = self.loop.create_task(self._serve(job))
            return
        self.exchange = ex
        gw.metrics.overhead_seconds.observe(ex.t_sent - t0)
        headers["x-expert-router-cluster"] = decision.cluster
        headers["x-expert-router-replica"] = replica.name

    def rescue(self, job: Job, failed: BackendError | None, conn: Http1Connection | None) -> None:
        """The callback relay's request failed before the upstream's head (``failed``; None:
        a stale connection) or was answered with an error status on ``conn``: the coroutine
        path takes over (reads the error, retries)."""
        self.exchange = None
        self.task = self.loop.create_task(self._serve(job, failed, conn, rescued=True))

    def exchange_done(self, job: Job, status: int) -> None:
        self.exchange = None
        self._log(job.path, status, job.t0, job.headers, job.decided)
        if status != 499:
            self._finished(job.close)

    def _hand_off(self) -> None:
        """Give the connection (and what it sent so far) to aiohttp's request handler."""
        self.handed_off = True
        self.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        handler = self.fallback()
        self.t.set_protocol(handler)
        handler.connection_made(self.t)
        if self.buf:
            handler.data_received(self.buf)
            self.buf = b""

    def _finished(self, close: bool) -> None:
        self.task = None
        self.last = self.loop.time()
        t = self.t
        if close or t.is_closing():
            t.close()
            return
        if self.paused:
            self.paused = False
            t.resume_reading()
        if self.buf:
            self._next()

    async def _serve(
        self,
        job: Job,
        failed: BackendError | None = None,
        conn: Http1Connection | None = None,
        rescued: bool = False,
    ) -> None:
        try:
            status = await self._route(job, failed, conn, rescued)
        except asyncio.CancelledError:
            self._log(job.path, 499, job.t0, job.headers, job.decided)
            raise
        except Exception:  # never leave a client hanging
            logging.getLogger(__name__).exception("fast ingress failed")
            status = 500
            self.t.close()
        self._log(job.path, status, job.t0, job.headers, job.decided)
        self._finished(job.close)

    # -- the proxy logic (the same steps as proxy.Proxy, without aiohttp objects) -----------
    async def _route(
        self, job: Job, failed: BackendError | None, conn: Http1Connection | None, rescued: bool
    ) -> int:
        """Reserve a replica (unless the request has one), forward, relay; returns the status
        to count. ``rescued``: a callback relay's first attempt failed (see ``rescue``)."""
        gw = self.gw
        fleet = gw.fleet
        assert fleet is not None
        headers, close = job.headers, job.close
        if not job.decided:
            try:
                job.decided.append(await gw.acquire(job.pred, headers, job.t1, job.t2))
            except RoutingError as exc:
                return self._error(exc, headers, close)
        elif conn is not None:
            backend = fleet.replicas[job.decided[0].replica or ""].backend
            assert isinstance(backend, Http1Backend)
            failed = await backend.status_error(conn)
        try:
            replica, up, t_sent = await gw.start_upstream(
                job.path,
                job.parsed,
                job.body,
                job.pred,
                job.decided,
                headers,
                job.t0,
                failed,
                observe=not rescued,
            )
        except BackendError as exc:
            return self._error(exc, headers, close)
        try:
            return await self._relay(up, replica, headers, t_sent, close)
        finally:
            up.close()
            fleet.release(replica)

    async def _relay(
        self,
        up: UpstreamResponse,
        replica: Replica,
        headers: dict[str, str],
        t_sent: float,
        close: bool,
    ) -> int:
        fleet = self.gw.fleet
        assert fleet is not None
        headers["Content-Type"] = up.content_type
        if up.content_type.startswith("text/event-stream"):
            headers.update(_SSE_HEADERS)
        status = up.status
        head = response_head(status, headers, close, chunked=True)
        t = self.t
        try:
            first = await up.readany()
        except Exception as exc:
            fleet.record_failure(replica, "stream_interrupted")
            self._write(head + chunk(stream_error_event(exc)) + LAST)
            return 502
        if not first:
            self._write(head + LAST)
        else:
            fleet.ttft[replica.name].observe(perf_counter() - t_sent)
            if up.at_eof():
                self._write(head + chunk(first) + LAST)
            else:
                self._write(head + chunk(first))
                sink = _EndingSink(t)
                try:
                    await up.pipe(sink)
                except ConnectionError:
                    return 499
                except Exception as exc:
                    fleet.record_failure(replica, "stream_interrupted")
                    status = 502
                    self._write(chunk(stream_error_event(exc)))
                if t.is_closing():
                    return 499
                if not sink.ended:
                    self._write(LAST)
        if status < 400:
            fleet.record_success(replica)
        return status

    # -- output ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(data)

    def _error(self, exc: ExpertRouterError, headers: dict[str, str], close: bool) -> int:
        resp = for_exception(exc, headers)
        body = resp.body if isinstance(resp.body, bytes) else b""
        out = dict(resp.headers)
        out["Content-Length"] = str(len(body))
        self._write(response_head(resp.status, out, close, chunked=False) + body)
        return resp.status

    def _log(
        self,
        path: str,
        status: int,
        t0: float,
        headers: dict[str, str],
        decided: list[RouteDecision],
    ) -> None:
        gw = self.gw
        cluster = headers.get("x-expert-router-cluster", NONE)
        replica = headers.get("x-expert-router-replica", NONE)
        gw.metrics.count_request(cluster, replica, status)
        decision = decided[0] if decided else None
        if gw.config.access_log:
            peer = self.t.get_extra_info("peername")
            entry: dict[str, Any] = {
                "method": "POST",
                "path": path,
                "status": status,
                "cluster": cluster,
                "replica": replica,
                "reason": decision.reason if decision else None,
                "duration_ms": round((perf_counter() - t0) * 1000, 3),
                "remote": peer[0] if peer else None,
            }
            access_log.info(json.dumps(entry))


def fallback_factory(runner: web.AppRunner) -> Callable[[], Any]:
    """aiohttp's protocol factory for handed-over connections (after ``runner.setup()``)."""
    server = runner.server
    assert server is not None
    return server
