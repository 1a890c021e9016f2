"""Per-request pacing: token times on absolute deadlines, cancellation, counters, validation."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from expert_router.cli.main import main
from expert_router.emulator.engine import CANCELLED, DONE, EngineRequest
from expert_router.emulator.paced import PacedDriver, PacedEngine
from expert_router.emulator.presets import get_preset
from expert_router.errors import ConfigError


class Recorder:
    """A listener that records the loop time of every token and of the finish."""

    def __init__(self, loop: asyncio.AbstractEventLoop, block_after: int = 0) -> None:
        self.loop = loop
        self.times: list[float] = []
        self.finished: float | None = None
        self.done = loop.create_future()
        self.block_after, self.block_s = block_after, 0.0
        self.second = loop.create_future()

    def on_token(self, req: EngineRequest) -> None:
        self.times.append(self.loop.time())
        if len(self.times) == 2:
            self.second.set_result(None)
        if self.block_after and len(self.times) == self.block_after:
            time.sleep(self.block_s)  # a busy event loop: the next wake-ups come late

    def on_finish(self, req: EngineRequest, now: float) -> None:
        self.finished = now
        self.done.set_result(None)


def _started(ttft_ms: float, tpot_ms: float) -> tuple[PacedEngine, PacedDriver]:
    engine = PacedEngine(ttft_s=ttft_ms / 1e3, tpot_s=tpot_ms / 1e3)
    driver = PacedDriver(engine)
    driver.start()
    return engine, driver


async def test_tokens_leave_on_their_deadlines_not_on_batch_steps() -> None:
    loop = asyncio.get_running_loop()
    engine, driver = _started(ttft_ms=20, tpot_ms=30)
    runs = []
    for i in range(12):
        rec = Recorder(loop)
        req = EngineRequest(i, 10, 6, 6, rec)
        engine.submit(req, driver.now())
        runs.append((req, rec))
        await asyncio.sleep(0.0037)  # staggered arrivals: a batched engine would align them
    assert engine.num_running == 12
    await asyncio.wait_for(asyncio.gather(*(rec.done for _, rec in runs)), 5)
    lags = []
    for req, rec in runs:
        assert len(rec.times) == 6 and req.state == DONE and req.generated == 6
        deadlines = [req.arrival + 0.020 + k * 0.030 for k in range(6)]
        lags += [t - d for t, d in zip(rec.times, deadlines, strict=True)]
        assert req.first_token_time == pytest.approx(rec.times[0], abs=1e-3)
        assert rec.finished == pytest.approx(rec.times[-1], abs=1e-3)
    assert min(lags) >= -0.002  # never early
    assert statistics.median(lags) < 0.005
    assert max(lags) < 0.100
    # Requests that arrived 3.7 ms apart get their first tokens about 3.7 ms apart.
    firsts = [rec.times[0] for _, rec in runs]
    gaps = [b - a for a, b in zip(firsts, firsts[1:], strict=False)]
    assert statistics.median(gaps) == pytest.approx(0.0037, abs=0.002)
    assert (engine.num_running, engine.finished_total) == (0, 12)
    assert engine.generation_tokens_total == 72 and engine.prompt_tokens_total == 120


async def test_a_late_wake_up_does_not_stretch_later_tokens() -> None:
    loop = asyncio.get_running_loop()
    engine, driver = _started(ttft_ms=10, tpot_ms=20)
    rec = Recorder(loop, block_after=2)
    rec.block_s = 0.050  # the loop is stuck for 2.5 TPOT after the second token
    req = EngineRequest(1, 5, 10, 10, rec)
    engine.submit(req, driver.now())
    await asyncio.wait_for(rec.done, 5)
    lags = [t - (req.arrival + 0.010 + k * 0.020) for k, t in enumerate(rec.times)]
    assert lags[2] > 0.020  # due during the stall: late
    assert statistics.median(lags[6:]) < 0.008  # back on the original grid, not 50 ms behind
    assert rec.times[-1] - req.arrival == pytest.approx(0.010 + 9 * 0.020, abs=0.025)
    assert engine.lag_max_s > 0.020 and engine.lag_sum_s > 0.020


async def test_cancel_stops_the_timers_and_counts() -> None:
    loop = asyncio.get_running_loop()
    engine, driver = _started(ttft_ms=5, tpot_ms=15)
    rec = Recorder(loop)
    req = EngineRequest(7, 3, 50, 50, rec)
    engine.submit(req, driver.now())
    with pytest.raises(ValueError, match="already submitted"):
        engine.submit(req, driver.now())
    await asyncio.wait_for(rec.second, 5)
    engine.cancel(req, driver.now())
    assert req.state == CANCELLED and engine.num_running == 0
    await asyncio.sleep(0.060)
    assert len(rec.times) == 2 and rec.finished is None
    engine.cancel(req, driver.now())  # twice: a no-op
    engine.cancel(EngineRequest(8, 1, 1, 1, rec), driver.now())  # never submitted: a no-op
    assert engine.cancelled_total == 1 and engine.finished_total == 0

    others = [EngineRequest(10 + i, 3, 9, 9, Recorder(loop)) for i in range(3)]
    for r in others:
        engine.submit(r, driver.now())
    assert engine.num_running == 3
    await driver.stop()  # the server stops: every timer goes
    assert engine.num_running == 0 and engine.cancelled_total == 4
    await asyncio.sleep(0.030)
    assert all(r.generated == 0 for r in others)


def test_submit_before_start_and_bad_timing_raise() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        PacedEngine(ttft_s=0.0, tpot_s=0.01).submit(EngineRequest(1, 1, 1, 1, None), 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tpot"):
        PacedEngine(ttft_s=0.005, tpot_s=0.0)


def test_preset_and_cli_need_a_fixed_tpot(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="pacing 'per-request' needs a fixed tpot_ms"):
        get_preset("cpu-tiny", pacing="per-request")
    with pytest.raises(ConfigError, match="pacing"):
        get_preset("cpu-tiny", tpot_ms=10, pacing="sometimes")
    assert get_preset("cpu-tiny", tpot_ms=10, pacing="per-request").pacing == "per-request"
    assert get_preset("cpu-tiny").pacing == "batched"
    assert main(["emulate", "--pacing", "per-request", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--pacing per-request needs --tpot-ms" in err
    with pytest.raises(SystemExit):
        main(["emulate", "--pacing", "sometimes"])
    assert "invalid choice" in capsys.readouterr().err
