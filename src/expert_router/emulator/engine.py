"""The iteration-level (continuous-batching) scheduler shared by live serving and simulation.

The engine never reads a clock: a driver calls ``begin_iteration(now)`` to get the duration
of the next iteration and ``end_iteration(now)`` when it is over. The live driver waits on
the real clock (asyncio); the simulation advances a virtual one. Same code, two clocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from expert_router.emulator.kvcache import PagedKV, ReserveKV
from expert_router.emulator.perf import IterationWork, TimingModel

WAITING, PREFILL, DECODE, DONE, CANCELLED = range(5)


class Listener(Protocol):
    """Receives a request's events. ``on_token`` only when the engine streams tokens."""

    def on_token(self, req: EngineRequest) -> None: ...

    def on_finish(self, req: EngineRequest, now: float) -> None: ...


class EngineRequest:
    """One request inside the engine. ``target`` tokens are generated unless it is cancelled."""

    __slots__ = (
        "rid", "prompt_tokens", "max_tokens", "target", "listener", "state", "prefill_total",
        "prefill_left", "first_iter", "finish_iter", "base", "segments", "generated", "kv_held",
        "arrival", "admitted", "first_token_time", "finish_time",
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
        self.prefill_total = self.prefill_left = max(prompt_tokens, 1)
        self.first_iter = self.finish_iter = -1
        self.base = 0
        """Tokens generated before the current decode run (a preempted request resumes)."""
        self.segments: list[tuple[int, int]] = []
        """Earlier decode runs as (first iteration, tokens) when the request was preempted."""
        self.generated = 0
        self.kv_held = 0
        self.arrival = self.admitted = self.first_token_time = self.finish_time = -1.0

    def token_iterations(self) -> list[tuple[int, int]]:
        """(first iteration, tokens) of every decode run of a finished request."""
        return [*self.segments, (self.first_iter, self.generated - self.base)]


class Engine:
    """Waiting queue, FCFS admission by batch size and KV policy, prefill, decode steps.

    ``kv_policy="reserve"`` (default) reserves prompt + max_tokens at admission and never
    preempts; ``"paged"`` allocates ``block_size``-token blocks as sequences grow and preempts
    the newest decoding sequence (recomputed later) when a step finds no free block.
    """

    def __init__(
        self,
        timing: TimingModel,
        *,
        max_batch: int,
        kv_tokens: int,
        prefill_chunk: int | None = None,
        kv_policy: str = "reserve",
        block_size: int = 16,
        stream_tokens: bool = True,
        record_iterations: bool = False,
    ) -> None:
        self.timing = timing
        self.max_batch = max_batch
        self.kv_tokens = kv_tokens
        self.prefill_chunk = prefill_chunk
        self.stream_tokens = stream_tokens
        self.kv: ReserveKV | PagedKV
        if kv_policy == "reserve":
            self.kv = ReserveKV(kv_tokens)
        elif kv_policy == "paged":
            self.kv = PagedKV(kv_tokens, block_size)
        else:
            raise ValueError(f"kv_policy must be 'reserve' or 'paged', got {kv_policy!r}")
        self.waiting: deque[EngineRequest] = deque()
        self.prefilling: list[EngineRequest] = []
        self.decoding: dict[int, EngineRequest] = {}
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
        self.preemptions_total = 0

    # -- state for metrics and tests --------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of the KV cache held by running requests (0..1)."""
        return self.kv.usage

    @property
    def kv_reserved(self) -> int:
        """KV held: tokens (reserve policy) or blocks (paged policy)."""
        return self.kv.used

    def generated_so_far(self, req: EngineRequest) -> int:
        if req.state == DECODE:
            return req.base + self.iterations - req.first_iter
        return req.generated

    # -- requests -------------------------------------------------------------------------
    def submit(self, req: EngineRequest, now: float) -> None:
        """Queue ``req``; raises ``ValueError`` if it could never fit in the KV cache."""
        if not self.kv.fits_alone(req):
            need = req.prompt_tokens + req.max_tokens
            raise ValueError(f"request needs {need} KV tokens, capacity {self.kv_tokens}")
        req.arrival = now
        self.waiting.append(req)
        if self.idle and self.on_wake is not None:
            self.on_wake()

    def cancel(self, req: EngineRequest, now: float) -> None:
        """Drop ``req`` wherever it is; its batch slot and KV cache free at once."""
        if req.state == WAITING:
            try:
                self.waiting.remove(req)
            except ValueError:  # never submitted
                return
        elif req.state == PREFILL:
            self.prefilling.remove(req)
        elif req.state == DECODE:
            req.generated = self.generated_so_far(req)
            del self.decoding[req.rid]
            self.decode_ctx -= req.prompt_tokens + req.generated
        else:
            return
        self.kv.release(req)
        req.state = CANCELLED
        req.finish_time = now
        self.cancelled_total += 1

    # -- iterations -----------------------------------------------------------------------
    def _admit(self, now: float) -> None:
        waiting, prefilling, kv = self.waiting, self.prefilling, self.kv
        while waiting and len(prefilling) + len(self.decoding) < self.max_batch:
            req = waiting[0]
            if not kv.can_admit(req):
                break  # FCFS: the head waits, nobody overtakes it
            waiting.popleft()
            kv.admit(req)
            req.state = PREFILL
            if req.admitted < 0:
                req.admitted = now
            prefilling.append(req)

    def _grow_paged(self, kv: PagedKV) -> bool:
        """Give every decoding sequence room for one more token; preempt the newest if needed."""
        decoding = self.decoding
        needy = [
            r for r in decoding.values()
            if kv.needs_block(r, r.prompt_tokens + r.base + self.iterations - r.first_iter)
        ]  # fmt: skip
        preempted = False
        while len(needy) > kv.free:
            victim = next(reversed(decoding.values()))
            self._preempt(victim)
            preempted = True
            if victim in needy:
                needy.remove(victim)
        for r in needy:
            kv.grow(r)
        return preempted

    def _preempt(self, req: EngineRequest) -> None:
        """Back to the head of the queue; its prompt and tokens so far are prefilled again."""
        done = self.iterations - req.first_iter
        req.segments.append((req.first_iter, done))
        req.base += done
        del self.decoding[req.rid]
        self.decode_ctx -= req.prompt_tokens + req.base
        self.kv.release(req)
        req.state = WAITING
        req.prefill_total = req.prefill_left = req.prompt_tokens + req.base
        req.finish_iter = -1
        self.waiting.appendleft(req)
        self.preemptions_total += 1

    def begin_iteration(self, now: float) -> float | None:
        """Admit, plan the next iteration and return its duration (None: nothing to do)."""
        kv = self.kv
        if not (isinstance(kv, PagedKV) and self.decoding and self._grow_paged(kv)):
            self._admit(now)  # as vLLM: no admission in a step that had to preempt
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
                offset = req.prefill_total - req.prefill_left
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
            if req.state == DECODE and req.finish_iter == k:
                self._finish(req, now)
        for req, c in self._chunks:
            if req.state != PREFILL:
                continue
            req.prefill_left -= c
            if req.prefill_left:
                continue
            self.prefilling.remove(req)
            self.generation_tokens_total += 1
            req.state = DECODE
            req.first_iter = k
            if req.base == 0:
                self.prompt_tokens_total += req.prompt_tokens
                req.first_token_time = now
            decoding[req.rid] = req
            self.decode_ctx += req.prompt_tokens + req.base + 1
            if self.stream_tokens:
                req.listener.on_token(req)
            if req.state != DECODE:
                continue
            left = req.target - req.base
            if left == 1:
                self._finish(req, now)
            else:
                req.finish_iter = k + left - 1
                self._finish_at.setdefault(req.finish_iter, []).append(req)
        self._chunks.clear()

    def _finish(self, req: EngineRequest, now: float) -> None:
        req.generated = req.target
        req.state = DONE
        req.finish_time = now
        del self.decoding[req.rid]
        self.kv.release(req)
        self.decode_ctx -= req.prompt_tokens + req.target
        self.finished_total += 1
        req.listener.on_finish(req, now)
