"""The lean ``GrpcChannel`` calling grpc.aio's own server over real sockets: unary and streamed
answers (read, read_raw, listen), statuses, large answers, cancel, deadlines, unreachable and
vanishing servers, multiplexing and reconnecting."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest
from h2_servers import Aio, start_aio
from h2_service import PATH, Echo, Msg, aio_handler
from polling import eventually

from expert_router.h2.client import EOF, ClientCall, GrpcChannel
from expert_router.h2.grpc import GrpcError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

STREAM, BIDI = (PATH + "ServerStream").encode(), (PATH + "Bidi").encode()
UNARY = (PATH + "Unary").encode()
NON_ASCII = "naïve ✓ 100% done: «ünïcödé»"


async def read_all(call: ClientCall) -> list[Msg]:
    out = []
    while (m := await call.read()) is not EOF:
        out.append(m)
    return out


class Collect:
    """A ``Listener`` that keeps what it is given."""

    def __init__(self) -> None:
        self.framed: list[bytes] = []
        self.ended = asyncio.Event()
        self.error: GrpcError | None = None
        self.ends = 0

    def message(self, framed: bytes, /) -> object:
        self.framed.append(framed)
        return None

    def end(self, error: GrpcError | None) -> None:
        self.error, self.ends = error, self.ends + 1
        self.ended.set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_unary(channel_to_aio: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        got = await channel_to_aio.unary(UNARY, Msg(op="echo", n=3, text=NON_ASCII), Msg)
    assert (got.op, got.n, got.text) == ("echo", 3, NON_ASCII)


async def test_server_streaming_read(channel_to_aio: GrpcChannel) -> None:
    req = Msg(n=2000, data=b"abc").SerializeToString()
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(STREAM, [req], Msg)
        got = await read_all(call)
        assert await call.read() is EOF  # and stays at the end
    assert [m.n for m in got] == list(range(2000)) and {m.data for m in got} == {b"abc"}
    assert call.error is None


async def test_read_raw_and_initial_metadata(channel_to_aio: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(STREAM, [Msg(n=5).SerializeToString()], Msg)
        meta = await call.initial_metadata()
        raw = []
        while (m := await call.read_raw()) is not None:
            raw.append(m)
    assert isinstance(meta, list)
    assert [Msg.FromString(r).n for r in raw] == list(range(5))
    assert raw[0] == Msg(n=0, data=b"").SerializeToString()


async def test_listen_gets_framed_messages_in_order_then_end(channel_to_aio: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(
            STREAM, [Msg(n=300, data=b"q" * 40).SerializeToString()], Msg
        )
        first = await call.read_raw()  # as the gateway does: the first answer, then listen
        listener = Collect()
        call.listen(listener)
        await listener.ended.wait()
    assert first is not None and Msg.FromString(first).n == 0
    assert listener.error is None and listener.ends == 1
    assert all(
        fr[0] == 0 and int.from_bytes(fr[1:5], "big") == len(fr) - 5 for fr in listener.framed
    )
    assert [Msg.FromString(fr[5:]).n for fr in listener.framed] == list(range(1, 300))


async def test_listen_after_the_end_is_told_at_once(channel_to_aio: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(STREAM, [Msg(n=3).SerializeToString()], Msg)
        await eventually(lambda: call.done)
    listener = Collect()
    call.listen(listener)
    assert listener.ends == 1 and listener.error is None
    assert [Msg.FromString(fr[5:]).n for fr in listener.framed] == [0, 1, 2]


async def test_listen_is_told_of_an_error(channel_to_aio: GrpcChannel) -> None:
    op = f"abort:NOT_FOUND:{NON_ASCII}"
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(STREAM, [Msg(op=op, n=2).SerializeToString()], Msg)
        listener = Collect()
        call.listen(listener)
        await listener.ended.wait()
    assert len(listener.framed) == 2
    assert listener.error is not None
    assert (listener.error.status, listener.error.details) == (grpc.StatusCode.NOT_FOUND, NON_ASCII)


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
     grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL],
)  # fmt: skip
async def test_status_and_details_exactly(
    channel_to_aio: GrpcChannel, code: grpc.StatusCode
) -> None:
    op = f"abort:{code.name}:{NON_ASCII}"
    async with asyncio.timeout(10):
        # trailers-only: no message before the status
        with pytest.raises(GrpcError) as err:
            await channel_to_aio.unary(UNARY, Msg(op=op), Msg)
        assert (err.value.status, err.value.details) == (code, NON_ASCII)
        call = await channel_to_aio.start(UNARY, [Msg(op=op).SerializeToString()], Msg)
        assert await call.initial_metadata() is not None  # trailers-only carries the head too
        with pytest.raises(GrpcError):
            await call.read()
        # after messages: the status in trailers
        call = await channel_to_aio.start(STREAM, [Msg(op=op, n=2).SerializeToString()], Msg)
        assert [(await call.read()).n, (await call.read()).n] == [0, 1]
        with pytest.raises(GrpcError) as err:
            await call.read()
        assert (err.value.status, err.value.details) == (code, NON_ASCII)


async def test_unknown_method(channel_to_aio: GrpcChannel) -> None:
    with pytest.raises(GrpcError) as err:
        async with asyncio.timeout(10):
            await channel_to_aio.unary(b"/h2test.Echo/Nope", Msg(), Msg)
    assert err.value.status == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("size", [1 << 20, 5 << 20])
async def test_large_answers_and_requests(channel_to_aio: GrpcChannel, size: int) -> None:
    body = bytes(i % 239 for i in range(size))
    async with asyncio.timeout(20):
        got = await channel_to_aio.unary(UNARY, Msg(op="size", n=size), Msg)
        assert got.data == b"s" * size
        echoed = await channel_to_aio.unary(UNARY, Msg(op="echo", data=body), Msg)
        assert echoed.data == body
        call = await channel_to_aio.start(STREAM, [Msg(n=4, data=body).SerializeToString()], Msg)
        assert [m.data == body for m in await read_all(call)] == [True] * 4


async def test_cancel_reaches_the_servicer(aio_server: Aio, channel_to_aio: GrpcChannel) -> None:
    servicer = aio_server.servicer
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(STREAM, [Msg(op="sleep", n=1).SerializeToString()], Msg)
        assert (await call.read()).n == 0
        await servicer.started.wait()
        t0 = time.monotonic()
        call.cancel()
        with pytest.raises(GrpcError) as err:
            await call.read()
        assert err.value.status == grpc.StatusCode.CANCELLED
        await servicer.cancelled.wait()
    assert time.monotonic() - t0 < 1.0
    async with asyncio.timeout(5):  # the connection serves the next call
        assert (await channel_to_aio.unary(UNARY, Msg(n=4), Msg)).n == 4


async def test_deadline(aio_server: Aio, channel_to_aio: GrpcChannel) -> None:
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        with pytest.raises(GrpcError) as err:
            await channel_to_aio.unary(UNARY, Msg(op="sleep"), Msg, deadline=0.3)
        assert err.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.25 < time.monotonic() - t0 < 3
        req = Msg(op="sleep", n=1).SerializeToString()
        call = await channel_to_aio.start(STREAM, [req], Msg, deadline=0.3)
        assert (await call.read()).n == 0
        with pytest.raises(GrpcError) as err:
            await call.read()
        assert err.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
        await aio_server.servicer.cancelled.wait()


async def test_connection_refused_is_unavailable_fast() -> None:
    channel = GrpcChannel(f"127.0.0.1:{_free_port()}", connect_timeout=5)
    t0 = time.monotonic()
    try:
        with pytest.raises(GrpcError) as err:
            await channel.unary(UNARY, Msg(), Msg)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(GrpcError) as err:
            await channel.start(STREAM, [b""], Msg)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
    assert time.monotonic() - t0 < 2


async def test_server_stopped_mid_stream_is_unavailable(aio_server: Aio) -> None:
    channel = GrpcChannel(aio_server.target)
    try:
        async with asyncio.timeout(10):
            req = Msg(op="sleep", n=1).SerializeToString()
            calls = [await channel.start(STREAM, [req], Msg) for _ in range(5)]
            bidi = await channel.start(BIDI, [Msg(n=9).SerializeToString()], Msg, half_close=False)
            for call in calls:
                assert (await call.read()).n == 0
            assert (await bidi.read()).n == 9
            await aio_server.server.stop(None)
            for call in [*calls, bidi]:
                with pytest.raises(GrpcError) as err:
                    await call.read()
                assert err.value.status == grpc.StatusCode.UNAVAILABLE, err.value
    finally:
        await channel.close()


async def test_many_concurrent_calls_share_one_connection(channel_to_aio: GrpcChannel) -> None:
    async def one(i: int) -> list[int]:
        call = await channel_to_aio.start(STREAM, [Msg(n=i % 7).SerializeToString()], Msg)
        return [m.n for m in await read_all(call)]

    async with asyncio.timeout(20):
        got = await asyncio.gather(*(one(i) for i in range(300)))
        unary = await asyncio.gather(
            *(channel_to_aio.unary(UNARY, Msg(n=i), Msg) for i in range(300))
        )
    assert got == [list(range(i % 7)) for i in range(300)]
    assert [m.n for m in unary] == list(range(300))
    assert len([c for c in channel_to_aio._conns if not c.closed]) == 1


async def test_reconnect_after_the_server_restarts_on_the_same_port() -> None:
    first = await start_aio(Echo())
    channel = GrpcChannel(first.target)
    try:
        async with asyncio.timeout(15):
            assert (await channel.unary(UNARY, Msg(n=1), Msg)).n == 1
            await first.server.stop(None)
            with pytest.raises(GrpcError) as err:
                await channel.unary(UNARY, Msg(n=2), Msg)
            assert err.value.status == grpc.StatusCode.UNAVAILABLE
            second = await start_aio(Echo(), first.port)
            try:
                assert (await channel.unary(UNARY, Msg(n=3), Msg)).n == 3
            finally:
                await second.server.stop(None)
    finally:
        await channel.close()


async def test_compressed_answers_are_read() -> None:
    servicer = Echo()
    server = grpc.aio.server(compression=grpc.Compression.Gzip)
    server.add_generic_rpc_handlers((aio_handler(servicer),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = GrpcChannel(f"127.0.0.1:{port}")
    try:
        async with asyncio.timeout(10):
            text = "zip " * 10_000
            assert (await channel.unary(UNARY, Msg(text=text), Msg)).text == text
    finally:
        await channel.close()
        await server.stop(None)


async def test_metadata_both_ways(channel_to_aio: GrpcChannel) -> None:
    meta = [("x-one", "1"), ("x-two", "zwei"), ("x-one", "again")]
    async with asyncio.timeout(10):
        call = await channel_to_aio.start(
            UNARY, [Msg(op="meta").SerializeToString()], Msg, metadata=meta
        )
        initial = await call.initial_metadata()
        answer = await call.read()
        assert await call.read() is EOF
    assert ("x-initial", "hello") in initial
    assert answer.text == repr(sorted(meta))


async def test_server_stream_limit_is_respected() -> None:
    """A server that takes 10 streams per connection: 50 calls at once all succeed (more
    connections, none over the limit, none refused), and again on the warm channel."""
    server = await start_aio(Echo(), options=[("grpc.max_concurrent_streams", 10)])
    channel = GrpcChannel(server.target)

    async def one(i: int) -> list[int]:
        call = await channel.start(STREAM, [Msg(n=2).SerializeToString()], Msg)
        return [m.n for m in await read_all(call)]

    try:
        for _ in range(2):
            async with asyncio.timeout(10):
                got = await asyncio.gather(*(one(i) for i in range(50)))
            assert got == [[0, 1]] * 50
        assert len(channel._conns) >= 5
        assert {c.peer_max_streams for c in channel._conns} == {10}
    finally:
        await channel.close()
        await server.server.stop(None)


async def test_graceful_server_stop_lets_calls_in_flight_finish() -> None:
    servicer = Echo()
    server = await start_aio(servicer)
    channel = GrpcChannel(server.target)
    try:
        async with asyncio.timeout(10):
            calls = [
                await channel.start(STREAM, [Msg(op="nap", n=3).SerializeToString()], Msg)
                for _ in range(5)
            ]
            await eventually(lambda: servicer.napping == 5)  # (calls not begun are CANCELLED)
            stopping = asyncio.ensure_future(server.server.stop(grace=5))
            for call in calls:  # GOAWAY names them as taken: they end normally
                assert [m.n for m in await read_all(call)] == [0, 1, 2]
            await stopping
            with pytest.raises(GrpcError) as err:
                await channel.unary(UNARY, Msg(), Msg)
            assert err.value.status == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        await server.server.stop(None)
