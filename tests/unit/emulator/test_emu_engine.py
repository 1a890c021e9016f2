"""The iteration-level scheduler, driven by hand with a fixed timing model."""

from __future__ import annotations

import pytest

from expert_router.emulator.engine import (
    CANCELLED,
    DECODE,
    DONE,
    PREFILL,
    WAITING,
    Engine,
    EngineRequest,
)
from expert_router.emulator.perf import FixedTiming, IterationWork


class Recorder:
    def __init__(self) -> None:
        self.tokens = 0
        self.finished_at: float | None = None

    def on_token(self, req: EngineRequest) -> None:
        self.tokens += 1

    def on_finish(self, req: EngineRequest, now: float) -> None:
        self.finished_at = now


def make(max_batch: int = 4, kv: int = 10_000, **kw: object) -> Engine:
    return Engine(FixedTiming(tpot_s=0.01, ttft_s=0.05), max_batch=max_batch, kv_tokens=kv, **kw)  # type: ignore[arg-type]


def req(
    rid: int, prompt: int = 10, max_tokens: int = 5, target: int | None = None
) -> EngineRequest:
    return EngineRequest(rid, prompt, max_tokens, target or max_tokens, Recorder())


def run(engine: Engine, t: float = 0.0, limit: int = 10_000) -> float:
    for _ in range(limit):
        d = engine.begin_iteration(t)
        if d is None:
            return t
        t += d
        engine.end_iteration(t)
    raise AssertionError("engine did not drain")


def test_single_request_timing_and_token_count() -> None:
    e = make()
    r = req(1, prompt=20, max_tokens=6)
    e.submit(r, 0.0)
    end = run(e)
    assert r.state == DONE and r.generated == 6
    assert r.listener.tokens == 6  # type: ignore[attr-defined]
    assert r.first_token_time == pytest.approx(0.05)
    assert end == pytest.approx(0.05 + 5 * 0.01)
    assert r.listener.finished_at == pytest.approx(end)  # type: ignore[attr-defined]
    assert e.kv_reserved == 0 and e.decode_ctx == 0 and e.num_running == 0
    assert e.generation_tokens_total == 6 and e.prompt_tokens_total == 20


def test_queueing_starts_exactly_at_max_batch() -> None:
    e = make(max_batch=3)
    reqs = [req(i) for i in range(5)]
    for r in reqs:
        e.submit(r, 0.0)
    e.begin_iteration(0.0)
    assert [r.state for r in reqs] == [PREFILL] * 3 + [WAITING] * 2
    assert e.num_running == 3 and e.num_waiting == 2


def test_queueing_starts_exactly_at_kv_capacity() -> None:
    # each request reserves prompt + max_tokens = 100 + 50 = 150 tokens; 3 fit in 450
    e = make(max_batch=100, kv=450)
    reqs = [req(i, prompt=100, max_tokens=50) for i in range(4)]
    for r in reqs:
        e.submit(r, 0.0)
    e.begin_iteration(0.0)
    assert e.num_running == 3 and e.num_waiting == 1
    assert e.kv_usage == pytest.approx(1.0)
    with pytest.raises(ValueError):
        e.submit(req(99, prompt=400, max_tokens=51), 0.0)


def test_fcfs_head_of_line_blocks() -> None:
    e = make(max_batch=10, kv=300)
    big, small = req(1, prompt=200, max_tokens=50), req(2, prompt=10, max_tokens=10)
    e.submit(req(0, prompt=100, max_tokens=50), 0.0)
    e.submit(big, 0.0)
    e.submit(small, 0.0)
    e.begin_iteration(0.0)
    assert big.state == WAITING and small.state == WAITING  # small does not overtake


def test_cancel_frees_slot_for_next_iteration() -> None:
    e = make(max_batch=1)
    a, b = req(1, max_tokens=100), req(2, max_tokens=3)
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    t = e.begin_iteration(0.0) or 0.0
    e.end_iteration(t)
    assert a.state == DECODE and b.state == WAITING
    e.cancel(a, t)
    assert a.state == CANCELLED and e.num_running == 0 and e.kv_reserved == 0
    assert e.decode_ctx == 0
    e.begin_iteration(t)
    assert b.state == PREFILL
    run(e, t)
    assert b.state == DONE and e.cancelled_total == 1


def test_cancel_waiting_and_mid_iteration() -> None:
    e = make(max_batch=1)
    a, b = req(1, max_tokens=10), req(2)
    e.submit(a, 0.0)
    e.submit(b, 0.0)
    e.cancel(b, 0.0)
    assert e.num_waiting == 1 and b.state == CANCELLED
    d = e.begin_iteration(0.0) or 0.0
    e.cancel(a, 0.01)  # during its prefill iteration
    e.end_iteration(d)
    assert a.listener.tokens == 0  # type: ignore[attr-defined]
    assert e.begin_iteration(d) is None and e.idle


def test_prefill_stalls_running_decodes() -> None:
    e = make()
    a = req(1, max_tokens=50)
    e.submit(a, 0.0)
    t = run_until_tokens(e, a, 3)
    e.submit(req(2), t)
    d = e.begin_iteration(t)
    assert d == pytest.approx(0.05)  # the newcomer's prefill iteration, shared with a's decode


def run_until_tokens(e: Engine, r: EngineRequest, n: int) -> float:
    t = 0.0
    while e.generated_so_far(r) < n:
        t += e.begin_iteration(t) or 0.0
        e.end_iteration(t)
    return t


def test_emulated_eos_target_and_finish_order() -> None:
    e = make(max_batch=8)
    short, long = req(1, max_tokens=10, target=2), req(2, max_tokens=10)
    e.submit(short, 0.0)
    e.submit(long, 0.0)
    run(e)
    assert short.generated == 2 and long.generated == 10
    assert short.finish_time < long.finish_time


class Pricer:
    def __init__(self) -> None:
        self.works: list[IterationWork] = []

    def iteration_time(self, work: IterationWork) -> float:
        self.works.append(work)
        return 0.01

    def describe(self) -> dict[str, float]:
        return {}


def test_chunked_prefill_budget_and_decode_context() -> None:
    pricer = Pricer()
    e = Engine(pricer, max_batch=4, kv_tokens=10_000, prefill_chunk=64)
    a = EngineRequest(1, 100, 3, 3, Recorder())
    e.submit(a, 0.0)
    run(e)
    prefill = [w.prefill_tokens for w in pricer.works]
    assert prefill[:2] == [64, 36] and a.first_iter == 1
    assert pricer.works[0].prefill_done == 0 and pricer.works[1].prefill_done == 1
    # attention positions of the second chunk: 36 * (64 + 36 / 2)
    assert pricer.works[1].prefill_attn == pytest.approx(36 * (64 + 18))
    # the two decode steps read the prompt plus the tokens generated so far
    assert [w.decode_ctx for w in pricer.works[2:]] == [101, 102]
    assert a.generated == 3


def test_wake_callback_only_when_idle() -> None:
    e = make()
    wakes: list[int] = []
    e.on_wake = lambda: wakes.append(1)
    e.submit(req(1), 0.0)
    e.begin_iteration(0.0)
    e.submit(req(2), 0.0)
    assert wakes == [1]


def test_target_must_be_within_max_tokens() -> None:
    with pytest.raises(ValueError):
        EngineRequest(1, 10, 5, 6, Recorder())
