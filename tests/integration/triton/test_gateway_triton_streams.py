"""ModelStreamInfer through the gateway, on callbacks: requests of one stream end on their own,
a replica's first message is checked and must come in time, a cancelled call frees them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from polling import eventually
from triton_helpers import Emulator, infer_request
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.grpc_host import GrpcServiceHost
from expert_router.wire import kserve
from expert_router.wire import triton as tw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
NAMES = tw.TritonNames()


async def _stream(target: str, requests: list[Any]) -> dict[str, list[Any]]:
    """Send ``requests`` on one call, half-close, read it to its end; messages by request id."""
    out: dict[str, list[Any]] = {r.id: [] for r in requests}
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        for r in requests:
            await call.write(r)
        await call.done_writing()
        async for msg in call:
            out[msg.infer_response.id].append(msg)
    return out


async def test_requests_of_one_stream_end_on_their_own(
    emu: Emulator, gateway: Callable[..., Any]
) -> None:
    """One request is refused by the gateway, one by the replica's first message, one served:
    each gets its own ending, in the one call."""
    requests = [
        infer_request("ok", "How do I bake bread at home?", 3),
        infer_request("unknown", "hello", 3, model="llama"),
        infer_request("too-long", "hello", 10_000_000),
    ]
    async with gateway(f"grpc://{emu.target}", limits={"retries": 0}) as (gw, ingress):
        got = await _stream(ingress.target, requests)
        fleet = gw.gateway.fleet
        assert sum(r.outstanding for r in fleet.replicas.values()) == 0
    served = got["ok"]
    assert not any(m.error_message for m in served)
    assert kserve.is_final(served[-1].infer_response)
    assert len(served) == 3
    (unknown,) = got["unknown"]
    assert "unknown model: 'llama'" in unknown.error_message
    (too_long,) = got["too-long"]
    assert "expert answered 400" in too_long.error_message


class _Silent(pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """A Triton replica that is live and ready but never answers a stream."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = asyncio.Event()

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerLiveResponse(live=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ModelReadyResponse(ready=True)

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        self.calls += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()


async def test_a_silent_replica_times_out_before_its_first_message(
    gateway: Callable[..., Any],
) -> None:
    silent = _Silent()
    host = GrpcServiceHost(silent)
    await host.start()
    try:
        overrides = {"timeouts": {"first_byte": 0.3}, "limits": {"retries": 0}}
        async with gateway(f"grpc://{host.target}", **overrides) as (gw, ingress):
            # twice: a timeout is the request's failure, not the ingress's
            for rid in ("first", "second"):
                got = await _stream(ingress.target, [infer_request(rid, "hello there", 2)])
                (msg,) = got[rid]
                assert "expert timed out" in msg.error_message
            fleet = gw.gateway.fleet
            assert sum(r.outstanding for r in fleet.replicas.values()) == 0
        await asyncio.wait_for(silent.cancelled.wait(), 5)  # the replica saw the cancel
        assert silent.calls == 2
    finally:
        await host.stop()


class _Stalling(_Silent):
    """A Triton replica that sends each request's first message, then nothing."""

    # grpc takes a stream method as a coroutine (``_Silent``'s) or as an async generator
    async def ModelStreamInfer(  # type: ignore[override]  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        self.calls += 1
        try:
            async for req in request_iterator:
                resp = kserve.text_response(pb2, req.model_name, req.id, "hi", NAMES, final=None)
                yield pb2.ModelStreamInferResponse(infer_response=resp)
                await asyncio.Event().wait()
        finally:
            self.cancelled.set()


@pytest.mark.parametrize("unary", [False, True])
async def test_a_replica_silent_after_its_first_message_times_out(
    gateway: Callable[..., Any], unary: bool
) -> None:
    """``timeouts.read`` holds past the first message too: on the relayed stream (one timer
    for all calls) and on the unary call's text path; the replica is freed and told."""
    stalling = _Stalling()
    host = GrpcServiceHost(stalling)
    await host.start()
    try:
        overrides = {"timeouts": {"first_byte": 5, "read": 0.3}, "limits": {"retries": 0}}
        async with gateway(f"grpc://{host.target}", **overrides) as (gw, ingress):
            request = infer_request("r", "hello there", 4)
            async with asyncio.timeout(5):
                if unary:
                    async with grpc.aio.insecure_channel(ingress.target) as channel:
                        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
                        with pytest.raises(grpc.aio.AioRpcError) as info:
                            await stub.ModelInfer(request)
                    assert "no response for 0.3 s" in (info.value.details() or "")
                else:
                    got = await _stream(ingress.target, [request])
                    assert "no response for 0.3 s" in got["r"][-1].error_message
            fleet = gw.gateway.fleet
            assert sum(r.outstanding for r in fleet.replicas.values()) == 0
        await asyncio.wait_for(stalling.cancelled.wait(), 5)
    finally:
        await host.stop()


async def test_cancelling_a_stream_ends_every_request_in_it(
    emu: Emulator, gateway: Callable[..., Any]
) -> None:
    async with gateway(f"grpc://{emu.target}") as (gw, ingress):
        fleet = gw.gateway.fleet
        async with grpc.aio.insecure_channel(ingress.target) as channel:
            call = pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
            await call.write(infer_request("a", "a long answer please", 3000))
            await call.write(infer_request("b", "another long answer", 3000))
            seen: set[str] = set()
            while seen != {"a", "b"}:
                seen.add((await call.read()).infer_response.id)
            assert sum(r.outstanding for r in fleet.replicas.values()) == 2
            call.cancel()
        await eventually(lambda: emu.server.engine.num_running == 0, within=2.0)
        assert sum(r.outstanding for r in fleet.replicas.values()) == 0


class _Recorder:
    """A backend listener that keeps what it is told; ``over`` is set at the end."""

    def __init__(self) -> None:
        self.head: tuple[int, str] | None = None
        self.data: list[bytes] = []
        self.error: Exception | None = None
        self.over = asyncio.Event()

    def on_head(self, status: int, content_type: str) -> None:
        self.head = (status, content_type)

    def on_data(self, data: bytes) -> bool:
        self.data.append(data)
        return True

    def on_end(self, last: bytes = b"") -> None:
        self.over.set()

    def on_error(self, exc: Exception) -> None:
        self.error = exc
        self.over.set()


def _backend(target: str, first_byte: float = 5.0) -> Any:
    from expert_router.backends import BackendSettings
    from expert_router.backends.triton_grpc import TritonGrpcBackend

    session: Any = None  # the gRPC backend has its own channel
    settings = BackendSettings(f"grpc://{target}", session, 5.0, first_byte, 5.0)
    return TritonGrpcBackend(settings)


async def _relay(backend: Any, rid: str, tokens: int) -> _Recorder:
    from expert_router.backends import BackendRequest

    listener = _Recorder()
    native = infer_request(rid, "hello there", tokens)
    backend.open(BackendRequest("/v1/completions", b"{}", True, native=native), listener)
    await asyncio.wait_for(listener.over.wait(), 10)
    return listener


async def test_native_relay_connects_then_starts_on_the_open_connection(emu: Emulator) -> None:
    """The first call waits for a connection (a task); the next starts at once on it. Both
    relay the replica's framed messages, the first one checked, then the end."""
    backend = _backend(emu.target)
    try:
        for rid in ("connects", "at-once"):
            got = await _relay(backend, rid, 3)
            assert got.error is None and got.head == (200, "application/grpc")
            msgs = [pb2.ModelStreamInferResponse.FromString(m[5:]) for m in got.data]
            assert [m.infer_response.id for m in msgs] == [rid] * 3
            assert kserve.is_final(msgs[-1].infer_response)
        assert len(backend.channel()._conns) == 1
    finally:
        await backend.aclose()


async def test_native_relay_first_byte_timeout_on_both_paths() -> None:
    from expert_router.errors import BackendTimeout

    silent = _Silent()
    host = GrpcServiceHost(silent)
    await host.start()
    backend = _backend(host.target, first_byte=0.2)
    try:
        for rid in ("connects", "at-once"):
            got = await _relay(backend, rid, 2)
            assert isinstance(got.error, BackendTimeout) and got.head is None
        assert silent.calls == 2
    finally:
        await backend.aclose()
        await host.stop()


class _Garbled(_Silent):
    """A replica whose first message is not a ModelStreamInferResponse."""

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        from expert_router.h2.grpc import message

        context.send_framed(message(b"\x0a\xff"))  # field 1, its length cut short
        await super().ModelStreamInfer(request_iterator, context)


async def test_native_relay_refuses_an_unreadable_first_message() -> None:
    from expert_router.errors import BackendProtocolError

    garbled = _Garbled()
    host = GrpcServiceHost(garbled)
    await host.start()
    backend = _backend(host.target)
    try:
        for rid in ("connects", "at-once"):  # the connection outlives a broken call
            got = await _relay(backend, rid, 2)
            assert isinstance(got.error, BackendProtocolError) and got.head is None
        assert garbled.calls == 2 and len(backend.channel()._conns) == 1
    finally:
        await backend.aclose()
        await host.stop()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
async def test_an_unstreamed_request_on_a_stream_gets_its_whole_answer(
    emu: Emulator, gateway: Callable[..., Any], scheme: str
) -> None:
    """``stream`` false on a ModelStreamInfer call: one final message with the whole text,
    whether the replica takes the client's own message (relayed as it answers) or is an
    OpenAI server (its JSON answer turned into the message)."""
    ask = tw.TritonRequest("How do I bake bread at home?", 4, stream=False, min_length=4)
    req = kserve.infer_request(pb2, ask, NAMES, "whole")
    url = f"grpc://{emu.target}" if scheme == "grpc" else emu.url
    async with gateway(url, limits={"retries": 0}) as (_, ingress):
        got = (await _stream(ingress.target, [req]))["whole"]
    assert not any(m.error_message for m in got), got[0].error_message
    assert len(got) == 1 and kserve.is_final(got[0].infer_response)
    text = kserve.response_text(got[0].infer_response, NAMES)
    assert len(text) > 0
