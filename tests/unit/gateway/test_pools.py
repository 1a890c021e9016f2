"""Fleet: slot reservation, FIFO wait queue with direct hand-off, timeouts, ejection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from expert_router.errors import NoCapacity, RoutingError
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.gateway.pools import Fleet, Pool, Replica
from expert_router.routing import RoutingPolicy


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


async def test_reserve_and_release() -> None:
    f = fleet(cap=1)
    a = await f.acquire(P)
    b = await f.acquire(P)
    assert {a.replica, b.replica} == {"r0", "r1"}
    assert all(r.outstanding == 1 for r in f.replicas.values())
    f.release(f.replicas["r0"])
    assert f.replicas["r0"].outstanding == 0


async def test_queue_hands_released_slot_to_first_waiter() -> None:
    f = fleet(cap=1)
    await f.acquire(P)
    await f.acquire(P)
    first = asyncio.create_task(f.acquire(P))
    second = asyncio.create_task(f.acquire(P))
    await asyncio.sleep(0)
    with pytest.raises(NoCapacity, match="queue is full"):
        await f.acquire(P)  # queue_size=2
    f.release(f.replicas["r1"])
    d = await first
    assert d.replica == "r1" and f.replicas["r1"].outstanding == 1
    assert not second.done()
    f.release(f.replicas["r0"])
    assert (await second).replica == "r0"


async def test_queue_timeout_and_cancel_leave_no_leak() -> None:
    f = fleet(cap=1, queue_timeout=0.05)
    await f.acquire(P)
    await f.acquire(P)
    with pytest.raises(NoCapacity) as info:
        await f.acquire(P)
    assert info.value.retry_after == 1.0
    waiting = asyncio.create_task(f.acquire(P))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    f.release(f.replicas["r0"])
    assert f.replicas["r0"].outstanding == 0  # nobody took it
    # a waiter handed a slot but cancelled before running gives the slot back
    await f.acquire(P)
    late = asyncio.create_task(f.acquire(P))
    await asyncio.sleep(0)
    f.release(f.replicas["r1"])
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert f.replicas["r1"].outstanding == 0


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
    assert (await f.acquire(P)).replica == "r1"
    for _ in range(2):
        f.record_failure(r1, "x")
    assert not f.any_healthy()
    with pytest.raises(RoutingError, match="no healthy replica"):
        await f.acquire(P)
    f.readmit(r0)
    assert r0.healthy and r0.failures == 0
    text = f.metrics.render().decode()
    assert 'expert_router_ejections_total{replica="r0"} 1.0' in text
    assert 'expert_router_replica_healthy{replica="r1"} 0.0' in text
