"""``benchmarks/gateway_python_cost.py`` runs the real relay and lifecycle whole (it checks
that every event reaches the client) and reports every figure, hot and cold, with the two
floors (keeps it from rotting)."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gateway_python_cost import Idle, measure  # noqa: E402

pytestmark = [pytest.mark.integration]


def test_python_cost_measures_a_whole_lifecycle() -> None:
    figures = asyncio.run(measure(rounds=1, profile=False, idle=Idle(0.001, False), cold_items=5))
    cold = {"cold_relay_us", "cold_strict_floor_us", "cold_bare_floor_us", "cold_request_us"}
    assert set(figures) == {"relay_us", "request_us", "garbage_per_request"} | cold
    # a request in a reference cycle waits for the cyclic collector: none may be left
    assert figures.pop("garbage_per_request") < 0.5
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
    assert figures["request_us"] > figures["relay_us"]  # a request relays 16 events and more
    assert figures["cold_request_us"] > figures["cold_relay_us"]


def test_python_cost_splits_a_cold_request_into_its_steps() -> None:
    from expert_router.gateway.http_ingress import HttpConnection

    before = HttpConnection.on_headers_complete
    figures = asyncio.run(
        measure(rounds=1, profile=False, idle=Idle(0.0, evict=True), cold_items=5, stages=True)
    )
    steps = {k: v for k, v in figures.items() if k.startswith("step: ")}
    assert len(steps) == 13 and all(math.isfinite(v) and v >= 0 for v in steps.values())
    assert steps["step: classification (predict)"] > 0
    assert HttpConnection.on_headers_complete is before  # the timing wrappers are gone


def test_grpc_python_cost_relays_every_message_and_leaves_no_cycles() -> None:
    import uvloop

    from grpc_python_cost import measure as grpc_measure

    figures = uvloop.run(grpc_measure(rounds=1, requests=200, profile=False))
    assert all(math.isfinite(v) and v >= 0 for v in figures.values())
    assert figures["request_us"] > figures["relay_us"] > 0
    assert figures["events_us"] > 0 and figures["open_us"] > 0 and figures["end_us"] > 0
    # A call in a reference cycle waits for the cyclic collector (the relay's upstream call
    # and its listener referred to each other): none may be left.
    assert figures["garbage_per_call"] < 0.5
