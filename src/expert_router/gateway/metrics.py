"""Prometheus metrics of one gateway, on its own registry (several gateways fit in a process).

With ``multiproc_dir`` set (``serve --workers N``) prometheus_client's multiprocess mode
stores values in that directory and ``/metrics`` sums every worker's.

In one process, what every request counts (its status and routing outcome, the classify,
overhead and upstream TTFT histograms) is kept in plain Python on the request path
(``Pending``: a bucket index by bisection, a dict entry) and added to the prometheus_client
metrics whenever the registry is read: a scrape sees every request counted, and the request
path does not run prometheus_client's lock and bucket loop on a core that the event has just
woken, where they cost ~25 us each (docs/benchmarks.md). With several workers each update
goes to the shared files at once, as before.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

NS = "expert_router"
_FAST = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
_TTFT = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Observer(Protocol):
    """A histogram (child) as the request path uses it."""

    def observe(self, amount: float) -> None: ...


class PendingHistogram:
    """One histogram child's observations, counted in plain Python until ``flush`` adds them
    to the child (bucket ``i`` counts what is <= its bound and > the one before, as
    prometheus_client's own ``observe`` does)."""

    __slots__ = ("child", "bounds", "counts", "total")

    @staticmethod
    def fits(child: Any) -> bool:
        """Whether ``child`` keeps the private fields ``flush`` adds to (its bucket bounds,
        bucket values and sum, as prometheus_client's histogram does today); a release
        without them gets its observations at once instead."""
        bounds, buckets = getattr(child, "_upper_bounds", None), getattr(child, "_buckets", None)
        return (
            isinstance(bounds, list)
            and isinstance(buckets, list)
            and len(bounds) == len(buckets)
            and all(hasattr(b, "inc") for b in buckets)
            and hasattr(getattr(child, "_sum", None), "inc")
        )

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts, buckets = self.counts, self.child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        if self.total:
            self.child._sum.inc(self.total)
            self.total = 0.0


class _FlushFirst:
    """Registered first on the registry: every read of it (a scrape, ``collect``) adds the
    pending counts before the metrics are read."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Any]:
        return ()

    def collect(self) -> Iterable[Any]:
        self.metrics.flush()
        return ()


class GatewayMetrics:
    """Every metric the gateway exports; label children are cached per replica."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.defer = not multiproc_dir  # one process: counts wait in Python for the next read
        self._pending: list[PendingHistogram] = []
        self._requests_pending: dict[tuple[str, str, int], int] = {}
        self._decisions_pending: dict[str, int] = {}
        r = self.registry = CollectorRegistry()
        r.register(_FlushFirst(self))  # type: ignore[arg-type]
        self.requests = Counter(
            f"{NS}_requests",
            "Requests answered, by cluster, replica and HTTP status",
            ["cluster", "replica", "status"],
            registry=r,
        )
        self.decisions = Counter(
            f"{NS}_route_decisions",
            "Requests by the routing outcome they ended with (one each)",
            ["reason"],
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            f"{NS}_queue_wait_seconds",
            "Time requests waited in the queue for a free replica (served or not)",
            buckets=_TTFT,
            registry=r,
        )
        self.classify_seconds = self.per_request(
            Histogram(
                f"{NS}_classify_seconds", "Time to classify one prompt", buckets=_FAST, registry=r
            )
        )
        self.overhead_seconds = self.per_request(
            Histogram(
                f"{NS}_overhead_seconds",
                "Gateway time from request arrival to the upstream request being sent",
                buckets=_FAST,
                registry=r,
            )
        )
        self.ttft_seconds = Histogram(
            f"{NS}_upstream_ttft_seconds",
            "Upstream time from request sent to its first response chunk",
            ["replica"],
            buckets=_TTFT,
            registry=r,
        )
        self.in_flight = Gauge(
            f"{NS}_in_flight",
            "Requests in flight per replica",
            ["replica"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.healthy = Gauge(
            f"{NS}_replica_healthy",
            "1 when the replica takes traffic",
            ["replica"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.queue_depth = Gauge(
            f"{NS}_queue_depth",
            "Requests waiting for a free replica",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spillovers = Counter(
            f"{NS}_spillovers",
            "Requests served by another cluster's pool",
            ["from_cluster", "to_cluster"],
            registry=r,
        )
        self.retries = Counter(
            f"{NS}_retries", "Requests retried on another replica", ["replica"], registry=r
        )
        self.ejections = Counter(
            f"{NS}_ejections",
            "Replicas ejected after consecutive failures",
            ["replica"],
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{NS}_upstream_errors",
            "Upstream failures by replica and kind",
            ["replica", "kind"],
            registry=r,
        )
        self.backoffs = Counter(
            f"{NS}_backoffs",
            "Times a replica answered 429 and was given its Retry-After to recover",
            ["replica"],
            registry=r,
        )
        self.failovers = Counter(
            f"{NS}_failovers",
            "Requests retried on another replica, by the cluster they left and the one taking them",
            ["from_cluster", "to_cluster"],
            registry=r,
        )
        self.queue_timeouts = Counter(
            f"{NS}_queue_timeouts", "Requests that waited in vain", registry=r
        )
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._decision_children: dict[str, Counter] = {}

    def per_request(self, child: Any) -> Observer:
        """``child`` (a histogram without labels, or one label child) as the request path
        observes it: pending until the next read in one process, direct with workers."""
        if not self.defer or not PendingHistogram.fits(child):
            return child  # type: ignore[no-any-return]
        pending = PendingHistogram(child)
        self._pending.append(pending)
        return pending

    def count_request(self, cluster: str, replica: str, status: int) -> None:
        key = (cluster, replica, status)
        if self.defer:
            pending = self._requests_pending
            pending[key] = pending.get(key, 0) + 1
        else:
            self._request_child(key).inc()

    def count_decision(self, reason: str) -> None:
        if self.defer:
            pending = self._decisions_pending
            pending[reason] = pending.get(reason, 0) + 1
        else:
            self._decision_child(reason).inc()

    def _request_child(self, key: tuple[str, str, int]) -> Counter:
        child = self._req_children.get(key)
        if child is None:
            cluster, replica, status = key
            child = self._req_children[key] = self.requests.labels(cluster, replica, str(status))
        return child

    def _decision_child(self, reason: str) -> Counter:
        child = self._decision_children.get(reason)
        if child is None:
            child = self._decision_children[reason] = self.decisions.labels(reason)
        return child

    def flush(self) -> None:
        """Add what the request path counted since the last read."""
        for histogram in self._pending:
            histogram.flush()
        requests, self._requests_pending = self._requests_pending, {}
        for key, n in requests.items():
            self._request_child(key).inc(n)
        decisions, self._decisions_pending = self._decisions_pending, {}
        for reason, n in decisions.items():
            self._decision_child(reason).inc(n)

    def render(self) -> bytes:
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            return generate_latest(reg)
        return generate_latest(self.registry)
