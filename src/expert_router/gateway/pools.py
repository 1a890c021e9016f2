"""Replica pools at run time: outstanding counts, health, passive ejection, the wait queue.

``Fleet.acquire`` asks the routing policy for a replica and reserves a slot, or waits in a
bounded FIFO; a released slot is handed straight to the first waiter that can use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from expert_router.backends import Backend
from expert_router.errors import NoCapacity, RoutingError
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.routing import PredictionLike, RouteDecision, RoutingPolicy

log = logging.getLogger("expert_router.gateway")


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
    failures: int = 0
    probe_path: str | None = None
    gauge: object = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class Pool:
    name: str
    replicas: list[Replica]


@dataclass(eq=False, slots=True)
class _Waiter:
    prediction: PredictionLike
    exclude: Collection[str]
    future: asyncio.Future[RouteDecision]


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
        self._waiters: deque[_Waiter] = deque()
        # In-flight gauges: read at scrape time in one process (no cost per request); counted
        # per request only in multiprocess mode, where callbacks cannot be summed.
        self._in_flight: dict[str, Any] = {}
        for n, r in self.replicas.items():
            if metrics.multiproc_dir:
                self._in_flight[n] = metrics.in_flight.labels(n)
            else:
                metrics.in_flight.labels(n).set_function(_outstanding(r))
        self._healthy = {n: metrics.healthy.labels(n) for n in self.replicas}
        self.ttft = {n: metrics.ttft_seconds.labels(n) for n in self.replicas}
        self._decisions = {
            reason: metrics.decisions.labels(reason)
            for reason in ("nearest", "spillover", "failover", "queued", "unavailable")
        }
        for g in self._healthy.values():
            g.set(1)

    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas.values())

    def decide(self, prediction: PredictionLike, exclude: Collection[str] = ()) -> RouteDecision:
        return self.policy.decide(prediction, self.pools, exclude=exclude)

    def _reserve(self, d: RouteDecision) -> None:
        assert d.replica is not None
        r = self.replicas[d.replica]
        r.outstanding += 1
        if self._in_flight:
            self._in_flight[r.name].inc()
        self._decisions[d.reason].inc()
        if d.reason == "spillover":
            self.metrics.spillovers.labels(d.nearest, d.cluster).inc()

    def try_acquire(self, prediction: PredictionLike) -> RouteDecision | None:
        """A decision with a reserved replica when one is free now, else None (nothing counted:
        ``acquire`` decides again)."""
        d = self.decide(prediction)
        if d.replica is None:
            return None
        self._reserve(d)
        return d

    async def acquire(
        self, prediction: PredictionLike, exclude: Collection[str] = ()
    ) -> RouteDecision:
        """A decision with a reserved replica; waits in the queue when every one is busy."""
        d = self.decide(prediction, exclude)
        if d.replica is not None:
            self._reserve(d)
            return d
        self._decisions[d.reason].inc()
        if d.reason == "unavailable":
            raise RoutingError(f"no healthy replica can serve cluster {d.nearest}")
        if len(self._waiters) >= self.queue_size or self.queue_timeout <= 0:
            raise NoCapacity("every replica is busy and the wait queue is full")
        fut: asyncio.Future[RouteDecision] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(prediction, exclude, fut)
        self._waiters.append(waiter)
        self.metrics.queue_depth.inc()
        got = False
        try:
            async with asyncio.timeout(self.queue_timeout):
                d = await fut
                got = True
                return d
        except TimeoutError:
            self.metrics.queue_timeouts.inc()
            raise NoCapacity(
                f"every replica is busy; waited {self.queue_timeout:g}s",
                retry_after=max(1.0, self.queue_timeout),
            ) from None
        finally:
            if not got:
                if fut.done() and not fut.cancelled():
                    # Handed a slot, but left (timeout/cancel) before taking it: give it back.
                    self.release(self.replicas[fut.result().replica or ""])
                else:
                    fut.cancel()
                    self._discard(waiter)

    def _discard(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
            self.metrics.queue_depth.dec()
        except ValueError:
            pass

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
            if waiter.future.done():
                self._discard(waiter)
                continue
            d = self.decide(waiter.prediction, waiter.exclude)
            if d.replica is None:
                continue
            self._discard(waiter)
            self._reserve(d)
            waiter.future.set_result(d)

    def record_success(self, r: Replica) -> None:
        if r.failures:
            r.failures = 0

    def record_failure(self, r: Replica, kind: str) -> None:
        """A request or probe failed; eject after ``eject_after`` in a row."""
        self.metrics.upstream_errors.labels(r.name, kind).inc()
        r.failures += 1
        if r.healthy and r.failures >= self.eject_after:
            r.healthy = False
            self._healthy[r.name].set(0)
            self.metrics.ejections.labels(r.name).inc()
            log.warning("replica %s ejected after %d consecutive failures", r.name, r.failures)

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
