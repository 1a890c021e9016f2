"""Methods served on callbacks (``GrpcServer``'s ``callbacks``: a ``CallHandler`` per call, no
task), answering grpc.aio's own client: requests handed over as they arrive, the handler
ending the call, and every way a call can end without it (client cancel, deadline, a handler
that raises, a drain, a stop) telling it once and leaving nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from h2_service import AIO_OPTIONS, SERVICE, AioStub, Msg, pb2
from polling import eventually

from expert_router.h2.grpc import message
from expert_router.h2.server import GrpcServer, ServerCall

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Handler:
    """Bidi on callbacks. Each request is echoed at once, except ``op``: "raise" (raises),
    "end" (ends the call OK), "later" (ends it OK 0.2 s on); the half-close ends the call
    unless a request said "hold". Metadata ``x-refuse`` ends it PERMISSION_DENIED at once."""

    def __init__(self, log: list[str], call: ServerCall) -> None:
        self.log, self.call = log, call
        self.hold = False
        if ("x-refuse", "1") in call.invocation_metadata():
            call.finish(grpc.StatusCode.PERMISSION_DENIED, "refused at once")

    def on_message(self, request: Any) -> None:
        self.log.append(f"message {request.n}")
        if request.op == "raise":
            raise ValueError("raised by the handler")
        if request.op == "end":
            self.call.finish(grpc.StatusCode.OK)
            return
        if request.op == "later":
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, self.call.finish, grpc.StatusCode.OK)
        self.hold = self.hold or request.op in ("hold", "later")
        self.call.send_framed(message(Msg(n=request.n).SerializeToString()))

    def on_input_end(self) -> None:
        self.log.append("input end")
        if not self.hold:
            self.call.finish(grpc.StatusCode.OK)

    def on_cancel(self) -> None:
        self.log.append("cancel")


class Servicer:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.callbacks = {"Bidi": lambda call: Handler(self.log, call)}


@pytest.fixture
async def served() -> Any:
    servicer = Servicer()
    server = GrpcServer(servicer, pb2, SERVICE)  # type: ignore[arg-type]
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=AIO_OPTIONS) as ch:
            yield server, servicer.log, AioStub(ch)
    finally:
        await server.stop()


async def _answers(call: Any) -> list[int]:
    out = []
    while (m := await call.read()) is not grpc.aio.EOF:
        out.append(m.n)
    return out


async def _holding(stub: Any, n: int) -> Any:
    """A call whose handler holds it open, its first request (``n``) echoed."""
    call = stub.Bidi()
    await call.write(Msg(n=n, op="hold"))
    assert (await call.read()).n == n
    return call


def _settled(server: GrpcServer) -> bool:
    """No call in flight is left anywhere: server, connections, tasks."""
    return not server.calls and not server.tasks and not any(c.streams for c in server.connections)


async def test_requests_reach_the_handler_as_they_arrive(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        call = stub.Bidi()
        for i in range(3):  # each answered before the next is sent: no task in between
            await call.write(Msg(n=i))
            assert (await call.read()).n == i
        await call.done_writing()
        assert await _answers(call) == []
        assert await call.code() == grpc.StatusCode.OK
        ended = stub.Bidi()
        await ended.write(Msg(n=7, op="end"))
        assert await ended.code() == grpc.StatusCode.OK
        await eventually(lambda: _settled(server))
    assert log == ["message 0", "message 1", "message 2", "input end", "message 7"]


async def test_a_call_refused_at_once_leaves_no_stream(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        call = stub.Bidi(metadata=(("x-refuse", "1"),))  # ended before any request
        assert await call.code() == grpc.StatusCode.PERMISSION_DENIED
        await eventually(lambda: _settled(server))
        call = stub.Bidi()  # the connection goes on
        await call.write(Msg(n=2, op="end"))
        assert await call.code() == grpc.StatusCode.OK
    assert log == ["message 2"]


async def test_client_cancel_tells_the_handler_once(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        call = await _holding(stub, 1)
        call.cancel()
        await eventually(lambda: "cancel" in log)
        await eventually(lambda: _settled(server))
    assert log == ["message 1", "cancel"]


async def test_the_deadline_ends_the_call_and_tells_the_handler(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        call = stub.Bidi(timeout=0.3)
        await call.write(Msg(n=1, op="hold"))
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: _settled(server))
    assert log == ["message 1", "input end", "cancel"]


async def test_a_handler_that_raises_ends_its_call_only(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        other = await _holding(stub, 1)
        call = stub.Bidi()
        await call.write(Msg(n=2, op="raise"))
        assert await call.code() == grpc.StatusCode.UNKNOWN
        assert "raised by the handler" in await call.details()
        await other.write(Msg(n=3))  # the connection and the other call go on
        assert (await other.read()).n == 3
        other.cancel()
        await eventually(lambda: _settled(server))
    assert log == ["message 1", "message 2", "cancel", "message 3", "cancel"]


async def test_a_drain_waits_for_callback_calls_then_ends_them(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        soon, held = stub.Bidi(), stub.Bidi()
        await soon.write(Msg(n=1, op="later"))  # ends 0.2 s on: within the grace
        await held.write(Msg(n=2, op="hold"))  # never ends on its own
        assert (await soon.read()).n == 1 and (await held.read()).n == 2
        await server.drain(1.0)
        assert await soon.code() == grpc.StatusCode.OK
        assert await held.code() == grpc.StatusCode.UNAVAILABLE
        assert not server.calls
    assert log == ["message 1", "message 2", "cancel"]


async def test_a_stop_ends_callback_calls(served: Any) -> None:
    server, log, stub = served
    async with asyncio.timeout(10):
        call = await _holding(stub, 1)
        await server.stop()
        assert await call.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert not server.calls
    assert log == ["message 1", "cancel"]


async def test_requests_wait_unread_while_their_answers_cannot_leave(served: Any) -> None:
    """A client that opens no window for its answers (SETTINGS_INITIAL_WINDOW_SIZE 0) and
    goes on sending requests: past the first, they wait unread with their flow-control credit
    kept (the client stops at its window, no answer piles up); once the window opens, every
    request is answered, in order."""
    from h2_wire import BIDI, Raw, request

    from expert_router.h2 import frames as f

    server, log, _ = served
    preface = f.PREFACE + f.settings([(f.INITIAL_WINDOW_SIZE, 0)])
    raw = await Raw.connect(server.port, preface)
    raw.listen()
    try:
        async with asyncio.timeout(10):
            body = b"".join(message(Msg(n=i).SerializeToString()) for i in range(50))
            await raw.send(f.frame(f.HEADERS, f.END_HEADERS, 1, request(BIDI)))
            await raw.send(f.frame(f.DATA, 0, 1, body))
            await eventually(lambda: any(c.held for c in server.connections))
            (conn,) = server.connections
            call = conn.streams[1]
            assert log == ["message 0"] and len(call._queue) == 49  # one answer waits
            assert call.unread > 0 and call.pending is not None
            await raw.send(f.settings([(f.INITIAL_WINDOW_SIZE, 1 << 20)]))  # the window opens
            await eventually(lambda: len(log) == 50)
            assert log == [f"message {i}" for i in range(50)] and not conn.held
            await raw.send(f.frame(f.DATA, f.END_STREAM, 1, message(Msg(n=99).SerializeToString())))
            await eventually(lambda: "input end" in log)
            await eventually(lambda: _settled(server))
    finally:
        await raw.close()
