"""Fixtures for gateway integration tests: the bundled classifier and running gateways.

Plain helpers live in ``gwhelpers.py`` (imported by name: conftest modules are not importable
reliably when several test folders have one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from expert_router.classify import Classifier, load
from expert_router.config import GatewayConfig
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


@pytest.fixture
def gateway(clf: Classifier) -> Callable[..., Any]:
    """``async with gateway(config) as gw`` runs a gateway with the bundled classifier."""

    @asynccontextmanager
    async def start(config: GatewayConfig, **kw: Any) -> AsyncIterator[RunningGateway]:
        async with serve_gateway(config, classifier=clf, **kw) as gw:
            yield gw

    return start
