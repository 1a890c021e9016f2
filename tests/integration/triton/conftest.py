"""Fixtures for the Triton tests: an emulator serving gRPC, gateways, tritonclient helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from triton_helpers import Emulator

from expert_router.classify import Classifier, load
from expert_router.config import GatewayConfig, gateway_config_from_experts
from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.server import serve_emulator
from expert_router.gateway import RunningGateway, serve_gateway
from expert_router.gateway.grpc_ingress import GrpcIngress, serve_grpc_ingress

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def clf() -> Classifier:
    return load(None)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with serve_emulator("cpu-tiny", tpot_ms=2.0, ttft_ms=5.0) as server:
        g = TritonGrpcServer(server)
        await g.start()
        try:
            yield Emulator(server, g)
        finally:
            await g.stop()


@pytest.fixture
def gateway(clf: Classifier) -> Callable[..., Any]:
    """``async with gateway(url, ...) as (gw, ingress)``: HTTP gateway plus its gRPC ingress."""

    @asynccontextmanager
    async def start(
        *urls: str, **overrides: Any
    ) -> AsyncIterator[tuple[RunningGateway, GrpcIngress]]:
        config: GatewayConfig = gateway_config_from_experts({"*": list(urls)}, **overrides)
        async with (
            serve_gateway(config, classifier=clf) as gw,
            serve_grpc_ingress(gw.gateway) as ingress,
        ):
            yield gw, ingress

    return start
