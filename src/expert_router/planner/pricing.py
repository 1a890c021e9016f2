"""Pricing replica pools in virtual time: one cluster's users against N replicas of a preset.

A pool is simulated once for its share of users (``simulate_pool``: the emulator's engines on
the virtual clock, requests spread over replicas by the gateway's own ``RoutingPolicy``) and
kept as compact per-request arrays (``PoolResult``). ``Pricer`` caches pools by (preset,
users, replicas) and simulates the missing ones of a batch in parallel processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from expert_router.bench import metrics as m
from expert_router.bench.records import RequestRecord
from expert_router.emulator.presets import Preset
from expert_router.emulator.virtual import SimWorkload, simulate
from expert_router.routing import RoutingPolicy

PoolKey = tuple[str, int, int]
"""(preset id, users, replicas)."""


@dataclass(slots=True)
class _Slot:
    """A replica as the routing policy sees it (never unhealthy, paused or capped here)."""

    name: str
    outstanding: int = 0
    max_concurrency: int | None = None
    healthy: bool = True
    weight: float = 1.0
    paused: bool = False


@dataclass(slots=True)
class _Pool:
    name: str
    replicas: list[_Slot]


class PoolRouter:
    """The gateway's choice inside one pool: power of two choices, least outstanding."""

    def __init__(self, replicas: int, seed: str) -> None:
        self.pool = _Pool("pool", [_Slot(f"r{i}") for i in range(replicas)])
        self.index = {s.name: i for i, s in enumerate(self.pool.replicas)}
        self.policy = RoutingPolicy("never", max_distance=0, rng=random.Random(seed))
        self.peak = 0

    def route(self, cluster: int) -> int:
        chosen = self.policy.pick(self.pool)
        assert chosen is not None  # uncapped and healthy: always a replica
        i = self.index[chosen.name]
        slot = self.pool.replicas[i]
        slot.outstanding += 1
        self.peak = max(self.peak, slot.outstanding)
        return i

    def release(self, engine: int) -> None:
        self.pool.replicas[engine].outstanding -= 1


class FleetRouter:
    """Every cluster's pool in one simulation: cluster ``c`` owns the engines after those of
    clusters ``< c``; inside its pool, a ``PoolRouter`` seeded as ``simulate_pool`` seeds it
    (so a whole-fleet run can be set against the composed pools)."""

    def __init__(self, replicas: Sequence[int], users: Sequence[int], seed: int):
        self.first = [sum(replicas[:c]) for c in range(len(replicas))]
        pairs = zip(replicas, users, strict=True)
        self.pools = [PoolRouter(n, pool_seed(seed, u, n)) for n, u in pairs]
        self.owner = [c for c, n in enumerate(replicas) for _ in range(n)]

    def route(self, cluster: int) -> int:
        return self.first[cluster] + self.pools[cluster].route(cluster)

    def release(self, engine: int) -> None:
        c = self.owner[engine]
        self.pools[c].release(engine - self.first[c])


@dataclass(frozen=True, slots=True)
class Requests:
    """Requests as arrays, one entry each (times in virtual seconds since the run began)."""

    user: np.ndarray
    turn: np.ndarray
    start: np.ndarray
    end: np.ndarray
    ttft: np.ndarray
    """NaN where no token arrived."""
    tpot: np.ndarray
    """NaN with fewer than two tokens."""
    tokens: np.ndarray
    ok: np.ndarray

    @property
    def size(self) -> int:
        return int(self.start.size)

    @classmethod
    def of(cls, records: Sequence[RequestRecord]) -> Requests:
        """The arrays of ``records``: TTFT and TPOT by ``bench.metrics``' definitions."""
        ttfts = [m.ttft(r) for r in records]
        tpots = [m.tpot(r) for r in records]
        return cls(
            user=np.array([r.user for r in records], dtype=np.int64),
            turn=np.array([r.turn for r in records], dtype=np.int64),
            start=np.array([r.start for r in records], dtype=np.float64),
            end=np.array([r.end for r in records], dtype=np.float64),
            ttft=np.array([np.nan if v is None else v for v in ttfts], dtype=np.float64),
            tpot=np.array([np.nan if v is None else v for v in tpots], dtype=np.float64),
            tokens=np.array([r.output_tokens for r in records], dtype=np.int64),
            ok=np.array([r.status == "ok" for r in records], dtype=bool),
        )


@dataclass(frozen=True, slots=True)
class PoolResult:
    """One pool's run: its requests, and figures for the per-cluster table."""

    users: int
    replicas: int
    requests: Requests
    peak_outstanding: int
    """Most requests one replica held at once (the gateway's in-flight count)."""
    wall_s: float
    row: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The pool's own figures (``pool_row``), computed once."""


def pool_row(p: PoolResult) -> dict[str, Any]:
    """A pool's figures for the per-cluster table: users, replicas, its own tails and rate."""
    q = p.requests
    resp = (q.end - q.start)[q.ok]
    ttft = q.ttft[q.ok]
    span = float(q.end.max() - q.start.min()) if q.size else 0.0
    return {
        "users": p.users,
        "replicas": p.replicas,
        "users_per_replica": p.users / p.replicas,
        "p99_response_time": m.nearest_rank(resp, 99),
        "ttft_p99": m.percentile(ttft[np.isfinite(ttft)], 99),
        "tokens_per_s_per_replica": float(q.tokens.sum()) / span / p.replicas if span else 0.0,
        "peak_outstanding": p.peak_outstanding,
    }


def pool_result(
    requests: Requests, *, users: int, replicas: int, peak: int = 0, wall_s: float = 0.0
) -> PoolResult:
    """A pool's result with its row filled in."""
    pool = PoolResult(users, replicas, requests, peak, wall_s)
    pool.row.update(pool_row(pool))
    return pool


@dataclass(frozen=True, slots=True)
class PoolJob:
    """What a worker process needs to simulate one pool (picklable)."""

    preset: Preset
    workload: SimWorkload
    """The template: its ``users`` is replaced by this pool's share."""
    users: int
    replicas: int


def simulate_pool(job: PoolJob) -> PoolResult:
    """``job.users`` users of one cluster against ``job.replicas`` engines, routed as the
    gateway routes inside a pool. The same (users, replicas, seed) gives the same run."""
    t0 = time.perf_counter()
    w = dataclasses.replace(job.workload, users=job.users, clusters=1, distribution="uniform")
    router = PoolRouter(job.replicas, pool_seed(w.seed, job.users, job.replicas))
    records = simulate(job.preset, w, n_engines=job.replicas, router=router)
    return pool_result(Requests.of(records), users=job.users, replicas=job.replicas,
                       peak=router.peak, wall_s=time.perf_counter() - t0)  # fmt: skip


def pool_seed(seed: int, users: int, replicas: int) -> str:
    """The seed of a pool's routing choices."""
    return f"{seed}-{users}-{replicas}"


def empty_pool(replicas: int) -> PoolResult:
    """The result of a pool no user goes to."""
    return pool_result(Requests.of([]), users=0, replicas=replicas)


class Pricer:
    """Pool results by (preset id, users, replicas), simulated once each, in parallel.

    ``jobs`` > 1 uses that many worker processes (spawned, so it is safe wherever it runs);
    a batch with one missing pool is simulated in this process.
    """

    def __init__(
        self,
        presets: dict[str, Preset],
        workload: SimWorkload,
        *,
        jobs: int = 1,
        on_simulated: Callable[[int], None] = lambda _n: None,
    ) -> None:
        self.presets, self.workload, self.jobs = presets, workload, jobs
        self.on_simulated = on_simulated
        self.cache: dict[PoolKey, PoolResult] = {}
        self._executor: Executor | None = None
        self.simulated = 0
        self.sim_wall_s = 0.0

    def _job(self, key: PoolKey) -> PoolJob:
        preset_id, users, replicas = key
        return PoolJob(self.presets[preset_id], self.workload, users, replicas)

    def price(self, keys: Iterable[PoolKey]) -> None:
        """Simulate every pool of ``keys`` not yet known (in parallel when several)."""
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        for key in [k for k in missing if k[1] == 0]:
            self.cache[key] = empty_pool(key[2])
        missing = [k for k in missing if k[1] > 0]
        if not missing:
            return
        jobs = [self._job(k) for k in missing]
        if self.jobs > 1 and len(jobs) > 1:
            results: Iterable[PoolResult] = self._pool().map(simulate_pool, jobs)
        else:
            results = map(simulate_pool, jobs)
        for key, result in zip(missing, results, strict=True):
            self.cache[key] = result
            self.simulated += 1
            self.sim_wall_s += result.wall_s
            self.on_simulated(1)

    def get(self, key: PoolKey) -> PoolResult:
        self.price([key])
        return self.cache[key]

    def _pool(self) -> Executor:
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
