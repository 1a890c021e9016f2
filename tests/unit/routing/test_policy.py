"""RoutingPolicy: nearest pool, power of two choices, spill-over policies and bounds."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from expert_router.routing import RouteDecision, RoutingPolicy


@dataclass
class R:
    name: str
    outstanding: int = 0
    max_concurrency: int | None = None
    healthy: bool = True
    weight: float = 1.0
    paused: bool = False


@dataclass
class P:
    name: str
    replicas: list[R] = field(default_factory=list)


@dataclass
class Pred:
    cluster: int
    ranked: tuple[int, ...]


def pools3() -> dict[str, P]:
    """Clusters 0, 1, 2 with one pool each: a0/a1, b0, c0."""
    return {
        "0": P("0", [R("a0"), R("a1")]),
        "1": P("1", [R("b0")]),
        "2": P("2", [R("c0")]),
    }


def policy(kind: str = "saturated", distance: int = 1) -> RoutingPolicy:
    return RoutingPolicy(kind, max_distance=distance, rng=random.Random(0))  # type: ignore[arg-type]


def test_nearest_cluster_and_frozen_decision() -> None:
    d = policy().decide(Pred(1, (1, 0, 2)), pools3())
    assert d == RouteDecision("1", "b0", "nearest", (), "1")
    with pytest.raises(AttributeError):
        d.cluster = "2"  # type: ignore[misc]


def test_power_of_two_prefers_less_loaded() -> None:
    pools = pools3()
    pools["0"].replicas[0].outstanding = 5
    picks = Counter(policy().decide(Pred(0, (0, 1, 2)), pools).replica for _ in range(50))
    assert picks == {"a1": 50}  # with two replicas, both are sampled every time


def test_power_of_two_spreads_over_equal_replicas() -> None:
    pools = {"0": P("0", [R(f"r{i}") for i in range(4)])}
    p = policy()
    picks = Counter(p.decide(Pred(0, (0,)), pools).replica for _ in range(400))
    assert set(picks) == {"r0", "r1", "r2", "r3"}
    assert min(picks.values()) > 50


def test_weight_scales_outstanding() -> None:
    pools = {"0": P("0", [R("big", outstanding=3, weight=4.0), R("small", outstanding=1)])}
    assert policy().decide(Pred(0, (0,)), pools).replica == "big"


def test_saturated_spills_to_next_ranked_cluster() -> None:
    pools = pools3()
    for r in pools["0"].replicas:
        r.max_concurrency, r.outstanding = 2, 2
    d = policy("saturated").decide(Pred(0, (0, 2, 1)), pools)
    assert (d.cluster, d.replica, d.reason, d.nearest) == ("2", "c0", "spillover", "0")


@pytest.mark.parametrize("kind", ["never", "unhealthy"])
def test_saturated_queues_unless_policy_saturated(kind: str) -> None:
    pools = pools3()
    for r in pools["0"].replicas:
        r.max_concurrency, r.outstanding = 1, 1
    d = policy(kind).decide(Pred(0, (0, 2, 1)), pools)
    assert (d.cluster, d.replica, d.reason) == ("0", None, "queued")


def test_unhealthy_policy_spills_when_all_down() -> None:
    pools = pools3()
    for r in pools["0"].replicas:
        r.healthy = False
    assert policy("unhealthy").decide(Pred(0, (0, 1, 2)), pools).replica == "b0"
    d = policy("never").decide(Pred(0, (0, 1, 2)), pools)
    assert d.reason == "unavailable" and d.replica is None


def test_max_distance_bounds_spill() -> None:
    pools = pools3()
    for name in ("0", "1"):
        for r in pools[name].replicas:
            r.healthy = False
    pred = Pred(0, (0, 1, 2))
    assert policy("saturated", distance=1).decide(pred, pools).reason == "unavailable"
    d = policy("saturated", distance=2).decide(pred, pools)
    assert (d.replica, d.reason) == ("c0", "spillover")
    assert policy("saturated", distance=0).decide(pred, pools).reason == "unavailable"


def test_shared_pool_is_not_a_spill_target() -> None:
    shared = P("*", [R("s0", max_concurrency=1, outstanding=1)])
    pools = {"0": shared, "1": shared, "2": P("2", [R("c0")])}
    # cluster 1 shares cluster 0's pool: it counts for the distance but is skipped
    assert policy(distance=1).decide(Pred(0, (0, 1, 2)), pools).reason == "queued"
    assert policy(distance=2).decide(Pred(0, (0, 1, 2)), pools).replica == "c0"


def test_failover_excludes_failed_replicas() -> None:
    pools = pools3()
    d = policy().decide(Pred(0, (0, 1, 2)), pools, exclude={"a0"})
    assert (d.replica, d.reason) == ("a1", "failover")
    d = policy("saturated").decide(Pred(0, (0, 1, 2)), pools, exclude={"a0", "a1"})
    assert (d.cluster, d.replica, d.reason) == ("1", "b0", "spillover")
    d = policy("never").decide(Pred(0, (0, 1, 2)), pools, exclude={"a0", "a1"})
    assert d.reason == "unavailable"
