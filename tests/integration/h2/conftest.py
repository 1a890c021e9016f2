"""Servers for the HTTP/2 transport tests: the lean ``GrpcServer`` and grpc.aio's own server,
both running the ``h2test.Echo`` servicer on 127.0.0.1 (port 0), always stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import uvloop
from h2_servers import Aio, Lean, start_aio
from h2_service import AIO_OPTIONS, LIMITS, SERVICE, Echo, pb2

from expert_router.h2.client import GrpcChannel
from expert_router.h2.server import GrpcServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def lean() -> AsyncIterator[Lean]:
    servicer = Echo()
    server = GrpcServer(servicer, pb2, SERVICE, limits=LIMITS)  # type: ignore[arg-type]
    await server.start()
    try:
        yield Lean(server, servicer)
    finally:
        await server.stop()


@pytest.fixture
async def aio_server() -> AsyncIterator[Aio]:
    s = await start_aio(Echo())
    try:
        yield s
    finally:
        await s.server.stop(None)


@pytest.fixture
async def aio_channel(lean: Lean) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(lean.target, options=AIO_OPTIONS) as channel:
        yield channel


@pytest.fixture
async def channel_to_aio(aio_server: Aio) -> AsyncIterator[GrpcChannel]:
    channel = GrpcChannel(aio_server.target, connect_timeout=2.0, limits=LIMITS)
    try:
        yield channel
    finally:
        await channel.close()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The lean-to-lean tests also run on uvloop, as the gateway and the emulator do."""
    loops: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    name = getattr(item, "originalname", item.name)
    if item.path.name == "test_h2_lean_both.py" and "idle" not in name and "keepalive" not in name:
        loops["uvloop"] = uvloop.new_event_loop
    return loops
