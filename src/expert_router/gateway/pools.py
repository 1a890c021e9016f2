"""Replica pools at run time: outstanding counts, health, passive ejection, the wait queue.

``Fleet.reserve`` asks the routing policy for a replica and reserves a slot; when every
candidate is busy ``Fleet.wait`` queues the request in a bounded FIFO with a deadline, and a
released slot is handed straight to the first waiter that can use it, by callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from expert_router.backends import Backend
from expert_router.errors import NoCapacity
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.routing import PredictionLike, RouteDecision, RoutingPolicy

log = logging.getLogger("expert_router.gateway")
DEFAULT_BACKOFF = 1.0
"""Seconds a replica that answered 429 without ``Retry-After`` takes no request."""
MAX_BACKOFF = 60.0
"""The longest ``Retry-After`` honoured: a replica cannot take itself out for longer."""


@dataclass(eq=False, slots=True)
class Replica:
    """One expert server as the gateway sees it."""

    name: str
    url: str
    backend: Backend
    model: str | None
    max_concurrency: int | None
    weight: float
    outstanding: int = 0
    healthy: bool = True
    paused: bool = False
    failures: int = 0
    probe_path: str | None = None
    gauge: object = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class Pool:
    name: str
    replicas: list[Replica]


@dataclass(eq=False, slots=True)
class Waiter:
    """A request in the wait queue; ``on_slot`` gets its reserved decision, or None when
    ``Fleet.queue_timeout`` passed first."""

    prediction: PredictionLike
    exclude: Collection[str]
    on_slot: Callable[[RouteDecision | None], None]
    timer: asyncio.TimerHandle | None = None


class Fleet:
    """Every pool and replica of a gateway, and the requests waiting for one."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        policy: RoutingPolicy,
        metrics: GatewayMetrics,
        *,
        queue_size: int,
        queue_timeout: float,
        eject_after: int,
    ) -> None:
        self.pools = pools
        self.policy = policy
        self.metrics = metrics
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.eject_after = eject_after
        self.replicas: dict[str, Replica] = {}
        for pool in pools.values():
            for r in pool.replicas:
                self.replicas[r.name] = r
        self._waiters: deque[Waiter] = deque()
        # In-flight gauges: read at scrape time in one process (no cost per request); counted
        # per request only in multiprocess mode, where callbacks cannot be summed.
        self._in_flight: dict[str, Any] = {}
        for n, r in self.replicas.items():
            if metrics.multiproc_dir:
                self._in_flight[n] = metrics.in_flight.labels(n)
            else:
                metrics.in_flight.labels(n).set_function(_outstanding(r))
        self._healthy = {n: metrics.healthy.labels(n) for n in self.replicas}
        self.ttft = {n: metrics.per_request(metrics.ttft_seconds.labels(n)) for n in self.replicas}
        for g in self._healthy.values():
            g.set(1)

    @property
    def waiting(self) -> int:
        """Requests in the wait queue."""
        return len(self._waiters)

    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas.values())

    def decide(self, prediction: PredictionLike, exclude: Collection[str] = ()) -> RouteDecision:
        return self.policy.decide(prediction, self.pools, exclude=exclude)

    def reserve(self, prediction: PredictionLike, exclude: Collection[str] = ()) -> RouteDecision:
        """The policy's decision, its replica reserved; ``replica`` is None when the request
        must wait (``queued``) or nothing can take it (``unavailable``)."""
        d = self.policy.decide(prediction, self.pools, exclude=exclude)
        if d.replica is not None:
            self._take(d)
        return d

    def _take(self, d: RouteDecision) -> None:
        r = self.replicas[d.replica or ""]
        r.outstanding += 1
        if self._in_flight:
            self._in_flight[r.name].inc()
        if d.reason == "spillover":
            self.metrics.spillovers.labels(d.nearest, d.cluster).inc()

    def wait(
        self,
        prediction: PredictionLike,
        exclude: Collection[str],
        on_slot: Callable[[RouteDecision | None], None],
    ) -> Waiter:
        """Queue a request until a replica frees up (``on_slot(decision)``, reserved) or
        ``queue_timeout`` passes (``on_slot(None)``); ``NoCapacity`` when the queue is full."""
        if len(self._waiters) >= self.queue_size or self.queue_timeout <= 0:
            raise NoCapacity("every replica is busy and the wait queue is full")
        waiter = Waiter(prediction, exclude, on_slot)
        loop = asyncio.get_running_loop()
        waiter.timer = loop.call_later(self.queue_timeout, self._expire, waiter)
        self._waiters.append(waiter)
        self.metrics.queue_depth.inc()
        return waiter

    def _expire(self, waiter: Waiter) -> None:
        waiter.timer = None
        if self._discard(waiter):
            self.metrics.queue_timeouts.inc()
            waiter.on_slot(None)

    def leave(self, waiter: Waiter) -> bool:
        """The request left the queue (its client went away); False: it was not waiting."""
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        return self._discard(waiter)

    def _discard(self, waiter: Waiter) -> bool:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        self.metrics.queue_depth.dec()
        return True

    def release(self, r: Replica) -> None:
        """A request on ``r`` ended: free its slot, hand it to the first waiter that fits."""
        r.outstanding -= 1
        if self._in_flight:
            self._in_flight[r.name].dec()
        if self._waiters:
            self.dispatch()

    def dispatch(self, scan: int = 64) -> None:
        """Serve waiting requests in FIFO order while replicas are free."""
        for waiter in list(self._waiters)[:scan]:
            d = self.decide(waiter.prediction, waiter.exclude)
            if d.replica is None or not self.leave(waiter):
                continue  # no slot for it; or no longer waiting (served by a nested dispatch:
                # an on_slot before it ended its request at once and released its replica)
            self._take(d)
            waiter.on_slot(d)

    def record_success(self, r: Replica) -> None:
        if r.failures:
            r.failures = 0

    def record_failure(self, r: Replica, kind: str, *, down: bool = False) -> None:
        """A request or probe failed; eject after ``eject_after`` in a row, or at once when
        the replica is ``down`` (its connection was refused)."""
        self.metrics.upstream_errors.labels(r.name, kind).inc()
        r.failures += 1
        if r.healthy and (down or r.failures >= self.eject_after):
            r.healthy = False
            self._healthy[r.name].set(0)
            self.metrics.ejections.labels(r.name).inc()
            log.warning("replica %s ejected after %d consecutive failures", r.name, r.failures)

    def back_off(self, r: Replica, seconds: float | None) -> None:
        """``r`` said it is busy (429): it takes no request for ``seconds`` (its
        ``Retry-After``; ``DEFAULT_BACKOFF`` without one, ``MAX_BACKOFF`` at most), and is
        not ejected for it."""
        if r.paused:
            return
        r.paused = True
        delay = min(MAX_BACKOFF, DEFAULT_BACKOFF if seconds is None else seconds)
        self.metrics.backoffs.labels(r.name).inc()
        asyncio.get_running_loop().call_later(delay, self._resume, r)

    def _resume(self, r: Replica) -> None:
        r.paused = False
        if self._waiters:
            self.dispatch()

    def readmit(self, r: Replica) -> None:
        r.failures = 0
        if not r.healthy:
            r.healthy = True
            self._healthy[r.name].set(1)
            log.info("replica %s re-admitted", r.name)
            if self._waiters:
                self.dispatch()


def _outstanding(r: Replica) -> Callable[[], float]:
    return lambda: float(r.outstanding)
