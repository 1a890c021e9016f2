"""Virtual time: the live engine code driven by a discrete-event loop, with simulated users.

Each user sends a base prompt and, when the answer ends, a continuation prompt (history + a
follow-up padded to the continuation target), as the live user simulator does. Users go to
the engine of their cluster (or where a ``Router`` sends them), optionally through a modelled
gateway latency. The result is the live bench's ``RequestRecord`` list.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.bench.mix import cluster_weights, sample_clusters
from expert_router.bench.records import RequestRecord
from expert_router.emulator.delay import LogNormalDelay
from expert_router.emulator.engine import Engine, EngineRequest
from expert_router.emulator.presets import Preset
from expert_router.errors import ConfigError

_START, _BEGIN, _END, _SEND, _SUBMIT = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class SimWorkload:
    """The paper's workload by default: 335 ± 30 tokens, then 1535 ± 30, 1200 out each."""

    users: int
    output_tokens: int = OUTPUT_TOKENS
    base_tokens: int = BASE_TOKENS
    continuation_tokens: int = CONTINUATION_TOKENS
    jitter: int = JITTER
    turns: int = 2
    distribution: str = "uniform"
    clusters: int = 8
    followup_min_tokens: int = 16
    ramp_s: float = 0.0
    """Users start evenly spread over ``[0, ramp_s)`` (all at 0 by default)."""
    turnaround_s: float = 0.001
    """Client turnaround: a follow-up is sent this long after the answer's last token (the
    live client's receive + send over loopback), so it misses the iteration already begun."""
    gateway: LogNormalDelay | None = None
    """A gateway latency drawn per request and added before it reaches its engine (the paper's
    gateway: ``delay.PAPER_GATEWAY``); recorded as the request's ``gateway`` Server-Timing."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 1 or self.output_tokens < 1 or self.turns < 1:
            raise ConfigError("users, output tokens and turns must be >= 1")
        if not 0 <= self.jitter < self.base_tokens:
            raise ConfigError(f"jitter must be in [0, base_tokens), got {self.jitter}")


class Router(Protocol):
    """Chooses the engine of each request and hears when it ends (a gateway's replica pools)."""

    def route(self, cluster: int) -> int:
        """The engine index for a request of ``cluster``, counted as outstanding there."""
        ...

    def release(self, engine: int) -> None:
        """A request on ``engine`` ended."""
        ...


class ByCluster:
    """The default: the engine of a request's cluster, ``cluster mod engines``."""

    def __init__(self, engines: int) -> None:
        self.engines = engines

    def route(self, cluster: int) -> int:
        return cluster % self.engines

    def release(self, engine: int) -> None:
        pass


class _Turn:
    """Listener of one simulated request (no per-token events: times come from iterations)."""

    __slots__ = ("sim", "user", "turn", "engine", "record")

    def __init__(self, sim: Simulation, user: int, turn: int, engine: int, record: RequestRecord):
        self.sim, self.user, self.turn, self.engine, self.record = sim, user, turn, engine, record

    def on_token(self, req: EngineRequest) -> None:  # pragma: no cover - never streamed
        pass

    def on_finish(self, req: EngineRequest, now: float) -> None:
        self.sim.finished(self, req, now)


class Simulation:
    """One run: ``workload.users`` users against ``n_engines`` engines of ``preset``."""

    def __init__(
        self,
        preset: Preset,
        workload: SimWorkload,
        *,
        n_engines: int = 1,
        repetition: int = 0,
        router: Router | None = None,
    ) -> None:
        if n_engines < 1:
            raise ConfigError(f"experts must be >= 1, got {n_engines}")
        self.preset, self.workload, self.repetition = preset, workload, repetition
        self.context = preset.context  # derived from the GPU spec: once, not per request
        self.engines = [
            Engine(
                preset.timing(),
                max_batch=preset.max_batch,
                kv_tokens=preset.kv_capacity,
                prefill_chunk=preset.prefill_chunk,
                kv_policy=preset.kv_policy,
                block_size=preset.block_size,
                stream_tokens=False,
                record_iterations=True,
            )
            for _ in range(n_engines)
        ]
        for i, engine in enumerate(self.engines):
            engine.on_wake = self._waker(i)
        self.router = router or ByCluster(n_engines)
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._rid = 0
        self.records: list[RequestRecord] = []
        self._later: dict[int, tuple[int, int, int]] = {}
        self._routing: dict[int, EngineRequest] = {}
        w = workload
        rng = np.random.default_rng([w.seed, w.users, repetition])
        self._gateway_rng = np.random.default_rng([w.seed, w.users, repetition, 1])
        self.clusters = sample_clusters(
            w.users, cluster_weights(w.distribution, w.clusters), rng
        ).tolist()
        self.base = (w.base_tokens + rng.integers(-w.jitter, w.jitter + 1, w.users)).tolist()
        self.targets = (
            w.continuation_tokens + rng.integers(-w.jitter, w.jitter + 1, w.users)
        ).tolist()

    def _push(self, t: float, kind: int, idx: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, idx))

    def _waker(self, i: int) -> Callable[[], None]:
        def wake() -> None:
            self._push(self.now, _BEGIN, i)

        return wake

    def _send(self, user: int, turn: int, prompt_tokens: int) -> None:
        w = self.workload
        cluster = self.clusters[user]
        engine_index = self.router.route(cluster)
        record = RequestRecord(
            users=w.users,
            repetition=self.repetition,
            user=user,
            turn=turn,
            cluster=cluster,
            prompt_tokens=prompt_tokens,
            max_tokens=w.output_tokens,
            start=self.now,
            end=self.now,
            routed_cluster=cluster if len(self.engines) > 1 else None,
            replica=f"expert-{engine_index}",
        )
        self._rid += 1
        listener = _Turn(self, user, turn, engine_index, record)
        req = EngineRequest(self._rid, prompt_tokens, w.output_tokens, w.output_tokens, listener)
        engine = self.engines[engine_index]
        if prompt_tokens + w.output_tokens > self.context:
            record.status, record.http_status = "error", 400
            record.error = (
                f"This model's maximum context length is {self.context} tokens. "
                f"However, you requested {prompt_tokens + w.output_tokens} tokens."
            )
            self.records.append(record)
            self.router.release(engine_index)
            return
        if w.gateway is None:
            engine.submit(req, self.now)
            return
        delay = float(w.gateway.sample(self._gateway_rng, 1)[0])
        record.server_timing = {"gateway": delay * 1e3}
        self._routing[self._seq + 1] = req
        self._push(self.now + delay, _SUBMIT, self._seq + 1)

    def finished(self, turn: _Turn, req: EngineRequest, now: float) -> None:
        record = turn.record
        iter_ends = self.engines[turn.engine].iter_ends
        assert iter_ends is not None
        record.end = now
        record.first_token = req.first_token_time
        runs = req.token_iterations()
        if len(runs) == 1:
            record.token_times = iter_ends[req.first_iter : req.first_iter + req.generated]
        else:  # preempted and resumed: the tokens of each decode run
            record.token_times = [t for i, n in runs for t in iter_ends[i : i + n]]
        record.output_tokens = req.generated
        self.records.append(record)
        self.router.release(turn.engine)
        if turn.turn + 1 < self.workload.turns:
            w = self.workload
            history = record.prompt_tokens + req.generated + w.followup_min_tokens
            prompt = max(self.targets[turn.user], history)
            if w.turnaround_s <= 0:
                self._send(turn.user, turn.turn + 1, prompt)
            else:
                self._later[self._seq + 1] = (turn.user, turn.turn + 1, prompt)
                self._push(now + w.turnaround_s, _SEND, self._seq + 1)

    def run(self) -> list[RequestRecord]:
        """Simulate until every user is done; returns the records in completion order."""
        w = self.workload
        for u in range(w.users):
            self._push(w.ramp_s * u / w.users, _START, u)
        heap, engines = self._heap, self.engines
        pop, push = heapq.heappop, self._push
        while heap:
            t, _, kind, idx = pop(heap)
            self.now = t
            if kind == _START:
                self._send(idx, 0, self.base[idx])
                continue
            if kind == _SEND:
                self._send(*self._later.pop(idx))
                continue
            if kind == _SUBMIT:
                req = self._routing.pop(idx)
                assert isinstance(req.listener, _Turn)
                engines[req.listener.engine].submit(req, t)
                continue
            engine = engines[idx]
            if kind == _END:
                engine.end_iteration(t)
            elif not engine.idle:
                continue  # a stale wake-up: this engine is already iterating
            duration = engine.begin_iteration(t)
            if duration is not None:
                push(t + duration, _END, idx)
        return self.records


def simulate(
    preset: Preset,
    workload: SimWorkload,
    *,
    n_engines: int = 1,
    repetition: int = 0,
    router: Router | None = None,
) -> list[RequestRecord]:
    """Records of one simulated run (see ``Simulation``)."""
    sim = Simulation(preset, workload, n_engines=n_engines, repetition=repetition, router=router)
    return sim.run()


def simulate_repetitions(
    preset: Preset, workload: SimWorkload, *, n_engines: int = 1, repetitions: int = 1
) -> list[RequestRecord]:
    """All records of ``repetitions`` independent runs (``RequestRecord.repetition`` tells)."""
    out: list[RequestRecord] = []
    for r in range(repetitions):
        out.extend(simulate(preset, workload, n_engines=n_engines, repetition=r))
    return out


def default_experts(preset: Preset) -> int:
    """The paper's layout: one tensor-parallel engine for a multi-GPU preset, else 8 experts."""
    return 1 if preset.tp > 1 else 8


__all__: Sequence[str] = [
    "ByCluster", "Router", "SimWorkload", "Simulation", "simulate", "simulate_repetitions",
]  # fmt: skip
