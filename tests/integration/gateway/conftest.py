"""Fixtures for gateway integration tests: the bundled classifier, emulated experts, configs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from expert_router.classify import Classifier, load
from expert_router.config import GatewayConfig, validate_gateway_config
from expert_router.gateway import RunningGateway, serve_gateway

TOPICS = [
    "How do I bake sourdough bread with a crispy crust at home?",
    "Write a Python function that sorts a list of dictionaries by key.",
    "What are the symptoms of type 2 diabetes and how is it treated?",
    "Explain the rules of football and the offside rule.",
    "Best hotels and beaches to visit in Greece during summer vacation.",
    "How do interest rates affect the stock market and mortgage loans?",
    "The election results and the new government policy on taxes.",
    "Tips for choosing a wedding dress and planning the ceremony.",
    "How to install a new kitchen faucet and fix a leaking pipe.",
    "Which smartphone has the best camera and battery life this year?",
]


@pytest.fixture(scope="session")
def clf() -> Classifier:
    return load(None)


@pytest.fixture(scope="session")
def two_topics(clf: Classifier) -> tuple[str, int, str, int]:
    """Two prompts that land in different clusters: (text_a, cluster_a, text_b, cluster_b)."""
    first = clf.predict(TOPICS[0])
    for text in TOPICS[1:]:
        p = clf.predict(text)
        if p.cluster != first.cluster:
            return TOPICS[0], int(first.cluster), text, int(p.cluster)
    raise AssertionError("all topics fell into one cluster")


def make_config(experts: dict[str, list[Any]], **overrides: Any) -> GatewayConfig:
    """``experts`` maps cluster -> replica URLs or replica dicts."""
    data: dict[str, Any] = {
        "experts": {
            c: {"replicas": [r if isinstance(r, dict) else {"url": r} for r in reps]}
            for c, reps in experts.items()
        },
        **overrides,
    }
    return validate_gateway_config(data)


@pytest.fixture
def gateway(clf: Classifier) -> Callable[..., Any]:
    """``async with gateway(config) as gw`` runs a gateway with the bundled classifier."""

    @asynccontextmanager
    async def start(config: GatewayConfig, **kw: Any) -> AsyncIterator[RunningGateway]:
        async with serve_gateway(config, classifier=clf, **kw) as gw:
            yield gw

    return start


def chat_body(text: str, *, stream: bool = False, max_tokens: int = 8, **kw: Any) -> dict[str, Any]:
    return {
        "model": "any",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **kw,
    }


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, json=body, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def wait_until(cond: Callable[[], bool], within: float = 2.0, step: float = 0.002) -> bool:
    """Poll ``cond`` until it holds or ``within`` seconds pass; returns its last value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    for _ in range(1_000_000):
        if cond() or loop.time() > end:
            break
        await asyncio.sleep(step)
    return cond()
