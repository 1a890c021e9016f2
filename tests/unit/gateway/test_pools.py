"""Fleet: slot reservation, FIFO wait queue with direct hand-off, timeouts, ejection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from expert_router.errors import NoCapacity
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.gateway.pools import Fleet, Pool, Replica
from expert_router.routing import RouteDecision, RoutingPolicy


@dataclass
class Pred:
    cluster: int
    ranked: tuple[int, ...]


def fleet(cap: int | None = 1, **kw: Any) -> Fleet:
    replicas = [Replica(f"r{i}", f"http://r{i}", None, None, cap, 1.0) for i in range(2)]  # type: ignore[arg-type]
    pool = Pool("*", replicas)
    opts = {"queue_size": 2, "queue_timeout": 1.0, "eject_after": 2, **kw}
    return Fleet({"0": pool, "1": pool}, RoutingPolicy("never"), GatewayMetrics(), **opts)


P = Pred(0, (0, 1))


class Slots:
    """Collects what a waiter is handed (a decision, or None on timeout)."""

    def __init__(self) -> None:
        self.got: list[RouteDecision | None] = []

    def __call__(self, d: RouteDecision | None) -> None:
        self.got.append(d)


async def test_reserve_and_release() -> None:
    f = fleet(cap=1)
    a, b = f.reserve(P), f.reserve(P)
    assert {a.replica, b.replica} == {"r0", "r1"}
    assert all(r.outstanding == 1 for r in f.replicas.values())
    c = f.reserve(P)
    assert c.replica is None and c.reason == "queued"
    f.release(f.replicas["r0"])
    assert f.replicas["r0"].outstanding == 0


async def test_queue_hands_released_slot_to_first_waiter() -> None:
    f = fleet(cap=1)
    f.reserve(P), f.reserve(P)
    first, second = Slots(), Slots()
    f.wait(P, (), first)
    f.wait(P, (), second)
    with pytest.raises(NoCapacity, match="queue is full"):
        f.wait(P, (), Slots())  # queue_size=2
    f.release(f.replicas["r1"])
    assert [d.replica for d in first.got if d] == ["r1"] and f.replicas["r1"].outstanding == 1
    assert second.got == []
    f.release(f.replicas["r0"])
    assert [d.replica for d in second.got if d] == ["r0"]
    assert "expert_router_queue_depth 0.0" in f.metrics.render().decode()


async def test_a_waiter_served_by_a_nested_dispatch_is_not_served_again() -> None:
    """A waiter's ``on_slot`` may end its request at once (its replica released: a nested
    dispatch serves the next waiter); the outer dispatch must not serve that one again."""
    f = fleet(cap=1)
    f.reserve(P), f.reserve(P)  # r0 and r1 both full
    second = Slots()

    def first(d: RouteDecision | None) -> None:
        assert d is not None and d.replica is not None
        f.release(f.replicas[d.replica])  # ended at once: the nested dispatch serves second
        f.release(f.replicas["r1"])  # and another request ended: r1 free for the outer loop

    f.wait(P, (), first)
    f.wait(P, (), second)
    f.release(f.replicas["r0"])
    assert [d.replica for d in second.got if d] == ["r0"]  # once
    assert [r.outstanding for r in f.replicas.values()] == [1, 0]


async def test_queue_timeout_and_leaving_leave_no_leak() -> None:
    f = fleet(cap=1, queue_timeout=0.05)
    f.reserve(P), f.reserve(P)
    timed_out, left = Slots(), Slots()
    f.wait(P, (), timed_out)
    waiter = f.wait(P, (), left)
    f.leave(waiter)  # the client went away
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.06, done.set_result, None)
    await done
    assert timed_out.got == [None] and left.got == []
    f.release(f.replicas["r0"])
    assert f.replicas["r0"].outstanding == 0  # nobody took it
    text = f.metrics.render().decode()
    assert "expert_router_queue_timeouts_total 1.0" in text
    assert "expert_router_queue_depth 0.0" in text


async def test_a_zero_timeout_queue_refuses_at_once() -> None:
    f = fleet(cap=1, queue_timeout=0)
    f.reserve(P), f.reserve(P)
    with pytest.raises(NoCapacity):
        f.wait(P, (), Slots())


async def test_ejection_readmission_and_unavailable() -> None:
    f = fleet(cap=None)
    r0, r1 = f.replicas["r0"], f.replicas["r1"]
    f.record_failure(r0, "x")
    assert r0.healthy
    f.record_success(r0)
    f.record_failure(r0, "x")
    assert r0.healthy  # not two in a row
    f.record_failure(r0, "x")
    assert not r0.healthy
    assert f.reserve(P).replica == "r1"
    for _ in range(2):
        f.record_failure(r1, "x")
    assert not f.any_healthy()
    assert f.reserve(P).reason == "unavailable"
    f.readmit(r0)
    assert r0.healthy and r0.failures == 0
    text = f.metrics.render().decode()
    assert 'expert_router_ejections_total{replica="r0"} 1.0' in text
    assert 'expert_router_replica_healthy{replica="r1"} 0.0' in text
