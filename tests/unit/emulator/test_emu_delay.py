"""The paper's gateway as a condition: a log-normal with the paper's moments, applied to each
routed request in virtual time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from expert_router.bench.summary import summarize
from expert_router.emulator.delay import PAPER_GATEWAY, LogNormalDelay
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import SimWorkload, simulate
from expert_router.errors import ConfigError

SMALL = dict(output_tokens=20, base_tokens=50, continuation_tokens=120, jitter=5)


def test_the_log_normal_has_the_papers_moments() -> None:
    d = PAPER_GATEWAY
    assert (d.mean_s, d.sd_s) == (0.442, 0.302)
    # closed form: mean = exp(mu + sigma^2 / 2), var = (exp(sigma^2) - 1) * mean^2
    assert math.exp(d.mu + d.sigma**2 / 2) == pytest.approx(0.442)
    assert math.sqrt(math.expm1(d.sigma**2)) * 0.442 == pytest.approx(0.302)
    x = d.sample(np.random.default_rng(0), 400_000)
    assert x.mean() == pytest.approx(0.442, rel=0.01)
    assert x.std() == pytest.approx(0.302, rel=0.02)
    assert x.min() > 0 and np.median(x) < x.mean()  # right-skewed: the paper's outliers
    assert LogNormalDelay(0.5, 0.0).sample(np.random.default_rng(1), 3).tolist() == [0.5] * 3
    with pytest.raises(ConfigError, match="mean must be > 0"):
        LogNormalDelay(0.0, 0.1)


def test_each_routed_request_waits_its_gateway_delay() -> None:
    p = get_preset("cpu-tiny", tpot_ms=10, ttft_ms=20)
    plain = simulate(p, SimWorkload(users=50, turns=2, **SMALL), n_engines=8)  # type: ignore[arg-type]
    w = SimWorkload(users=50, turns=2, gateway=PAPER_GATEWAY, **SMALL)  # type: ignore[arg-type]
    routed = simulate(p, w, n_engines=8)
    assert len(routed) == 100 and all(r.status == "ok" for r in routed)
    delays = [r.server_timing["gateway"] / 1e3 for r in routed]
    assert len(set(delays)) == 100 and 0.2 < float(np.mean(delays)) < 0.8
    for r, d in zip(routed, delays, strict=True):
        # an idle expert (batch 8, 50 users over 8 experts: little queueing at 20 tokens)
        assert r.first_token is not None and r.first_token - r.start >= d + 0.02 - 1e-9
    assert not any(r.server_timing for r in plain)
    s = summarize(routed, users=50)
    assert s["gateway_overhead"]["mean"] == pytest.approx(float(np.mean(delays)) * 1e3)
    again = simulate(p, w, n_engines=8)
    assert [r.server_timing for r in again] == [r.server_timing for r in routed]
