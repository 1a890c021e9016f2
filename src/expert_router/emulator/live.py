"""The real-time driver: runs an ``Engine`` on the asyncio clock, one wake-up per iteration.

Iterations are scheduled on absolute deadlines: when the event loop wakes late, the next
iteration still starts at the modelled time (up to ``catch_up_s``), so a busy CPU delays token
delivery a little but does not stretch the emulated TPOT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from expert_router.emulator.engine import Engine, EngineRequest

log = logging.getLogger(__name__)


class StreamSink:
    """Listener of one live request: counts tokens not yet sent and wakes its handler."""

    __slots__ = ("pending", "done", "waiter", "per_token")

    def __init__(self, *, per_token: bool = True) -> None:
        self.per_token = per_token
        self.pending = 0
        self.done = False
        self.waiter: asyncio.Future[None] | None = None

    def on_token(self, req: EngineRequest) -> None:
        self.pending += 1
        if self.per_token:
            self.wake()

    def on_finish(self, req: EngineRequest, now: float) -> None:
        self.done = True
        self.wake()

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Return once there is a token to send or the request is over."""
        if self.pending or self.done:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiter = fut
        await fut


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("emulator engine loop stopped", exc_info=task.exception())


class LiveDriver:
    """Drives one engine in real time inside the running event loop."""

    def __init__(self, engine: Engine, *, catch_up_s: float = 0.05) -> None:
        self.engine = engine
        self.catch_up_s = catch_up_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.late_iterations = 0
        engine.on_wake = self._wake.set

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        t = loop.time()
        while True:
            duration = engine.begin_iteration(t)
            if duration is None:
                self._wake.clear()
                await self._wake.wait()
                t = loop.time()
                continue
            deadline = t + duration
            delay = deadline - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            engine.end_iteration(deadline)
            lag = loop.time() - deadline
            if lag > self.catch_up_s:
                self.late_iterations += 1
                t = loop.time()
            else:
                t = deadline
