"""Lean client and lean server together (and PING keepalives from grpc.aio peers): streaming
round trips, flow control on both lean ends, deadlines and cancel enforced by the lean
server, broken frames, idle connections, and what is left over once calls are over."""

from __future__ import annotations

import asyncio
import gc
import gzip
import time
from collections.abc import AsyncIterator

import grpc
import hpack
import pytest
from h2_servers import Aio, Lean, start_aio
from h2_service import AIO_OPTIONS, LIMITS, PATH, AioStub, Echo, Msg
from polling import eventually
from test_h2_lean_client import STREAM, UNARY, Collect, read_all

from expert_router.h2 import frames as f
from expert_router.h2.client import ClientCall, GrpcChannel
from expert_router.h2.connection import H2Connection
from expert_router.h2.grpc import GrpcError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

BIDI, CLIENT_STREAM = (PATH + "Bidi").encode(), (PATH + "ClientStream").encode()


@pytest.fixture
async def channel(lean: Lean) -> AsyncIterator[GrpcChannel]:
    ch = GrpcChannel(lean.target, connect_timeout=2, limits=LIMITS)
    yield ch
    await ch.close()


async def _settled(channel: GrpcChannel) -> None:
    """Wait until the channel's connections hold no stream and nothing queued."""
    await eventually(lambda: all(c.info() == {"streams": 0, "blocked": 0} for c in channel._conns))


async def test_streaming_round_trips(lean: Lean, channel: GrpcChannel) -> None:
    reqs = [Msg(n=i, data=bytes([i % 256]) * (i % 300)).SerializeToString() for i in range(2000)]
    async with asyncio.timeout(10):
        call = await channel.start(BIDI, reqs, Msg)
        got = await read_all(call)
        assert [(m.n, m.data) for m in got] == [
            (i, bytes([i % 256]) * (i % 300)) for i in range(2000)
        ]
        call = await channel.start(CLIENT_STREAM, reqs, Msg)
        summed = await read_all(call)
        assert [(m.n, m.text) for m in summed] == [(2000, str(sum(i % 300 for i in range(2000))))]
        call = await channel.start(STREAM, [Msg(n=3000).SerializeToString()], Msg)
        assert [m.n for m in await read_all(call)] == list(range(3000))
        assert (await channel.unary(UNARY, Msg(n=5, text="é"), Msg)).text == "é"
    await _settled(channel)
    assert not lean.server.tasks


@pytest.mark.parametrize("size", [1 << 20, 5 << 20])
async def test_large_messages_lean_to_lean(channel: GrpcChannel, size: int) -> None:
    body = bytes(i % 233 for i in range(size))
    async with asyncio.timeout(20):
        assert (await channel.unary(UNARY, Msg(data=body), Msg)).data == body
        calls = [
            await channel.start(STREAM, [Msg(n=3, data=body).SerializeToString()], Msg)
            for _ in range(3)
        ]
        for call in calls:
            assert [m.data == body for m in await read_all(call)] == [True] * 3
    await _settled(channel)


async def test_deadline_is_enforced_by_the_server(lean: Lean, channel: GrpcChannel) -> None:
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        call = await channel.start(
            STREAM, [Msg(op="sleep", n=1).SerializeToString()], Msg, deadline=0.3
        )
        assert (await call.read()).n == 0
        with pytest.raises(GrpcError) as err:
            await call.read()  # the client does not time out by itself: the trailers say so
        assert err.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
        await lean.servicer.cancelled.wait()
    assert 0.25 < time.monotonic() - t0 < 3
    await _settled(channel)


async def test_cancel_cancels_the_lean_servicer(lean: Lean, channel: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        call = await channel.start(
            BIDI, [Msg(op="sleep").SerializeToString()], Msg, half_close=False
        )
        await lean.servicer.started.wait()
        t0 = time.monotonic()
        call.cancel()
        await lean.servicer.cancelled.wait()
        assert time.monotonic() - t0 < 1.0
        await eventually(lambda: not lean.server.tasks)
    await _settled(channel)


async def test_server_answering_early_drops_the_unsent_request(
    lean: Lean, channel: GrpcChannel
) -> None:
    """The server ends the call while the client still has 10 MB to send: the rest is dropped
    (not sent on a closed stream, not kept queued) and the connection serves the next call."""
    reqs = [Msg(op="abort:INVALID_ARGUMENT:stop").SerializeToString(), b"\x00" * (10 << 20)]
    async with asyncio.timeout(10):
        call = await channel.start(BIDI, reqs, Msg)
        with pytest.raises(GrpcError) as err:
            await call.read()
        assert (err.value.status, err.value.details) == (grpc.StatusCode.INVALID_ARGUMENT, "stop")
        await _settled(channel)
        assert (await channel.unary(UNARY, Msg(n=8), Msg)).n == 8
    assert len(channel._conns) == 1


async def test_bad_message_from_the_server_ends_a_listener(
    lean: Lean, channel: GrpcChannel
) -> None:
    async with asyncio.timeout(10):
        call = await channel.start(STREAM, [Msg(op="badframe", n=1).SerializeToString()], Msg)
        assert (await call.read()).n == 0
        listener = Collect()
        call.listen(listener)
        await listener.ended.wait()
        assert listener.error is not None
        assert listener.error.status == grpc.StatusCode.UNIMPLEMENTED
        await lean.servicer.cancelled.wait()  # the call was reset
        call = await channel.start(STREAM, [Msg(op="badframe", n=0).SerializeToString()], Msg)
        with pytest.raises(GrpcError) as err:
            await call.read()
        assert err.value.status == grpc.StatusCode.UNIMPLEMENTED
    await _settled(channel)


async def test_corrupt_compressed_request_fails_only_its_call(
    lean: Lean, channel: GrpcChannel
) -> None:
    conn = await channel._connection()

    async def compressed(body: bytes) -> ClientCall:
        sid = conn.next_sid
        conn.next_sid += 2
        call = ClientCall(conn, sid, Msg)
        conn.streams[sid] = call
        head = [*channel._pseudo, (b":path", UNARY), *channel._fields, (b"grpc-encoding", b"gzip")]
        framed = b"\x01" + len(body).to_bytes(4, "big") + body
        conn.send(call, framed, True, conn.headers_frame(sid, head, False))
        return call

    async with asyncio.timeout(10):
        ok = await compressed(gzip.compress(Msg(n=6).SerializeToString()))
        assert [m.n for m in await read_all(ok)] == [6]
        bad = await compressed(b"this is not gzip")
        with pytest.raises(GrpcError) as err:
            await bad.read()
        assert err.value.status == grpc.StatusCode.INTERNAL
        assert (await channel.unary(UNARY, Msg(n=7), Msg)).n == 7
    assert not conn.closed and len(channel._conns) == 1


async def test_lean_server_stop_mid_stream(lean: Lean, channel: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        calls = [
            await channel.start(STREAM, [Msg(op="sleep", n=1).SerializeToString()], Msg)
            for _ in range(3)
        ]
        for call in calls:
            assert (await call.read()).n == 0
        await lean.server.stop()
        for call in calls:
            with pytest.raises(GrpcError) as err:
                await call.read()
            assert err.value.status == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(GrpcError) as err:
            await channel.unary(UNARY, Msg(), Msg)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE


async def test_idle_connection_still_works(lean: Lean, channel: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        assert (await channel.unary(UNARY, Msg(n=1), Msg)).n == 1
        conn = channel._conns[0]
        await asyncio.sleep(2.0)
        assert (await channel.unary(UNARY, Msg(n=2), Msg)).n == 2
    assert channel._conns == [conn] and not conn.closed


KEEPALIVE = [
    ("grpc.keepalive_time_ms", 200),
    ("grpc.keepalive_timeout_ms", 300),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the PING frames (not acknowledgements) that lean connections receive."""
    seen: list[int] = []
    frame = H2Connection._frame

    def counting(self: H2Connection, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == f.PING and not flags & f.ACK:
            seen.append(sid)
        frame(self, kind, flags, sid, payload)

    monkeypatch.setattr(H2Connection, "_frame", counting)
    return seen


async def test_keepalive_pings_from_a_grpc_aio_client_are_answered(
    lean: Lean, pings: list[int]
) -> None:
    async with grpc.aio.insecure_channel(lean.target, options=[*AIO_OPTIONS, *KEEPALIVE]) as ch:
        stub = AioStub(ch)
        async with asyncio.timeout(10):
            assert (await stub.Unary(Msg(n=1))).n == 1
            (conn,) = lean.server.connections
            await asyncio.sleep(2.0)  # unanswered pings would close the connection in 0.3 s
            assert (await stub.Unary(Msg(n=2))).n == 2
        assert list(lean.server.connections) == [conn]
    assert len(pings) >= 3


async def test_keepalive_pings_from_a_grpc_aio_server_are_answered(pings: list[int]) -> None:
    server = await start_aio(Echo(), options=KEEPALIVE)
    channel = GrpcChannel(server.target)
    try:
        async with asyncio.timeout(10):
            assert (await channel.unary(UNARY, Msg(n=1), Msg)).n == 1
            conn = channel._conns[0]
            await asyncio.sleep(2.0)
            assert (await channel.unary(UNARY, Msg(n=2), Msg)).n == 2
        assert channel._conns == [conn] and not conn.closed
    finally:
        await channel.close()
        await server.server.stop(None)
    assert len(pings) >= 3


async def _first_answer(port: int, head: list[tuple[bytes, bytes]]) -> dict[bytes, bytes] | int:
    """Send one request head on a new connection: the fields of the first HEADERS back, or
    the code of an RST_STREAM that came first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f.PREFACE + f.settings([]) + f.frame(f.HEADERS, 5, 1, f.header_block(head)))
        dec, buf = hpack.Decoder(), b""
        async with asyncio.timeout(5):
            while True:
                buf += await reader.read(65536)
                pos = 0
                while len(buf) - pos >= 9:
                    hi, lo, kind, flags, sid = f.HEAD.unpack_from(buf, pos)
                    end = pos + 9 + (hi << 16 | lo)
                    if end > len(buf):
                        break
                    if kind == f.HEADERS:
                        return dict(dec.decode(buf[pos + 9 : end], raw=True))
                    if kind == f.RST_STREAM:
                        return f.u32(buf[pos + 9 : end])
                    pos = end
    finally:
        writer.close()
        await writer.wait_closed()


def _head(method: bytes, content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":path", UNARY),
            (b":authority", b"x"), (b"content-type", content_type)]  # fmt: skip


async def test_non_grpc_request_gets_415(lean: Lean) -> None:
    found = await _first_answer(lean.server.port, _head(b"POST", b"text/plain"))
    assert isinstance(found, dict) and found[b":status"] == b"415"


async def test_a_method_other_than_post_is_refused(lean: Lean, aio_server: Aio) -> None:
    """grpc (1.85) resets such a stream (INTERNAL_ERROR); we answer 405, which tells an HTTP
    client why. Neither runs the method."""
    for method in (b"GET", b"PUT"):
        head = _head(method, b"application/grpc")
        ours = await _first_answer(lean.server.port, head)
        assert isinstance(ours, dict) and ours[b":status"] == b"405", (method, ours)
        assert await _first_answer(aio_server.port, head) == f.INTERNAL_ERROR
    assert not lean.servicer.seen and not aio_server.servicer.seen


async def test_cancel_while_listening_ends_the_listener(lean: Lean, channel: GrpcChannel) -> None:
    async with asyncio.timeout(10):
        call = await channel.start(STREAM, [Msg(op="sleep", n=2).SerializeToString()], Msg)
        listener = Collect()
        call.listen(listener)
        await lean.servicer.started.wait()
        await eventually(lambda: len(listener.framed) >= 2)
        call.cancel()
        call.cancel()  # twice is harmless
        await listener.ended.wait()
        assert listener.ends == 1 and listener.error is not None
        assert listener.error.status == grpc.StatusCode.CANCELLED
        assert [Msg.FromString(fr[5:]).n for fr in listener.framed] == [0, 1]
        await lean.servicer.cancelled.wait()
    await _settled(channel)


async def test_close_while_connecting_keeps_no_connection(lean: Lean) -> None:
    channel = GrpcChannel(lean.target)
    call = asyncio.ensure_future(channel.unary(UNARY, Msg(n=5), Msg))
    await asyncio.sleep(0)  # the connect has begun
    await channel.close()
    with pytest.raises(GrpcError) as err:
        async with asyncio.timeout(5):
            await call
    assert err.value.status == grpc.StatusCode.UNAVAILABLE
    assert channel._conns == []
    await eventually(lambda: not lean.server.connections)
    async with asyncio.timeout(5):  # the channel still works afterwards
        assert (await channel.unary(UNARY, Msg(n=6), Msg)).n == 6
    await channel.close()


META = [("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20)]


@pytest.mark.parametrize("client", ["lean", "aio"])
@pytest.mark.parametrize("server", ["lean", "aio"])
async def test_metadata_larger_than_a_frame(lean: Lean, client: str, server: str) -> None:
    """40 kB of metadata each way: header blocks split into CONTINUATION frames."""
    size = 40_000
    aio = await start_aio(Echo(), options=META) if server == "aio" else None
    target = aio.target if aio is not None else lean.target
    try:
        async with asyncio.timeout(10):
            if client == "lean":
                channel = GrpcChannel(target)
                try:
                    req = Msg(op="bigmeta", n=size).SerializeToString()
                    call = await channel.start(UNARY, [req], Msg, metadata=[("x-big", "u" * size)])
                    initial = dict(await call.initial_metadata())
                    answer = (await read_all(call))[0]
                finally:
                    await channel.close()
            else:
                async with grpc.aio.insecure_channel(target, options=META) as ch:
                    unary = AioStub(ch).Unary(
                        Msg(op="bigmeta", n=size), metadata=(("x-big", "u" * size),)
                    )
                    answer = await unary
                    initial = dict(await unary.initial_metadata())
    finally:
        if aio is not None:
            await aio.server.stop(None)
    assert answer.text == str([size])
    assert initial["x-big"] == "v" * size


class Silent(str):
    """A target whose server accepts and never says a word; ``held``: what it accepted."""

    held: list[asyncio.StreamWriter]


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    """A TCP server that accepts and never says a word (no HTTP/2 SETTINGS)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        target = Silent(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        target.held = held
        yield target
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_silent_server_fails_within_the_deadline(silent: Silent) -> None:
    channel = GrpcChannel(silent, connect_timeout=5)
    try:
        t0 = time.monotonic()
        with pytest.raises(GrpcError) as err:
            async with asyncio.timeout(10):
                await channel.unary(UNARY, Msg(), Msg, deadline=0.3)
        assert err.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 2
    finally:
        await channel.close()


async def test_silent_server_is_unavailable_after_the_connect_timeout(silent: Silent) -> None:
    channel = GrpcChannel(silent, connect_timeout=0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(GrpcError) as err:
            async with asyncio.timeout(10):
                await channel.start(STREAM, [b""], Msg)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < 2
        assert channel._conns == []
    finally:
        await channel.close()


async def test_connect_outliving_its_callers_is_not_reused(silent: Silent) -> None:
    """Every caller of a connect gave up before it failed: its failure is retrieved (no
    'never retrieved' error) and the next call connects afresh instead of reusing it."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx))
    channel = GrpcChannel(silent, connect_timeout=0.4)
    try:
        with pytest.raises(GrpcError) as err:
            await channel.unary(UNARY, Msg(), Msg, deadline=0.1)
        assert err.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
        connect = channel._connecting
        assert connect is not None  # the connect outlives its only caller
        await asyncio.wait({connect}, timeout=5)  # and times out, with no caller left
        assert connect.done()
        del connect  # its failure is the channel's to read: nothing here keeps or reads it
        t0 = time.monotonic()
        with pytest.raises(GrpcError) as err:
            async with asyncio.timeout(5):
                await channel.start(STREAM, [b""], Msg)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 > 0.3  # a new connect, not the old failure
        assert len(silent.held) == 2
        gc.collect()
        await asyncio.sleep(0)
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        await channel.close()
