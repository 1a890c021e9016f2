"""A tiny gRPC service for the transport tests, built from a descriptor at import time (no
protoc): ``h2test.Echo`` with one method of each kind, and one servicer that both the lean
server and grpc.aio's server run. Requests say what to do in ``op``."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from expert_router.h2.limits import H2Limits

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> types.SimpleNamespace:
    fdp = descriptor_pb2.FileDescriptorProto(name="h2test.proto", package="h2test")
    msg = fdp.message_type.add(name="Msg")
    for number, (name, kind) in enumerate(
        [("op", _F.TYPE_STRING), ("n", _F.TYPE_INT64), ("data", _F.TYPE_BYTES),
         ("text", _F.TYPE_STRING)],
        start=1,
    ):  # fmt: skip
        msg.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    svc = fdp.service.add(name="Echo")
    for name, cin, cout in [
        ("Unary", False, False),
        ("ServerStream", False, True),
        ("ClientStream", True, False),
        ("Bidi", True, True),
    ]:
        svc.method.add(
            name=name,
            input_type=".h2test.Msg",
            output_type=".h2test.Msg",
            client_streaming=cin,
            server_streaming=cout,
        )
    fd = descriptor_pool.DescriptorPool().AddSerializedFile(fdp.SerializeToString())
    cls = message_factory.GetMessageClass(fd.message_types_by_name["Msg"])
    return types.SimpleNamespace(DESCRIPTOR=fd, Msg=cls)


pb2: Any = _build()
Msg: Any = pb2.Msg
SERVICE = "Echo"
PATH = "/h2test.Echo/"
BIG = 64 << 20
AIO_OPTIONS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]
LIMITS = H2Limits(max_message=BIG)  # the lean ends' equivalent of AIO_OPTIONS


class Echo:
    """grpc.aio-style servicer. ``op``: echo | meta | abort:<CODE>:<details> | sleep | hold
    (counted in ``held``; Unary ``held`` answers the count) |
    raise:value|timeout|todo | setcode:<CODE>:<details> | todo-coded | value-coded | none |
    size (answer ``n`` bytes) | bigmeta | meta-sleep | nap | badframe; ServerStream answers ``n``
    messages (after its op's wait, before its abort)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.seen: list[Any] = []  # contexts, for checks on what arrived
        self.napping = 0
        self.held = 0  # Unary calls with op "hold" that started (they wait until cancelled)

    async def _sleep(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def Unary(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.seen.append(context)
        op = request.op
        if op == "meta":
            await context.send_initial_metadata([("x-initial", "hello")])
            got = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
            return Msg(text=repr(sorted(got)))
        if op.startswith("abort:"):
            _, code, details = op.split(":", 2)
            await context.abort(grpc.StatusCode[code], details)
        if op == "bigmeta":  # ``n`` bytes of initial metadata; the size of x-big received
            await context.send_initial_metadata([("x-big", "v" * request.n)])
            sizes = [len(v) for k, v in context.invocation_metadata() if k == "x-big"]
            return Msg(text=str(sizes))
        if op == "sleep":
            await self._sleep()
        if op == "hold":
            self.held += 1
            await self._sleep()
        if op == "held":
            return Msg(n=self.held)
        if op.startswith("raise:"):
            raise {"value": ValueError, "timeout": TimeoutError, "todo": NotImplementedError}[
                op[6:]
            ]("raised by the servicer")
        if op.startswith("setcode:"):
            _, code, details = op.split(":", 2)
            context.set_code(grpc.StatusCode[code])
            context.set_details(details)
            return Msg(text="with a code")
        if op == "todo-coded":  # what generated base servicers do
            context.set_code(grpc.StatusCode.UNIMPLEMENTED)
            context.set_details("Method not implemented!")
            raise NotImplementedError("Method not implemented!")
        if op == "value-coded":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("gone")
            raise ValueError("after set_code")
        if op == "none":
            return None
        if op == "size":
            return Msg(data=b"s" * request.n)
        return Msg(op=op, n=request.n, data=request.data, text=request.text)

    async def ServerStream(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        self.seen.append(context)
        if request.op == "nap":  # a short wait before the answers
            self.napping += 1
            await asyncio.sleep(0.3)
        if request.op == "meta-sleep":
            await context.send_initial_metadata([("x-initial", "early")])
            await self._sleep()
        for i in range(request.n):
            yield Msg(n=i, data=request.data)
        if request.op.startswith("abort:"):
            _, code, details = request.op.split(":", 2)
            await context.abort(grpc.StatusCode[code], details)
        if request.op == "sleep":
            await self._sleep()
        if request.op == "badframe":  # lean server only: a compressed flag, no grpc-encoding
            await asyncio.sleep(0.2)  # after the client has read what came before
            context.send_framed(b"\x01\x00\x00\x00\x03abc")
            await self._sleep()

    async def ClientStream(self, requests: AsyncIterator[Any], context: Any) -> Any:  # noqa: N802
        total, count = 0, 0
        async for r in requests:
            count += 1
            total += len(r.data)
        return Msg(n=count, text=str(total))

    async def Bidi(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async for r in requests:
            if r.op == "sleep":
                await self._sleep()
            if r.op.startswith("abort:"):
                _, code, details = r.op.split(":", 2)
                await context.abort(grpc.StatusCode[code], details)
            yield Msg(n=r.n, data=r.data)


def aio_handler(servicer: Echo) -> grpc.GenericRpcHandler:
    """``servicer`` as a generic handler for ``grpc.aio.server``."""
    kw = {"request_deserializer": Msg.FromString, "response_serializer": Msg.SerializeToString}
    return grpc.method_handlers_generic_handler(
        "h2test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(servicer.Unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(servicer.ServerStream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(servicer.ClientStream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(servicer.Bidi, **kw),
        },
    )


class AioStub:
    """grpc.aio multi-callables for the four methods."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        kw: dict[str, Any] = {
            "request_serializer": Msg.SerializeToString,
            "response_deserializer": Msg.FromString,
        }
        self.Unary = channel.unary_unary(PATH + "Unary", **kw)
        self.ServerStream = channel.unary_stream(PATH + "ServerStream", **kw)
        self.ClientStream = channel.stream_unary(PATH + "ClientStream", **kw)
        self.Bidi = channel.stream_stream(PATH + "Bidi", **kw)
