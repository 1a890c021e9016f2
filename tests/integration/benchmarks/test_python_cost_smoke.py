"""``benchmarks/gateway_python_cost.py`` runs the real relay and lifecycle whole (it checks
that every event reaches the client) and reports both figures (keeps it from rotting)."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gateway_python_cost import measure  # noqa: E402

pytestmark = [pytest.mark.integration]


def test_python_cost_measures_a_whole_lifecycle() -> None:
    figures = asyncio.run(measure(rounds=1, profile=False))
    assert set(figures) == {"relay_us", "request_us"}
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
    assert figures["request_us"] > figures["relay_us"]  # a request relays 16 events and more
