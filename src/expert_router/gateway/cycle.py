"""One proxied request from its routing decision to its release: the request lifecycle, once.

An ingress hands a parsed request (``ProxyRequest``) and the place its answer goes (``Sink``)
to a ``Cycle``. The cycle classifies the prompt, reserves a replica or waits in the fleet's
queue, opens the upstream through the backend's callback contract (it is the ``Listener``),
relays the answer (or buffers it, bounded, when the client did not ask for a stream), retries
on another replica while nothing has reached the client, and on its one exit records the
replica's health, the metrics and the access line and releases the replica. It does no I/O:
ingresses and backends call it, and it calls them back.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from expert_router.backends import BackendRequest, UpstreamCall
from expert_router.errors import (
    BackendError,
    BackendRefused,
    BackendStatusError,
    BackendTooLarge,
    ExpertRouterError,
    NoCapacity,
    RequestError,
    RoutingError,
)
from expert_router.gateway.access import log_access
from expert_router.gateway.pools import Replica, Waiter
from expert_router.gateway.responses import status_for
from expert_router.routing import RouteDecision

if TYPE_CHECKING:
    from expert_router.gateway.app import Gateway, PredictionLike

log = logging.getLogger("expert_router.gateway")
NONE = "none"  # the cluster / replica label of a request that had none


class ProxyRequest(Protocol):
    """What an ingress parsed, as the cycle needs it."""

    route: str
    """The ingress's route (``/v1/chat/completions``, ``ModelStreamInfer``): logs, metrics."""
    text: str
    """What the classifier reads."""
    stream: bool
    """The client takes the answer as it comes; False: the whole answer, buffered."""

    def upstream(self, replica: Replica) -> BackendRequest:
        """The request to send to ``replica`` (its model name written in where it has one)."""
        ...


class Sink(Protocol):
    """Where an ingress writes the answer, in its own protocol. The cycle calls exactly one
    of ``send_end``, ``send_whole``, ``send_error``, ``send_abort`` (after any number of
    ``send``), then ``finished``; none of them after the ingress called ``Cycle.abort``."""

    def send(self, cycle: Cycle, data: bytes) -> bool:
        """Streamed answer bytes (the response head leaves with the first); False asks the
        cycle to pause the upstream until ``Cycle.resume``."""
        ...

    def send_end(self, cycle: Cycle, last: bytes = b"") -> bool:
        """The streamed answer is complete; ``last``, its final bytes, if any, to send first
        (one write for both). False: relaying ``last`` interrupted the cycle (nothing more
        to do here)."""

    def send_whole(self, cycle: Cycle, body: bytes) -> None:
        """The whole answer of a request that was not streamed."""

    def send_error(self, cycle: Cycle, exc: ExpertRouterError, status: int) -> None:
        """The request failed before anything was sent: an error answer with ``status``."""

    def send_abort(self, cycle: Cycle, exc: ExpertRouterError) -> None:
        """The request failed after part of the answer was sent: end it with an error."""

    def finished(self, cycle: Cycle) -> None:
        """The cycle is over and accounted; the ingress may go on."""

    def remote(self) -> str | None:
        """The client's address, for the access line."""
        ...


class Cycle:
    """One request's lifecycle; see the module docstring."""

    __slots__ = (
        "gw", "req", "sink", "pred", "decision", "replica", "call", "waiter", "exclude",
        "t0", "t1", "t2", "t3", "t_sent", "t_wait", "status", "content_type", "sent", "parts",
        "size", "error", "over", "reason",
    )  # fmt: skip

    def __init__(self, gw: Gateway, req: ProxyRequest, sink: Sink, t0: float) -> None:
        self.gw = gw
        self.req = req
        self.sink = sink
        self.t0 = t0  # the request was read whole
        self.t1 = self.t2 = self.t3 = self.t_sent = self.t_wait = 0.0
        self.pred: PredictionLike | None = None
        self.decision: RouteDecision | None = None
        self.replica: Replica | None = None
        self.call: UpstreamCall | None = None
        self.waiter: Waiter | None = None
        self.exclude: list[str] = []
        self.status = 0
        self.content_type = "application/json"
        self.sent = False  # part of the answer reached the client: no retry from here
        self.parts: list[bytes] = []
        self.size = 0
        self.error: BackendError | None = None  # the last upstream failure, while retrying
        self.over = False
        self.reason = ""  # the routing outcome counted at the end (see docs/operations.md)

    # -- what the sinks read -------------------------------------------------------------------
    @property
    def cluster(self) -> str:
        return self.decision.cluster if self.decision is not None else NONE

    @property
    def replica_name(self) -> str:
        return self.replica.name if self.replica is not None else NONE

    def server_timing(self) -> str:
        """``Server-Timing`` of this request: classification and routing, in milliseconds."""
        classify, route = (self.t2 - self.t1) * 1000, (self.t3 - self.t2) * 1000
        return f"classify;dur={classify:.3f}, route;dur={route:.3f}"

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Classify and route; the upstream request leaves now when a replica is free. A
        fault of the gateway's own on the way (here, or on a retry's or a queued request's
        way) fails this request alone: a 500 answer (an error event once part of it was
        sent), the replica released, the exception's type logged (never its message: it may
        quote the prompt)."""
        gw = self.gw
        self.t1 = perf_counter()
        try:
            self.pred = gw.classify(self.req.text)
            self.t2 = perf_counter()
            self._route()
        except Exception as exc:
            self._internal(exc)
            return
        gw.metrics.classify_seconds.observe(self.t2 - self.t1)  # once the request has left

    def _internal(self, exc: Exception) -> None:
        """A fault of the gateway's own on this request's way (see ``start``)."""
        log.error("request failed inside the gateway: %s", type(exc).__name__)
        self.stop(ExpertRouterError("internal error"))

    def _route(self) -> None:
        fleet = self.gw.fleet
        assert fleet is not None and self.pred is not None
        d = fleet.reserve(self.pred, self.exclude)
        if d.replica is not None:
            self._open(d)
            return
        self.decision = d
        self.reason = d.reason
        if d.reason == "unavailable":
            why = f"no healthy replica can serve cluster {d.nearest}"
            self._fail(self.error or RoutingError(why))
            return
        try:
            self.waiter = fleet.wait(self.pred, tuple(self.exclude), self._on_slot)
        except NoCapacity as exc:
            self.reason = "queue_full"
            self._fail(self.error or exc)
            return
        self.t_wait = perf_counter()

    def _on_slot(self, d: RouteDecision | None) -> None:
        self.waiter = None
        self.gw.metrics.queue_wait_seconds.observe(perf_counter() - self.t_wait)
        if d is not None:
            try:
                self._open(d)
            except Exception as fault:
                self._internal(fault)
            return
        self.reason = "queue_timeout"
        queue_timeout = self.gw.config.limits.queue_timeout
        exc = NoCapacity(
            f"every replica is busy; waited {queue_timeout:g}s", retry_after=max(1.0, queue_timeout)
        )
        self._fail(self.error or exc)

    def _open(self, d: RouteDecision) -> None:
        if self.exclude:  # a retry: counted with the cluster it left and the one it reached
            self.gw.metrics.failovers.labels(self.cluster, d.cluster).inc()
        self.decision = d
        self.reason = "failover" if self.exclude else d.reason
        replica = self.replica = self.gw.fleet.replicas[d.replica or ""]  # type: ignore[union-attr]
        first = not self.t3
        if first:
            self.t3 = perf_counter()
        breq = self.req.upstream(replica)
        self.t_sent = perf_counter()
        try:
            self.call = replica.backend.open(breq, self)
        except RequestError as exc:  # the replica's protocol cannot carry it: the client's
            self._fail(exc)
            return
        if first:
            self.gw.metrics.overhead_seconds.observe(self.t_sent - self.t0)

    # -- the backend's listener ------------------------------------------------------------------
    def on_head(self, status: int, content_type: str) -> None:
        self.status = status
        self.content_type = content_type

    def on_data(self, data: bytes) -> bool:
        if self.sent:  # streaming, past the first bytes: the path of every relayed event
            return self.sink.send(self, data)
        if self.req.stream:
            self.sent = True
            ok = self.sink.send(self, data)
            self._first_byte()  # accounted once the first bytes have left
            return ok
        self.size += len(data)
        if self.size > self.gw.config.limits.max_response_bytes:
            call, self.call = self.call, None
            if call is not None:
                call.cancel()
            limit = self.gw.config.limits.max_response_bytes
            self.on_error(BackendTooLarge(f"the expert's answer exceeds {limit} bytes"))
            return False
        self.parts.append(data)
        return True

    def on_end(self, last: bytes = b"") -> None:
        self.call = None
        if self.over:
            return
        if self.req.stream:
            first, self.sent = not self.sent, True
            if not self.sink.send_end(self, last):
                return  # relaying the last bytes interrupted the cycle
            if first:
                self._first_byte()
        else:
            if last and not self.on_data(last):
                return  # over the size limit: answered as an error
            self._first_byte()
            self.sink.send_whole(self, b"".join(self.parts))
        self._finish(self.status, ok=True)

    def on_error(self, exc: BackendError) -> None:
        self.call = None
        if self.over:
            return
        replica = self.replica
        assert replica is not None
        fleet = self.gw.fleet
        assert fleet is not None
        kind = fault_kind(exc, self.status != 0)
        if kind is not None:
            fleet.record_failure(replica, kind, down=isinstance(exc, BackendRefused))
        elif isinstance(exc, BackendStatusError) and exc.status == 429:
            fleet.back_off(replica, exc.retry_after)
        if not self.sent and exc.retryable and len(self.exclude) < self.gw.config.limits.retries:
            # Nothing reached the client: another replica may answer it whole.
            fleet.release(replica)
            self.gw.metrics.retries.labels(replica.name).inc()
            self.exclude.append(replica.name)
            self.replica = None
            self.error = exc
            self.status, self.parts, self.size = 0, [], 0
            try:
                self._route()
            except Exception as fault:
                self._internal(fault)
            return
        if self.sent:
            self.sink.send_abort(self, exc)
            self._finish(502)
        else:
            self._fail(exc)

    # -- the ingress's controls -------------------------------------------------------------------
    def resume(self) -> None:
        """The client took what was sent: read the upstream again."""
        if self.call is not None:
            self.call.resume()

    def interrupt(self, exc: BackendError) -> None:
        """The sink cannot relay the answer (``exc`` says why): end it as an upstream failure."""
        self._let_go()
        if not self.over:
            self.on_error(exc)

    def stop(self, exc: ExpertRouterError) -> None:
        """The gateway stops: end the request now with ``exc`` (an error answer, or an error
        event when part of the answer was sent), without retrying."""
        if self.over:
            return
        self._let_go()
        if self.sent:
            self.sink.send_abort(self, exc)
            self._finish(status_for(exc))
        else:
            self._fail(exc)

    def abort(self) -> None:
        """The client went away: cancel the upstream request or leave the queue; 499."""
        if self.over:
            return
        self._let_go()
        self._finish(499, notify=False)

    def _let_go(self) -> None:
        """Cancel the upstream request (no callback follows) or leave the queue."""
        call, self.call = self.call, None
        if call is not None:
            call.cancel()
        if self.waiter is not None:
            self.gw.fleet.leave(self.waiter)  # type: ignore[union-attr]
            self.waiter = None

    # -- the one exit ------------------------------------------------------------------------------
    def _fail(self, exc: ExpertRouterError) -> None:
        status = status_for(exc)
        self.sink.send_error(self, exc, status)
        self._finish(status)

    def _first_byte(self) -> None:
        replica = self.replica
        if replica is not None:
            self.gw.fleet.ttft[replica.name].observe(perf_counter() - self.t_sent)  # type: ignore[union-attr]

    def _finish(self, status: int, *, ok: bool = False, notify: bool = True) -> None:
        self.over = True
        gw = self.gw
        replica = self.replica
        if replica is not None:
            fleet = gw.fleet
            assert fleet is not None
            fleet.release(replica)
            if ok:
                fleet.record_success(replica)
        self.status = status
        cluster, name = self.cluster, self.replica_name
        gw.metrics.count_request(cluster, name, status)
        if self.reason:
            gw.metrics.count_decision(self.reason)
        if gw.config.access_log:
            nearest = self.decision.nearest if self.decision is not None else None
            log_access(
                self.req.route, status, self.t0, cluster=cluster, nearest=nearest,
                replica=name, reason=self.reason or None, remote=self.sink.remote(),
            )  # fmt: skip
        if notify:
            self.sink.finished(self)


def fault_kind(exc: BackendError, answered: bool) -> str | None:
    """The kind of replica failure ``exc`` counts as toward ejection, or None when the
    client caused it (a 4xx answer, or a 5xx the server marks as the request's fault)."""
    if isinstance(exc, BackendStatusError):
        if exc.status < 500 or _blames_request(exc.body):
            return None
        return f"status_{exc.status}"
    if answered:
        return "stream_interrupted"
    return type(exc).__name__


def _blames_request(body: bytes) -> bool:
    """An OpenAI-shaped error of type ``invalid_request_error`` (some servers answer
    over-long prompts with 500 and say so)."""
    return b'"invalid_request_error"' in body[:4096]
