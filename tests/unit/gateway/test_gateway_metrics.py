"""The gateway's metrics: what the request path counts in plain Python reads, at every scrape,
exactly as if prometheus_client had counted it at once (and nothing is counted twice)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram

from expert_router.gateway.metrics import GatewayMetrics, PendingHistogram

FAST = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
# On bounds, between them, beyond the last, zero and below: every bucket edge case.
VALUES = [0.0, 0.00005, 0.00007, 0.0001, 0.0005, 0.00051, 0.1, 0.2, 5.0, -1.0, 0.002]


Sample = tuple[str, tuple[tuple[str, str], ...]]  # (name, sorted label pairs)


def samples(registry: CollectorRegistry, family: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for metric in registry.collect():
        if metric.name == family:
            for s in metric.samples:
                if not s.name.endswith("_created"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_pending_observations_read_as_prometheus_client_would_have_counted_them() -> None:
    m = GatewayMetrics()
    assert isinstance(m.overhead_seconds, PendingHistogram)
    ref = CollectorRegistry()
    direct = Histogram("expert_router_overhead_seconds", "-", buckets=FAST, registry=ref)
    for round_ in range(2):  # a second scrape adds only what came after the first
        for v in VALUES[round_:]:
            m.overhead_seconds.observe(v)
            direct.observe(v)
        got = samples(m.registry, "expert_router_overhead_seconds")
        want = samples(ref, "expert_router_overhead_seconds")
        assert got == want and got


def test_request_counts_wait_for_the_scrape_and_add_up() -> None:
    m = GatewayMetrics()
    for status in (200, 200, 503):
        m.count_request("0", "r0", status)
    m.count_decision("nearest")
    m.count_decision("nearest")
    requests = "expert_router_requests_total"
    labels = {"cluster": "0", "replica": "r0", "status": "200"}
    assert m.registry.get_sample_value(requests, labels) == 2.0
    assert m.registry.get_sample_value(requests, labels | {"status": "503"}) == 1.0
    m.count_request("0", "r0", 200)
    assert m.registry.get_sample_value(requests, labels) == 3.0
    assert b'expert_router_route_decisions_total{reason="nearest"} 2.0' in m.render()


def test_with_workers_every_update_goes_to_prometheus_client_at_once(tmp_path: Path) -> None:
    m = GatewayMetrics(multiproc_dir=str(tmp_path))
    assert isinstance(m.overhead_seconds, Histogram)
    m.count_request("0", "r0", 200)
    assert m._requests_pending == {}
    assert m.requests.labels("0", "r0", "200")._value.get() == 1.0


def test_a_prometheus_client_without_the_private_fields_gets_observations_at_once() -> None:
    """``PendingHistogram`` adds to prometheus_client's private fields: a release that renamed
    them must not lose observations (nor fail at the first scrape)."""
    m = GatewayMetrics()
    child = Histogram("renamed_seconds", "-", buckets=FAST, registry=None)
    assert PendingHistogram.fits(child)
    del child._upper_bounds  # what a release that renamed it would look like
    assert not PendingHistogram.fits(child)
    assert m.per_request(child) is child
