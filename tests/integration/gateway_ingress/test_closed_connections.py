"""A closed connection leaves nothing to the cyclic collector, on either side of the gateway.

Under load the collector's passes walk every request in flight (milliseconds with 1000
streams, the loop stalled); the gateway triggers none while its connections are freed by
their reference counts. Each case closes connections one way (the client hangs up, the
upstream closes an idle keep-alive connection) and counts what the collector then finds among
the objects of the gateway's code and its parsers (a library's own cycles, asyncio's
transports among them, are not the gateway's to break).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import pytest
from aiohttp import web
from polling import eventually
from test_fast_ingress import post
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.backends.http1_conn import Http1Connection
from expert_router.bench.calibrate import paced_app
from expert_router.classify import load
from expert_router.config import gateway_config_from_experts, validate_gateway_config
from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.server import serve_emulator
from expert_router.gateway import serve_gateway
from expert_router.gateway.grpc_ingress import serve_grpc_ingress
from expert_router.wire import kserve
from expert_router.wire import triton as tw

pytestmark = pytest.mark.integration

OURS = ("expert_router.", "httptools.", "hpack.")
"""Modules whose objects the count covers: the gateway's and the parsers it drives."""
ROUNDS = 12
REQUEST = post()  # a streamed chat completion, as the ingress tests send it


class Left:
    objects: dict[str, int]


@contextmanager
def left_in_cycles() -> Iterator[Left]:
    """``with left_in_cycles() as left:``: ``left.objects`` counts, by type, the objects of
    ``OURS`` that the block left for the cyclic collector."""
    left = Left()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage
    try:
        yield left
        gc.collect()
        counts: dict[str, int] = {}
        for obj in gc.garbage:
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            if name.startswith(OURS):
                counts[name] = counts.get(name, 0) + 1
        left.objects = counts
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _http_request(port: int) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(REQUEST)
    await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)  # the whole streamed answer
    writer.close()
    await writer.wait_closed()


async def test_http_connections_closed_by_clients_and_upstreams_leave_no_cycles() -> None:
    # The upstream closes a keep-alive connection idle 50 ms: each request waits until its
    # pooled connection is closed, and so finds it closed (the gateway's upstream side); each
    # client hangs up after its answer (the ingress side); each health probe, every 50 ms,
    # closes its own connection.
    async with _idle_closing_upstream() as up:
        experts = {"*": {"replicas": [{"url": up.url}]}}
        config = validate_gateway_config({"experts": experts, "health": {"interval": 0.05}})
        async with serve_gateway(config, port=0) as gw:
            assert gw.gateway.fleet is not None and gw.front is not None
            (replica,) = gw.gateway.fleet.replicas.values()
            pool: deque[Http1Connection] = replica.backend.idle  # type: ignore[attr-defined]
            clients = gw.front.conns

            def settled() -> bool:  # every connection of the last request closed, both sides
                return not clients and bool(pool) and all(c.closed for c in pool)

            await _http_request(gw.port)  # first use: lazy imports and caches
            await eventually(settled)
            with left_in_cycles() as left:
                for _ in range(ROUNDS):
                    assert len(pool) == 1 and pool[0].closed  # what this request finds
                    await _http_request(gw.port)
                    await eventually(settled)
    assert left.objects == {}


async def test_the_aiohttp_adapter_leaves_no_cycles_either() -> None:
    # The adapter of ``https://`` replicas (here over plain HTTP: ``aiohttp+http://``), a
    # task per request on aiohttp's session: the same closes as above, probes aside.
    async with _idle_closing_upstream() as up:
        experts = {"*": {"replicas": [{"url": "aiohttp+" + up.url}]}}
        config = validate_gateway_config({"experts": experts})
        async with serve_gateway(config, port=0, probes=False) as gw:
            assert gw.front is not None
            clients = gw.front.conns

            def settled() -> bool:  # the client's connection and the upstream's closed
                return not clients and not up.server.connections

            await _http_request(gw.port)
            await eventually(settled)
            with left_in_cycles() as left:
                for _ in range(ROUNDS):
                    await _http_request(gw.port)
                    await eventually(settled)
    assert left.objects == {}


class _Upstream:
    def __init__(self, runner: web.AppRunner) -> None:
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        assert runner.server is not None
        self.server = runner.server


@asynccontextmanager
async def _idle_closing_upstream() -> AsyncIterator[_Upstream]:
    """A paced upstream that closes a keep-alive connection idle for 50 ms."""
    runner = web.AppRunner(paced_app(1.0, 1.0), access_log=None, keepalive_timeout=0.05)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield _Upstream(runner)
    finally:
        await runner.cleanup()


def _infer_request(rid: str) -> pb2.ModelInferRequest:
    req = tw.TritonRequest("The goalkeeper saved a penalty.", 2, min_length=2)
    msg = kserve.infer_request(pb2, req, tw.TritonNames(), rid)
    msg.model_name = "ensemble"
    return msg


async def _grpc_call(target: str, rid: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:  # one connection, closed after
        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
        await asyncio.wait_for(stub.ModelInfer(_infer_request(rid)), 10)


async def test_grpc_connections_closed_by_clients_and_upstreams_leave_no_cycles() -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1.0, ttft_ms=1.0) as emulator:
        expert = TritonGrpcServer(emulator)
        # Closes a connection idle 50 ms: each call waits until the gateway's upstream
        # connection is closed, as the client's own is after each call.
        expert.limits = dataclasses.replace(expert.limits, idle_timeout=0.05)
        await expert.start()
        try:
            config = gateway_config_from_experts({"*": [f"grpc://{expert.target}"]})
            async with (
                serve_gateway(config, classifier=load(None), probes=False) as gw,
                serve_grpc_ingress(gw.gateway) as ingress,
            ):
                assert gw.gateway.fleet is not None and ingress._server is not None
                (replica,) = gw.gateway.fleet.replicas.values()
                clients = ingress._server.connections

                def settled() -> bool:  # every connection of the last call closed, both sides
                    upstream = replica.backend._channel._conns  # type: ignore[attr-defined]
                    return not clients and bool(upstream) and all(c.closed for c in upstream)

                await _grpc_call(ingress.target, "warm-up")
                await eventually(settled)
                with left_in_cycles() as left:
                    for i in range(ROUNDS):
                        await _grpc_call(ingress.target, f"r{i}")
                        await eventually(settled)
        finally:
            await expert.stop()
    assert left.objects == {}
