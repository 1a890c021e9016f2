"""The iteration-level (continuous-batching) scheduler shared by live serving and simulation.

The engine never reads a clock: a driver calls ``begin_iteration(now)`` to get the duration
of the next iteration and ``end_iteration(now)`` when it is over. The live driver waits on
the real clock (asyncio); the simulation advances a virtual one. Same code, two clocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from expert_router.emulator.perf import IterationWork, TimingModel

WAITING, PREFILL, DECODE, DONE, CANCELLED = range(5)


class Listener(Protocol):
    """Receives a request's events. ``on_token`` only when the engine streams tokens."""

    def on_token(self, req: EngineRequest) -> None: ...

    def on_finish(self, req: EngineRequest, now: float) -> None: ...


class EngineRequest:
    """One request inside the engine. ``target`` tokens are generated unless it is cancelled."""

    __slots__ = (
        "rid", "prompt_tokens", "max_tokens", "target", "listener", "state", "prefill_left",
        "first_iter", "generated", "arrival", "admitted", "first_token_time", "finish_time",
    )  # fmt: skip

    def __init__(
        self, rid: int, prompt_tokens: int, max_tokens: int, target: int, listener: Listener
    ) -> None:
        if not 1 <= target <= max_tokens:
            raise ValueError(f"target must be in 1..max_tokens, got {target} of {max_tokens}")
        self.rid = rid
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.target = target
        self.listener = listener
        self.state = WAITING
        self.prefill_left = max(prompt_tokens, 1)
        self.first_iter = -1
        self.generated = 0
        self.arrival = self.admitted = self.first_token_time = self.finish_time = -1.0

    @property
    def kv_need(self) -> int:
        """KV-cache tokens reserved at admission: prompt + max_tokens (no eviction ever)."""
        return self.prompt_tokens + self.max_tokens


class Engine:
    """Waiting queue, FCFS admission by batch size and reserved KV, prefill, decode steps."""

    def __init__(
        self,
        timing: TimingModel,
        *,
        max_batch: int,
        kv_tokens: int,
        prefill_chunk: int | None = None,
        stream_tokens: bool = True,
        record_iterations: bool = False,
    ) -> None:
        self.timing = timing
        self.max_batch = max_batch
        self.kv_tokens = kv_tokens
        self.prefill_chunk = prefill_chunk
        self.stream_tokens = stream_tokens
        self.waiting: deque[EngineRequest] = deque()
        self.prefilling: list[EngineRequest] = []
        self.decoding: dict[int, EngineRequest] = {}
        self.kv_reserved = 0
        self.decode_ctx = 0
        self.iterations = 0
        self.iter_ends: list[float] | None = [] if record_iterations else None
        self.idle = True
        self.on_wake: Callable[[], None] | None = None
        self._finish_at: dict[int, list[EngineRequest]] = {}
        self._chunks: list[tuple[EngineRequest, int]] = []
        self.generation_tokens_total = 0
        self.prompt_tokens_total = 0
        self.finished_total = 0
        self.cancelled_total = 0
        self.preemptions_total = 0  # the reservation policy never preempts

    # -- state for metrics and tests --------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of the KV cache reserved by running requests (0..1)."""
        return self.kv_reserved / self.kv_tokens

    def generated_so_far(self, req: EngineRequest) -> int:
        if req.state == DECODE:
            return self.iterations - req.first_iter
        return req.generated

    # -- requests -------------------------------------------------------------------------
    def submit(self, req: EngineRequest, now: float) -> None:
        """Queue ``req``; raises ``ValueError`` if it could never fit in the KV cache."""
        if req.kv_need > self.kv_tokens:
            raise ValueError(f"request needs {req.kv_need} KV tokens, capacity {self.kv_tokens}")
        req.arrival = now
        self.waiting.append(req)
        if self.idle and self.on_wake is not None:
            self.on_wake()

    def cancel(self, req: EngineRequest, now: float) -> None:
        """Drop ``req`` wherever it is; its batch slot and KV reservation free at once."""
        if req.state == WAITING:
            try:
                self.waiting.remove(req)
            except ValueError:  # never submitted
                return
        elif req.state == PREFILL:
            self.prefilling.remove(req)
            self.kv_reserved -= req.kv_need
        elif req.state == DECODE:
            req.generated = self.iterations - req.first_iter
            del self.decoding[req.rid]
            self.kv_reserved -= req.kv_need
            self.decode_ctx -= req.prompt_tokens + req.generated
        else:
            return
        req.state = CANCELLED
        req.finish_time = now
        self.cancelled_total += 1

    # -- iterations -----------------------------------------------------------------------
    def _admit(self, now: float) -> None:
        waiting, prefilling = self.waiting, self.prefilling
        while waiting and len(prefilling) + len(self.decoding) < self.max_batch:
            req = waiting[0]
            if self.kv_reserved + req.kv_need > self.kv_tokens:
                break  # FCFS: the head waits, nobody overtakes it
            waiting.popleft()
            self.kv_reserved += req.kv_need
            req.state = PREFILL
            req.admitted = now
            prefilling.append(req)

    def begin_iteration(self, now: float) -> float | None:
        """Admit, plan the next iteration and return its duration (None: nothing to do)."""
        self._admit(now)
        n_dec = len(self.decoding)
        chunks = self._chunks
        chunks.clear()
        tokens, attn, done = 0, 0.0, 0
        if self.prefilling:
            budget = max(self.prefill_chunk - n_dec, 1) if self.prefill_chunk else 1 << 62
            for req in self.prefilling:
                c = min(req.prefill_left, budget)
                if c <= 0:
                    break
                offset = req.prompt_tokens - req.prefill_left
                attn += c * (offset + c / 2)
                tokens += c
                done += c == req.prefill_left
                chunks.append((req, c))
                budget -= c
        if n_dec == 0 and not chunks:
            self.idle = True
            return None
        self.idle = False
        work = IterationWork(n_dec, self.decode_ctx, tokens, attn, done)
        return self.timing.iteration_time(work)

    def end_iteration(self, now: float) -> None:
        """The planned iteration is over at ``now``: emit its tokens, retire finished requests."""
        k = self.iterations
        self.iterations = k + 1
        if self.iter_ends is not None:
            self.iter_ends.append(now)
        decoding = self.decoding
        n = len(decoding)
        self.generation_tokens_total += n
        self.decode_ctx += n
        if self.stream_tokens and n:
            for req in tuple(decoding.values()):
                if req.state == DECODE:
                    req.listener.on_token(req)
        for req in self._finish_at.pop(k, ()):
            if req.state == DECODE:
                self._finish(req, now)
        for req, c in self._chunks:
            if req.state != PREFILL:
                continue
            req.prefill_left -= c
            if req.prefill_left:
                continue
            self.prefilling.remove(req)
            self.prompt_tokens_total += req.prompt_tokens
            self.generation_tokens_total += 1
            req.state = DECODE
            req.first_iter = k
            req.first_token_time = now
            decoding[req.rid] = req
            self.decode_ctx += req.prompt_tokens + 1
            if self.stream_tokens:
                req.listener.on_token(req)
            if req.state != DECODE:
                continue
            if req.target == 1:
                self._finish(req, now)
            else:
                self._finish_at.setdefault(k + req.target - 1, []).append(req)
        self._chunks.clear()

    def _finish(self, req: EngineRequest, now: float) -> None:
        req.generated = req.target
        req.state = DONE
        req.finish_time = now
        del self.decoding[req.rid]
        self.kv_reserved -= req.kv_need
        self.decode_ctx -= req.prompt_tokens + req.target
        self.finished_total += 1
        req.listener.on_finish(req, now)
