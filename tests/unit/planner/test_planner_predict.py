"""Composed predictions: the metrics on arrays are ``bench.summary``'s, and pools simulated
alone compose to exactly what one simulation of the whole fleet gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from expert_router.bench.records import RequestRecord
from expert_router.bench.summary import get_path, summarize_run
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import Simulation, SimWorkload, simulate
from expert_router.planner.predict import join, predict, within
from expert_router.planner.pricing import (
    FleetRouter,
    PoolJob,
    PoolRouter,
    Requests,
    pool_result,
    simulate_pool,
)

SMALL = SimWorkload(users=1, output_tokens=24, base_tokens=60, continuation_tokens=160, jitter=6)
PRESET = get_preset("cpu-tiny", max_batch=3)
KEYS = (
    "requests", "errors", "ttft.mean", "ttft.p99", "ttft.base.mean", "ttft.continuation.p50",
    "tpot.mean", "tpot.p99", "response_time.p50", "response_time.p99", "p99_response_time",
    "session_throughput", "session.n99", "session.tokens", "throughput",
    "user_throughput.mean", "user_throughput.sd",
)  # fmt: skip


def _records(users: int, replicas: int) -> list[RequestRecord]:
    w = dataclasses.replace(SMALL, users=users, clusters=1)
    return simulate(PRESET, w, n_engines=replicas, router=PoolRouter(replicas, "t"))


def test_array_metrics_are_the_summary_metrics() -> None:
    records = _records(users=11, replicas=2)
    records[3].status = "error"  # a failed request counts as bench.metrics counts it
    pool = pool_result(Requests.of(records), users=11, replicas=2)
    ours = predict([[pool]]).metrics
    theirs = summarize_run(records)
    for key in KEYS:
        assert get_path(ours, key) == pytest.approx(get_path(theirs, key), rel=1e-12), key


def test_the_pool_router_spreads_by_outstanding_requests() -> None:
    two = PoolRouter(2, "seed")  # both candidates compared: strictly least outstanding
    assert np.bincount([two.route(0) for _ in range(10)]).tolist() == [5, 5]
    router = PoolRouter(4, "seed")  # two of four compared, as the gateway does
    engines = [router.route(0) for _ in range(40)]
    counts = np.bincount(engines, minlength=4)
    assert counts.max() - counts.min() <= 3 and router.peak == counts.max()
    for e in engines:
        router.release(e)
    assert [s.outstanding for s in router.pool.replicas] == [0, 0, 0, 0]


def test_composed_pools_equal_one_simulation_of_the_whole_fleet() -> None:
    """With equal prompts (no jitter) each user's requests depend only on its pool, so the
    union of the pools' runs is the fleet's run: every metric agrees exactly."""
    replicas = [2, 1, 3]
    w = dataclasses.replace(SMALL, users=40, jitter=0, clusters=3, distribution="weights:5,2,3")
    sim = Simulation(PRESET, w, n_engines=sum(replicas))
    users = np.bincount(sim.clusters, minlength=3).tolist()
    sim.router = FleetRouter(replicas, users, w.seed)
    whole = summarize_run(sim.run())
    pools = [simulate_pool(PoolJob(PRESET, w, u, n)) for u, n in zip(users, replicas, strict=True)]
    composed = predict([pools]).metrics
    for key in KEYS:
        assert get_path(composed, key) == pytest.approx(get_path(whole, key), rel=1e-9), key


def test_draws_are_runs_and_their_metrics_are_averaged() -> None:
    a = simulate_pool(PoolJob(PRESET, SMALL, 9, 2))
    b = simulate_pool(PoolJob(PRESET, SMALL, 5, 2))
    both = predict([[a], [b]])
    ma, mb = predict([[a]]).metrics, predict([[b]]).metrics
    assert both.metrics["requests"] == (ma["requests"] + mb["requests"]) / 2
    mean = (ma["p99_response_time"] + mb["p99_response_time"]) / 2
    assert both.metrics["p99_response_time"] == pytest.approx(mean)
    assert both.clusters[0]["users"] == 7 and both.clusters[0]["peak_outstanding"] == max(
        a.peak_outstanding, b.peak_outstanding
    )


def test_attainment_counts_requests_within_every_threshold() -> None:
    pool = simulate_pool(PoolJob(PRESET, SMALL, 12, 1))
    q = pool.requests
    resp = q.end - q.start
    cut = float(np.median(resp))
    joined = predict([[pool]], thresholds={"response": cut})
    assert joined.attainment == pytest.approx(float(np.mean(resp <= cut)))
    assert predict([[pool]]).attainment is None
    # TTFT and TPOT bounds combine with the response bound
    both = predict([[pool]], thresholds={"response": cut, "ttft": float(np.min(q.ttft))})
    assert joined.attainment is not None
    assert both.attainment is not None and both.attainment <= joined.attainment


def test_within_treats_a_failed_request_as_missed() -> None:
    pool = simulate_pool(PoolJob(PRESET, SMALL, 4, 1))
    q = dataclasses.replace(pool.requests, ok=np.zeros(pool.requests.size, dtype=bool))
    failed = pool_result(q, users=pool.users, replicas=pool.replicas)
    assert predict([[failed]], thresholds={"response": 1e9}).attainment == 0.0
    assert within(join([pool]), {"tpot": 1e9}).all()


def test_a_pool_without_users_adds_nothing() -> None:
    from expert_router.planner.pricing import empty_pool

    pool = simulate_pool(PoolJob(PRESET, SMALL, 6, 1))
    alone, with_empty = predict([[pool]]), predict([[pool, empty_pool(2)]])
    assert with_empty.metrics["p99_response_time"] == alone.metrics["p99_response_time"]
    assert with_empty.clusters[1]["users"] == 0 and with_empty.clusters[1]["replicas"] == 2


def test_pools_priced_in_worker_processes_equal_pools_priced_here() -> None:
    from expert_router.planner.pricing import Pricer

    keys = [("tiny", 7, 1), ("tiny", 7, 2), ("tiny", 3, 1), ("tiny", 0, 2)]
    here, there = Pricer({"tiny": PRESET}, SMALL), Pricer({"tiny": PRESET}, SMALL, jobs=2)
    try:
        here.price(keys)
        there.price(keys)  # spawned processes
    finally:
        there.close()
    assert here.simulated == there.simulated == 3  # the pool without users is not simulated
    for key in keys:
        a, b = here.cache[key].requests, there.cache[key].requests
        assert (a.end == b.end).all() and (a.user == b.user).all(), key
