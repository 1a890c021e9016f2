"""A call the server did not take is sent again, once, as grpc's transparent retry: refused
with RST_STREAM REFUSED_STREAM, or left above a GOAWAY's last stream id (RFC 9113 8.7); and
a connection the server ended with GOAWAY is closed by the client once its last call is
over. The server here is scripted on python-hyper's ``h2`` (a third party's reading of the
RFC), so that it can refuse streams our own server never would; it never closes a
connection itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from h2_service import LIMITS, Msg
from h2_wire import UNARY
from polling import eventually

from expert_router.h2 import frames as f
from expert_router.h2.client import EOF, GrpcChannel
from expert_router.h2.grpc import GrpcError, message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

# What the script does with a request: "answer", "refuse" (RST_STREAM REFUSED_STREAM),
# "goaway" (GOAWAY NO_ERROR naming the streams before this one: this one was not processed)
# or "answer, goaway" (the answer, then GOAWAY NO_ERROR naming this stream: the last one).
Script = Callable[[int], str]


class Scripted(asyncio.Protocol):
    """One connection of the scripted server; ``script(n)`` decides for its n-th request."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.closed_by_client += 1

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.StreamEnded):
                self.request(event.stream_id)
        assert self.transport is not None
        self.transport.write(self.h2.data_to_send())

    def request(self, sid: int) -> None:
        server = self.server
        server.requests.append(sid)
        what = server.script(len(server.requests))
        if what == "refuse":
            self.h2.reset_stream(sid, error_code=f.REFUSED_STREAM)
        elif what == "goaway":
            self.h2.close_connection(error_code=f.NO_ERROR, last_stream_id=max(sid - 2, 0))
        else:
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.h2.send_data(sid, message(Msg(n=len(server.requests)).SerializeToString()))
            self.h2.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            if what == "answer, goaway":
                self.h2.close_connection(error_code=f.NO_ERROR, last_stream_id=sid)


class ScriptedServer:
    """Counts the connections and requests it saw; answers as ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.closed_by_client = 0  # connections the client closed (this server closes none)
        self.requests: list[int] = []  # the stream id of each request, in arrival order


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[ScriptedServer, GrpcChannel]]:
    server = ScriptedServer(script)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Scripted(server), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    channel = GrpcChannel(f"127.0.0.1:{port}", limits=LIMITS)
    try:
        yield server, channel
    finally:
        await channel.close()
        listener.close()


async def test_a_refused_call_is_sent_again_on_its_connection() -> None:
    async with scripted(lambda n: "refuse" if n == 1 else "answer") as (server, channel):
        answer = await channel.unary(UNARY, Msg(n=1), Msg, deadline=5)
    assert answer.n == 2  # the second request's answer: the caller saw one call
    assert server.requests == [1, 3] and server.connections == 1


async def test_a_call_refused_twice_fails_unavailable() -> None:
    async with scripted(lambda n: "refuse") as (server, channel):
        with pytest.raises(GrpcError) as err:
            await channel.unary(UNARY, Msg(n=1), Msg, deadline=5)
    assert err.value.status == grpc.StatusCode.UNAVAILABLE
    assert "HTTP/2 error 7" in err.value.details  # REFUSED_STREAM
    assert server.requests == [1, 3]  # sent again once only


async def test_a_call_above_the_goaway_is_sent_on_a_new_connection() -> None:
    async with scripted(lambda n: "goaway" if n == 1 else "answer") as (server, channel):
        call = await channel.start(UNARY, [Msg(n=1).SerializeToString()], Msg)
        assert (await call.read()).n == 2
        assert await call.read() is EOF
    assert server.requests == [1, 1] and server.connections == 2


async def test_a_call_answered_before_it_is_refused_is_not_sent_again() -> None:
    """Once the answer's head came, the server has taken the call: a reset after it is the
    call's end (UNAVAILABLE for REFUSED_STREAM, as grpc reports it), never a second request."""

    class HeadThenRefuse(Scripted):
        def request(self, sid: int) -> None:
            self.server.requests.append(sid)
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.h2.reset_stream(sid, error_code=f.REFUSED_STREAM)

    server = ScriptedServer(lambda n: "answer")
    listener = await asyncio.get_running_loop().create_server(
        lambda: HeadThenRefuse(server), "127.0.0.1", 0
    )
    channel = GrpcChannel(f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", limits=LIMITS)
    try:
        with pytest.raises(GrpcError) as err:
            await channel.unary(UNARY, Msg(n=1), Msg, deadline=5)
        assert err.value.status == grpc.StatusCode.UNAVAILABLE
        assert server.requests == [1]
    finally:
        await channel.close()
        listener.close()


async def test_a_listener_sees_one_call_across_the_refusal() -> None:
    """The gateway's Triton backend listens to its calls: the refusal is not told to it."""
    got: list[bytes] = []
    ended: asyncio.Future[GrpcError | None] = asyncio.get_running_loop().create_future()

    class Listener:
        def message(self, framed: bytes) -> object:
            got.append(framed)
            return True

        def end(self, error: GrpcError | None) -> None:
            ended.set_result(error)

    async with scripted(lambda n: "refuse" if n == 1 else "answer") as (server, channel):
        call = await channel.start(UNARY, [Msg(n=1).SerializeToString()], Msg)
        call.listen(Listener())
        assert await asyncio.wait_for(ended, 5) is None
    assert got == [message(Msg(n=2).SerializeToString())] and server.requests == [1, 3]


async def test_the_client_leaves_a_connection_ended_after_its_last_call() -> None:
    """GOAWAY naming the call just answered: no call is left, so the client closes its end
    at once (as grpc's clients do) rather than hold the connection until the server's
    lingering close; the next call opens a new connection."""
    script = {1: "answer, goaway"}
    async with scripted(lambda n: script.get(n, "answer")) as (server, channel):
        assert (await channel.unary(UNARY, Msg(n=1), Msg, deadline=5)).n == 1
        await eventually(lambda: server.closed_by_client == 1, within=0.5)
        assert (await channel.unary(UNARY, Msg(n=2), Msg, deadline=5)).n == 2
    assert server.connections == 2 and server.requests == [1, 1]


async def test_a_call_open_at_the_goaway_ends_before_the_client_leaves() -> None:
    """GOAWAY naming a call still being answered: the call goes on to its end on that
    connection; then the client closes it."""

    class GoawayMidAnswer(Scripted):
        def request(self, sid: int) -> None:
            self.server.requests.append(sid)
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            self.h2.send_data(sid, message(Msg(n=7).SerializeToString()))
            assert self.transport is not None
            self.transport.write(self.h2.data_to_send() + f.goaway(sid, f.NO_ERROR, b""))
            asyncio.get_running_loop().call_later(0.1, self.end, sid)

        def end(self, sid: int) -> None:
            self.h2.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            assert self.transport is not None
            self.transport.write(self.h2.data_to_send())

    server = ScriptedServer(lambda n: "answer")
    listener = await asyncio.get_running_loop().create_server(
        lambda: GoawayMidAnswer(server), "127.0.0.1", 0
    )
    channel = GrpcChannel(f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", limits=LIMITS)
    try:
        call = await channel.start(UNARY, [Msg(n=1).SerializeToString()], Msg)
        assert (await call.read()).n == 7
        (conn,) = channel._conns
        await eventually(lambda: conn.goaway_id is not None)  # the answer's end has not come
        assert server.closed_by_client == 0
        assert await call.read() is EOF  # the call ended whole
        await eventually(lambda: server.closed_by_client == 1, within=0.5)
    finally:
        await channel.close()
        listener.close()
