"""Per-request pacing (``--pacing per-request``): every request runs on its own timers.

Token ``k`` of a request submitted at ``t0`` leaves at ``t0 + ttft + k * tpot`` (absolute
deadlines: a late wake-up does not shift later tokens), with no batch iterations, no batch limit
and no KV accounting. ``PacedEngine`` offers the ``Engine`` surface the live faces use
(``submit``, ``cancel``, the metric counters); ``PacedDriver`` binds it to the running loop.
"""

from __future__ import annotations

import asyncio

from expert_router.emulator.engine import CANCELLED, DECODE, DONE, WAITING, EngineRequest

DEFAULT_TTFT_MS = 5.0


class PacedEngine:
    """Timer-driven requests calling the same listeners (``StreamSink``) as ``Engine``."""

    def __init__(self, *, ttft_s: float, tpot_s: float, late_s: float = 0.05) -> None:
        if ttft_s < 0 or tpot_s <= 0:
            raise ValueError(f"need ttft >= 0 and tpot > 0, got {ttft_s} and {tpot_s}")
        self.ttft_s, self.tpot_s, self.late_s = ttft_s, tpot_s, late_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.generation_tokens_total = 0
        self.prompt_tokens_total = 0
        self.finished_total = 0
        self.cancelled_total = 0
        self.preemptions_total = 0  # never: no KV cache to run out of
        self.iterations = 0  # no batch iterations in this mode
        self.late_tokens = 0
        """Tokens that left more than ``late_s`` after their deadline."""
        self.lag_sum_s = 0.0
        self.lag_max_s = 0.0

    # -- state for metrics and tests --------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._timers)

    @property
    def num_waiting(self) -> int:
        return 0

    @property
    def kv_usage(self) -> float:
        return 0.0

    @property
    def kv_reserved(self) -> int:
        return 0

    def generated_so_far(self, req: EngineRequest) -> int:
        return req.generated

    # -- requests -------------------------------------------------------------------------
    def submit(self, req: EngineRequest, now: float) -> None:
        """Start ``req`` at ``now`` (the loop's clock): its first token is due at now + TTFT."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("PacedEngine is not started (PacedDriver.start binds a loop)")
        if req.state != WAITING or req.rid in self._timers:
            raise ValueError(f"request {req.rid} was already submitted")
        req.arrival = req.admitted = now
        req.state = DECODE
        req.first_iter = 0
        self._timers[req.rid] = loop.call_at(now + self.ttft_s, self._tick, req)

    def cancel(self, req: EngineRequest, now: float) -> None:
        """Stop ``req`` and its pending timer; an unknown or finished request is a no-op."""
        handle = self._timers.pop(req.rid, None)
        if handle is None:
            return
        handle.cancel()
        req.state = CANCELLED
        req.finish_time = now
        self.cancelled_total += 1

    def cancel_all(self) -> None:
        """Drop every timer (the server is stopping); the requests count as cancelled."""
        for handle in self._timers.values():
            handle.cancel()
        self.cancelled_total += len(self._timers)
        self._timers.clear()

    def _tick(self, req: EngineRequest) -> None:
        loop = self.loop
        assert loop is not None
        k = req.generated
        deadline = req.arrival + self.ttft_s + k * self.tpot_s
        now = loop.time()
        lag = now - deadline
        if lag > 0:
            self.lag_sum_s += lag
            if lag > self.lag_max_s:
                self.lag_max_s = lag
            if lag > self.late_s:
                self.late_tokens += 1
        req.generated = k + 1
        self.generation_tokens_total += 1
        if k == 0:
            req.first_token_time = now
            self.prompt_tokens_total += req.prompt_tokens
        req.listener.on_token(req)
        if req.state != DECODE:
            return  # the listener cancelled it
        if req.generated < req.target:
            self._timers[req.rid] = loop.call_at(deadline + self.tpot_s, self._tick, req)
            return
        del self._timers[req.rid]
        req.state = DONE
        req.finish_time = now
        self.finished_total += 1
        req.listener.on_finish(req, now)

    def metric_rows(self) -> list[tuple[str, str, float]]:
        """Extra Prometheus rows (name, type, value) of this mode: how late tokens left."""
        return [
            ("emulator:paced_token_lag_seconds_total", "counter", self.lag_sum_s),
            ("emulator:paced_token_lag_seconds_max", "gauge", self.lag_max_s),
            ("emulator:paced_late_tokens_total", "counter", self.late_tokens),
        ]


class PacedDriver:
    """The ``LiveDriver`` surface for a ``PacedEngine``: the loop's clock, start and stop."""

    def __init__(self, engine: PacedEngine) -> None:
        self.engine = engine

    @property
    def late_iterations(self) -> int:
        return self.engine.late_tokens

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        self.engine.loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self.engine.cancel_all()
