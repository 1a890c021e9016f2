"""Prometheus metrics of one gateway, on its own registry (several gateways fit in a process).

With ``multiproc_dir`` set (``serve --workers N``) prometheus_client's multiprocess mode
stores values in that directory and ``/metrics`` sums every worker's.
"""

from __future__ import annotations

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


class GatewayMetrics:
    """Every metric the gateway exports; label children are cached per replica."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        r = self.registry = CollectorRegistry()
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
        self.classify_seconds = Histogram(
            f"{NS}_classify_seconds", "Time to classify one prompt", buckets=_FAST, registry=r
        )
        self.overhead_seconds = Histogram(
            f"{NS}_overhead_seconds",
            "Gateway time from request arrival to the upstream request being sent",
            buckets=_FAST,
            registry=r,
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

    def count_request(self, cluster: str, replica: str, status: int) -> None:
        key = (cluster, replica, status)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.requests.labels(cluster, replica, str(status))
        child.inc()

    def count_decision(self, reason: str) -> None:
        child = self._decision_children.get(reason)
        if child is None:
            child = self._decision_children[reason] = self.decisions.labels(reason)
        child.inc()

    def render(self) -> bytes:
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            return generate_latest(reg)
        return generate_latest(self.registry)
