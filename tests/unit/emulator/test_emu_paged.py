"""The paged KV policy: blocks grow with sequences, the newest is preempted and recomputed."""

from __future__ import annotations

import pytest

from expert_router.emulator.engine import DONE, WAITING, Engine, EngineRequest
from expert_router.emulator.kvcache import PagedKV
from expert_router.emulator.perf import FixedTiming
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import Simulation, SimWorkload


class Counter:
    def __init__(self) -> None:
        self.tokens = 0

    def on_token(self, req: EngineRequest) -> None:
        self.tokens += 1

    def on_finish(self, req: EngineRequest, now: float) -> None:
        pass


def paged(kv_tokens: int, max_batch: int = 8) -> Engine:
    timing = FixedTiming(tpot_s=0.01, ttft_s=0.02)
    return Engine(timing, max_batch=max_batch, kv_tokens=kv_tokens, kv_policy="paged",
                  block_size=16, record_iterations=True)  # fmt: skip


def drain(e: Engine) -> float:
    t = 0.0
    while (d := e.begin_iteration(t)) is not None:
        t += d
        e.end_iteration(t)
    return t


def test_block_arithmetic() -> None:
    kv = PagedKV(1600, block_size=16)
    assert (kv.capacity, kv.watermark, kv.blocks(16), kv.blocks(17)) == (100, 1, 1, 2)


def test_paged_admits_by_prompt_blocks_not_by_max_tokens() -> None:
    # 10 blocks (1 kept free): reserve policy would fit one 16 + 100 request, paged fits 4+
    e = paged(kv_tokens=160)
    reqs = [EngineRequest(i, 16, 100, 100, Counter()) for i in range(6)]
    for r in reqs:
        e.submit(r, 0.0)
    e.begin_iteration(0.0)
    assert e.num_running == 6 and e.kv_reserved == 6


def test_preemption_when_blocks_run_out_and_exact_tokens_after_resume() -> None:
    e = paged(kv_tokens=160)
    reqs = [EngineRequest(i, 16, 100, 100, Counter()) for i in range(3)]
    for r in reqs:
        e.submit(r, 0.0)
    drain(e)
    assert e.preemptions_total >= 1
    assert all(r.state == DONE and r.generated == 100 for r in reqs)
    assert all(r.listener.tokens == 100 for r in reqs)  # type: ignore[attr-defined]
    preempted = [r for r in reqs if r.segments]
    assert preempted and all(sum(n for _, n in r.token_iterations()) == 100 for r in reqs)
    assert e.kv_reserved == 0 and e.decode_ctx == 0 and e.num_running == 0


def test_preempted_request_goes_back_to_the_head_of_the_queue() -> None:
    e = paged(kv_tokens=160)
    reqs = [EngineRequest(i, 16, 100, 100, Counter()) for i in range(3)]
    for r in reqs:
        e.submit(r, 0.0)
    t = 0.0
    while e.preemptions_total == 0:
        t += e.begin_iteration(t) or 0.0
        e.end_iteration(t)
    victim = e.waiting[0]
    assert victim.state == WAITING and victim is reqs[-1]
    assert victim.prefill_left == 16 + victim.base and victim.base > 0


def test_cancel_releases_blocks() -> None:
    e = paged(kv_tokens=1600)
    r = EngineRequest(1, 40, 50, 50, Counter())
    e.submit(r, 0.0)
    d = e.begin_iteration(0.0) or 0.0
    e.end_iteration(d)
    assert e.kv_reserved == 3
    e.cancel(r, d)
    assert e.kv_reserved == 0 and e.kv_usage == 0


def test_virtual_run_with_preemption_keeps_every_token_time() -> None:
    preset = get_preset("cpu-tiny", kv_policy="paged", kv_tokens=2048, max_batch=16)
    w = SimWorkload(users=12, turns=1, output_tokens=120, base_tokens=60, jitter=5)
    sim = Simulation(preset, w)
    records = sim.run()
    assert sim.engines[0].preemptions_total > 0
    for r in records:
        assert r.status == "ok" and len(r.token_times) == r.output_tokens == 120
        assert r.token_times == sorted(r.token_times) and r.token_times[-1] == pytest.approx(r.end)
    reserve = Simulation(get_preset("cpu-tiny", kv_tokens=2048, max_batch=16), w)
    reserve.run()
    assert reserve.engines[0].preemptions_total == 0
