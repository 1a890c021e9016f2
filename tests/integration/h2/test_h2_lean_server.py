"""The lean ``GrpcServer`` answering grpc.aio's own client over real sockets: every method kind,
many streams, large messages (flow control both ways), metadata, statuses, cancellation,
deadlines, compression and stopping with calls open."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from h2_servers import Aio, Lean
from h2_service import AIO_OPTIONS, PATH, SERVICE, AioStub, Echo, Msg, pb2
from polling import eventually

from expert_router.h2.server import GrpcServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NON_ASCII = "naïve ✓ 100% done: «ünïcödé» \t tab"


async def read_all(call: grpc.aio.StreamStreamCall) -> list[Msg]:
    """The rest of a call's answers (grpc.aio allows no iterator after ``write``)."""
    out = []
    while (m := await call.read()) is not grpc.aio.EOF:
        out.append(m)
    return out


async def test_unary_and_every_streaming_kind(aio_channel: grpc.aio.Channel) -> None:
    stub = AioStub(aio_channel)
    async with asyncio.timeout(10):
        got = await stub.Unary(Msg(op="echo", n=7, data=b"\x00\xff", text=NON_ASCII))
        assert (got.n, got.data, got.text) == (7, b"\x00\xff", NON_ASCII)
        answers = [m.n async for m in stub.ServerStream(Msg(n=500, data=b"d" * 100))]
        assert answers == list(range(500))
        summed = await stub.ClientStream(Msg(data=b"x" * i) for i in range(300))
        assert (summed.n, summed.text) == (300, str(sum(range(300))))


async def test_bidi_many_messages_both_ways_interleaved(aio_channel: grpc.aio.Channel) -> None:
    call = AioStub(aio_channel).Bidi()
    async with asyncio.timeout(10):
        for i in range(300):  # ping-pong: each answer comes before the next request is sent
            await call.write(Msg(n=i, data=bytes([i % 256]) * (i % 50)))
            got = await call.read()
            assert (got.n, got.data) == (i, bytes([i % 256]) * (i % 50))
        for i in range(1000):  # then a burst
            await call.write(Msg(n=i))
        await call.done_writing()
        rest = [m.n for m in await read_all(call)]
        assert rest == list(range(1000))
        assert await call.code() == grpc.StatusCode.OK


async def test_200_concurrent_streams_on_one_channel(aio_channel: grpc.aio.Channel) -> None:
    stub = AioStub(aio_channel)

    async def one(i: int) -> list[int]:
        call = stub.Bidi()
        for j in range(5):
            await call.write(Msg(n=i * 10 + j))
            await asyncio.sleep(0)
        await call.done_writing()
        return [m.n for m in await read_all(call)]

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(one(i) for i in range(200)))
        unary = await asyncio.gather(*(stub.Unary(Msg(n=i)) for i in range(200)))
    assert results == [[i * 10 + j for j in range(5)] for i in range(200)]
    assert [m.n for m in unary] == list(range(200))


@pytest.mark.parametrize("size", [1 << 20, 5 << 20])
async def test_large_messages_both_directions(aio_channel: grpc.aio.Channel, size: int) -> None:
    stub = AioStub(aio_channel)
    body = bytes(i % 241 for i in range(size))
    async with asyncio.timeout(20):
        got = await stub.Unary(Msg(op="echo", data=body))
        assert got.data == body
        many = [m.data async for m in stub.ServerStream(Msg(n=3, data=body))]
        assert many == [body] * 3
        # concurrently on the same connection: the windows are shared
        both = await asyncio.gather(*(stub.Unary(Msg(data=body[: size // 2])) for _ in range(3)))
        assert [m.data for m in both] == [body[: size // 2]] * 3


async def test_metadata_in_and_initial_metadata_out(lean: Lean) -> None:
    async with grpc.aio.insecure_channel(lean.target) as channel:
        call = AioStub(channel).Unary(
            Msg(op="meta"), metadata=(("x-one", "1"), ("x-two", "zwei"), ("x-one", "again"))
        )
        async with asyncio.timeout(10):
            answer = await call
            initial = await call.initial_metadata()
    assert answer.text == repr(sorted([("x-one", "1"), ("x-one", "again"), ("x-two", "zwei")]))
    assert ("x-initial", "hello") in list(initial)


async def test_initial_metadata_leaves_before_the_first_message(
    lean: Lean, aio_channel: grpc.aio.Channel
) -> None:
    # (grpc.aio hands a unary call's initial metadata over only with its answer)
    call = AioStub(aio_channel).ServerStream(Msg(op="meta-sleep"))
    async with asyncio.timeout(5):
        initial = await call.initial_metadata()
    assert ("x-initial", "early") in list(initial)
    call.cancel()
    async with asyncio.timeout(5):
        await lean.servicer.cancelled.wait()


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INTERNAL,
    ],
)
async def test_abort_codes_and_non_ascii_details(
    aio_channel: grpc.aio.Channel, code: grpc.StatusCode
) -> None:
    stub = AioStub(aio_channel)
    async with asyncio.timeout(10):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(Msg(op=f"abort:{code.name}:{NON_ASCII}"))
        assert (err.value.code(), err.value.details()) == (code, NON_ASCII)
        # after messages were sent: the status comes in trailers
        call = stub.ServerStream(Msg(op=f"abort:{code.name}:{NON_ASCII}", n=3))
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for m in call:
                got.append(m.n)
        assert got == [0, 1, 2]
        assert (err.value.code(), err.value.details()) == (code, NON_ASCII)


async def test_unknown_method_is_unimplemented(aio_channel: grpc.aio.Channel) -> None:
    nope = aio_channel.unary_unary(
        PATH + "Nope",
        request_serializer=Msg.SerializeToString,
        response_deserializer=Msg.FromString,
    )
    other = aio_channel.unary_unary(
        "/other.Service/Unary",
        request_serializer=Msg.SerializeToString,
        response_deserializer=Msg.FromString,
    )
    async with asyncio.timeout(10):
        for method in (nope, other):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(Msg())
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert (await AioStub(aio_channel).Unary(Msg(n=1))).n == 1  # the connection is fine


async def test_client_cancel_cancels_the_servicer_promptly(
    lean: Lean, aio_channel: grpc.aio.Channel
) -> None:
    stub = AioStub(aio_channel)
    for call in (stub.Unary(Msg(op="sleep")), stub.Bidi()):
        lean.servicer.started.clear()
        lean.servicer.cancelled.clear()
        if isinstance(call, grpc.aio.StreamStreamCall):
            await call.write(Msg(op="sleep"))
        async with asyncio.timeout(10):
            await lean.servicer.started.wait()
        t0 = time.monotonic()
        call.cancel()
        async with asyncio.timeout(5):
            await lean.servicer.cancelled.wait()
        assert time.monotonic() - t0 < 1.0
        assert await call.code() == grpc.StatusCode.CANCELLED
    await eventually(lambda: not lean.server.tasks)


async def test_client_deadline(lean: Lean, aio_channel: grpc.aio.Channel) -> None:
    stub = AioStub(aio_channel)
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(Msg(op="sleep"), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await lean.servicer.cancelled.wait()
    assert 0.25 < time.monotonic() - t0 < 3.0
    async with asyncio.timeout(5):
        call = stub.ServerStream(Msg(op="sleep", n=2), timeout=0.3)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for m in call:
                got.append(m.n)
        assert got == [0, 1] and err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: not lean.server.tasks)  # the servicers are over


async def test_gzip_from_the_client(lean: Lean) -> None:
    text = "compress me, " * 20_000
    async with grpc.aio.insecure_channel(lean.target, options=AIO_OPTIONS) as channel:
        stub = AioStub(channel)
        async with asyncio.timeout(10):
            got = await stub.Unary(Msg(text=text), compression=grpc.Compression.Gzip)
            assert got.text == text
            assert lean.servicer.seen[-1]._deframer.encoding == b"gzip"
            call = stub.Bidi(compression=grpc.Compression.Gzip)
            for i in range(20):
                await call.write(Msg(n=i, data=text.encode()[: i * 1000]))
            await call.done_writing()
            got_all = [(m.n, len(m.data)) for m in await read_all(call)]
            assert got_all == [(i, i * 1000) for i in range(20)]


async def test_server_stop_with_streams_open_fails_them(lean: Lean) -> None:
    async with grpc.aio.insecure_channel(lean.target) as channel:
        stub = AioStub(channel)
        calls = [stub.Bidi() for _ in range(10)]
        for call in calls:
            await call.write(Msg(n=1))
            assert (await call.read()).n == 1
        waiting = stub.Unary(Msg(op="sleep"))
        async with asyncio.timeout(5):
            await lean.servicer.started.wait()
            await lean.server.stop()
        assert not lean.server.tasks and not lean.server.connections
        async with asyncio.timeout(5):
            for call in [*calls, waiting]:
                code = await call.code()
                assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), code
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(Msg(), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "op",
    ["raise:value", "raise:timeout", "raise:todo", "setcode:NOT_FOUND:gone ✓", "none",
     "setcode:OK:fine", "todo-coded", "value-coded"],
)  # fmt: skip
async def test_servicer_outcomes_match_grpc_aio(lean: Lean, aio_server: Aio, op: str) -> None:
    """The same servicer behind both servers: grpc.aio's client sees the same status (and the
    same details where the servicer set them). (grpc.aio's server hangs on ``abort(OK)``.)"""
    seen = []
    for target in (lean.target, aio_server.target):
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                async with asyncio.timeout(10):
                    answer = await AioStub(channel).Unary(Msg(op=op))
                seen.append((grpc.StatusCode.OK, answer and answer.text))
            except grpc.aio.AioRpcError as exc:
                seen.append((exc.code(), exc.details() if "code" in op else ""))
    assert seen[0] == seen[1], seen


async def test_cancel_while_the_server_waits_for_window(lean: Lean) -> None:
    """The client stops reading a large answer and cancels: the servicer blocked on flow
    control ends, and nothing stays queued for the reset stream."""
    async with grpc.aio.insecure_channel(lean.target, options=AIO_OPTIONS) as channel:
        call = AioStub(channel).ServerStream(Msg(n=64, data=b"w" * (1 << 20)))
        async with asyncio.timeout(10):
            assert (await call.read()).n == 0
            (conn,) = lean.server.connections
            await eventually(lambda: conn.info()["blocked"] == 1)  # 64 MB do not fit
            call.cancel()
            await eventually(lambda: not lean.server.tasks)
            await eventually(lambda: conn.info() == {"streams": 0, "blocked": 0})
            assert (await AioStub(channel).Unary(Msg(n=3))).n == 3


class Writer(Echo):
    """Answers with ``await context.write`` from a coroutine, grpc.aio's other style."""

    async def ServerStream(self, request: Any, context: Any) -> None:  # type: ignore[override]  # noqa: N802
        for i in range(request.n):
            await context.write(Msg(n=i, data=request.data))
        if request.op == "setcode":
            context.set_code(grpc.StatusCode.ABORTED)
            context.set_details("after writes")


async def test_servicer_writing_through_the_context() -> None:
    server = GrpcServer(Writer(), pb2, SERVICE)  # type: ignore[arg-type]
    await server.start()
    try:
        target = f"127.0.0.1:{server.port}"
        async with grpc.aio.insecure_channel(target, options=AIO_OPTIONS) as channel:
            stub = AioStub(channel)
            async with asyncio.timeout(15):
                got = [m.n async for m in stub.ServerStream(Msg(n=1000))]
                assert got == list(range(1000))
                big = b"b" * (3 << 20)  # each write waits for window: drain() on flow control
                sizes = [len(m.data) async for m in stub.ServerStream(Msg(n=6, data=big))]
                assert sizes == [len(big)] * 6
                call = stub.ServerStream(Msg(n=2, op="setcode"))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call:
                        pass
                assert (err.value.code(), err.value.details()) == (
                    grpc.StatusCode.ABORTED,
                    "after writes",
                )
    finally:
        await server.stop()
