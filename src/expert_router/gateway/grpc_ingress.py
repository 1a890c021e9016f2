"""The gateway's gRPC ingress: GRPCInferenceService (KServe v2) for unchanged Triton clients.

Each request's ``text_input`` is classified and served by a ``Cycle`` (the same lifecycle as
the HTTP ingress: routing, queue, retries, health, metrics, access line); ``GrpcSink`` writes
its answer as Triton messages: decoded from an OpenAI replica's SSE, or a Triton replica's
own messages relayed undecoded when the client's request could be forwarded as it came.
Failures map to gRPC status codes (unary calls) or to the stream's ``error_message``
(ModelStreamInfer), as Triton does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.backends import BackendRequest
from expert_router.errors import (
    BackendStatusError,
    BackendTimeout,
    ExpertRouterError,
    NoCapacity,
    RequestError,
    RoutingError,
)
from expert_router.gateway.app import Gateway
from expert_router.gateway.cycle import NONE, Cycle
from expert_router.gateway.pools import Replica
from expert_router.grpc_host import GrpcServiceHost
from expert_router.h2.grpc import message
from expert_router.h2.limits import H2Limits
from expert_router.wire import kserve
from expert_router.wire import triton as tw
from expert_router.wire.grpc_status import grpc_for_http
from expert_router.wire.sse import SSEDecoder

log = logging.getLogger("expert_router.gateway")
CLUSTER_KEY, REPLICA_KEY = "x-expert-router-cluster", "x-expert-router-replica"
GRPC = "application/grpc"


class IngressError(Exception):
    """A request failed; ``code`` is the gRPC status, ``http`` the status the metrics count."""

    def __init__(self, code: grpc.StatusCode, message: str, http: int) -> None:
        super().__init__(message)
        self.code, self.http = code, http


def for_error(exc: ExpertRouterError, status: int) -> IngressError:
    """The gRPC status of a request that failed with ``exc`` (answered ``status`` in HTTP)."""
    if isinstance(exc, NoCapacity):
        return IngressError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), status)
    if isinstance(exc, RoutingError):
        return IngressError(grpc.StatusCode.UNAVAILABLE, str(exc), status)
    if isinstance(exc, BackendTimeout):
        return IngressError(grpc.StatusCode.DEADLINE_EXCEEDED, f"expert timed out: {exc}", status)
    if isinstance(exc, BackendStatusError):
        detail = str(exc)
        with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError, RecursionError):
            detail = json.loads(exc.body)["error"]["message"]
        code = grpc_for_http(exc.status)
        return IngressError(code, f"expert answered {exc.status}: {detail}", exc.status)
    return IngressError(grpc.StatusCode.UNAVAILABLE, f"expert unavailable: {exc}", status)


class GrpcProxyRequest:
    """A KServe request as a ``Cycle`` needs it. ``native``: the client's own message, which
    a Triton replica with the same model and tensor names takes unchanged."""

    __slots__ = ("route", "text", "stream", "treq", "native")

    def __init__(self, route: str, treq: tw.TritonRequest, stream: bool, native: Any) -> None:
        self.route, self.treq, self.stream, self.native = route, treq, stream, native
        self.text = treq.text

    def upstream(self, replica: Replica) -> BackendRequest:
        body = json.dumps(tw.triton_to_openai(self.treq, replica.model)).encode()
        return BackendRequest("/v1/completions", body, True, native=self.native)


class GrpcSink:
    """Writes one request's answer to a gRPC call as Triton messages; ``done`` resolves with
    the whole text (unary calls) or None, or fails with ``IngressError``."""

    __slots__ = (
        "context", "model", "rid", "names", "route", "done", "decoder", "final", "drainer",
        "cut",
    )  # fmt: skip

    def __init__(self, context: Any, request: Any, names: tw.TritonNames, route: bool) -> None:
        self.context = context
        self.model, self.rid, self.names = request.model_name, request.id, names
        self.route = route  # this request's route goes out as the call's initial metadata
        self.done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.decoder = SSEDecoder()
        self.final = False  # a final Triton response was sent
        self.drainer: asyncio.Task[None] | None = None
        self.cut = False  # the answer carried an error event: the cycle was interrupted

    def _route(self, cycle: Cycle) -> None:
        if self.route:
            self.route = False
            meta = [(CLUSTER_KEY, cycle.cluster), (REPLICA_KEY, cycle.replica_name)]
            with contextlib.suppress(RuntimeError):  # another request of the stream was first
                self.context.set_initial_metadata(meta)

    def _pieces(self, cycle: Cycle, data: bytes) -> list[tuple[str, bool]]:
        """(text, last) pieces of an OpenAI answer's bytes (SSE, or one completion JSON)."""
        if not cycle.content_type.startswith("text/event-stream"):
            text, reason = tw.openai_event_text(data.decode("utf-8", errors="replace"))
            return [(text, True)]
        out = []
        for event in self.decoder.feed(data):
            if event == "[DONE]":
                break
            try:
                text, reason = tw.openai_event_text(event)
            except (ValueError, RecursionError):
                continue
            if text or reason:
                out.append((text, reason is not None))
        return out

    # -- the cycle's sink ------------------------------------------------------------------------
    def send(self, cycle: Cycle, data: bytes) -> bool:
        self._route(cycle)
        if cycle.content_type == GRPC:
            return self._sent(cycle, self.context.send_framed(data))
        try:
            pieces = self._pieces(cycle, data)
        except RequestError as exc:  # the replica ended its stream with an error event
            self.cut = True
            cycle.interrupt(BackendStatusError(f"in-stream error: {exc}", status=502))
            return False
        ok = True
        for text, last in pieces:
            msg = kserve.text_response(
                pb2, self.model, self.rid, text, self.names, final=True if last else None
            )
            self.final = self.final or last
            ok = self.context.send_framed(_framed(msg))
        return self._sent(cycle, ok)

    def _sent(self, cycle: Cycle, ok: bool) -> bool:
        """False (the call's window or buffer is full): the cycle pauses its upstream until
        the call drains."""
        if not ok and self.drainer is None:
            self.drainer = asyncio.get_running_loop().create_task(self._drain(cycle))
        return ok

    async def _drain(self, cycle: Cycle) -> None:
        try:
            await self.context.drain()
        finally:
            self.drainer = None
        cycle.resume()

    def send_end(self, cycle: Cycle, last: bytes = b"") -> bool:
        if last:
            self.send(cycle, last)
            if self.cut:
                return False
        self._route(cycle)
        if not self.final and cycle.content_type != GRPC:
            msg = kserve.text_response(pb2, self.model, self.rid, "", self.names, final=True)
            self.context.send_framed(_framed(msg))
        self._resolve(None)
        return True

    def send_whole(self, cycle: Cycle, body: bytes) -> None:
        self._route(cycle)
        try:
            text = "".join(t for t, _ in self._pieces(cycle, body))
        except (RequestError, ValueError) as exc:
            self.send_error(cycle, BackendStatusError(f"in-stream error: {exc}", status=502), 502)
            return
        self._resolve(text)

    def send_error(self, cycle: Cycle, exc: ExpertRouterError, status: int) -> None:
        self._route(cycle)
        if not self.done.done():
            self.done.set_exception(for_error(exc, status))

    def send_abort(self, cycle: Cycle, exc: ExpertRouterError) -> None:
        self.send_error(cycle, exc, 502)

    def finished(self, cycle: Cycle) -> None:
        if self.drainer is not None:
            self.drainer.cancel()

    def remote(self) -> str | None:
        with contextlib.suppress(Exception):
            return str(self.context.peer())
        return None

    def _resolve(self, text: str | None) -> None:
        if not self.done.done():
            self.done.set_result(text)


def _framed(response: Any) -> bytes:
    """A ``ModelInferResponse`` as one framed ``ModelStreamInferResponse`` message."""
    return message(pb2.ModelStreamInferResponse(infer_response=response).SerializeToString())


class _StreamRequests:
    """The requests of one ``ModelStreamInfer`` call in flight. A request that fails gets its
    error as a stream message (``error_message``), as Triton's decoupled streams do; ``wait``
    returns once every request added has ended."""

    __slots__ = ("context", "cycles", "idle")

    def __init__(self, context: Any) -> None:
        self.context = context
        self.cycles: dict[asyncio.Future[str | None], Cycle] = {}
        self.idle: asyncio.Future[None] | None = None

    def add(self, cycle: Cycle, sink: GrpcSink, request: Any) -> None:
        done = sink.done
        if done.done():  # ended at once (no replica, say)
            self._ended(request, done)
            return
        self.cycles[done] = cycle
        done.add_done_callback(lambda fut: self._ended(request, fut))

    def fail(self, request: Any, exc: IngressError) -> None:
        error = pb2.ModelStreamInferResponse(
            error_message=str(exc), infer_response=pb2.ModelInferResponse(id=request.id)
        )
        self.context.send_framed(message(error.SerializeToString()))

    def _ended(self, request: Any, done: asyncio.Future[str | None]) -> None:
        self.cycles.pop(done, None)
        if not done.cancelled() and isinstance(exc := done.exception(), IngressError):
            self.fail(request, exc)
        if not self.cycles and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)

    async def wait(self) -> None:
        if self.cycles:
            self.idle = asyncio.get_running_loop().create_future()
            await self.idle

    def abort(self) -> None:
        """The call was cancelled (the client left): every request still in flight too."""
        cycles, self.cycles = self.cycles, {}
        for cycle in cycles.values():
            cycle.abort()


class IngressServicer(pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """GRPCInferenceService in front of one gateway's fleet."""

    def __init__(self, gw: Gateway, model: str = tw.DEFAULT_MODEL) -> None:
        self.gw = gw
        self.model = model
        self.names = tw.TritonNames(model)
        self.models = {model, gw.config.model_name}

    def _key_ok(self, context: Any) -> bool:
        """Whether ``authorization: Bearer KEY`` names a known key (or none is needed)."""
        headers = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        value = headers[0].encode("latin-1", errors="replace") if len(headers) == 1 else None
        return self.gw.key_ok(value)

    async def _refuse_key(self, context: Any) -> None:
        msg = "Incorrect or missing API key. Send metadata 'authorization: Bearer <key>'."
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)

    # -- health and metadata ---------------------------------------------------------------
    def _any_healthy(self) -> bool:
        return self.gw.fleet is not None and self.gw.fleet.any_healthy()

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerReadyResponse(ready=self._any_healthy())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        from expert_router import __version__

        return pb2.ServerMetadataResponse(
            name="expert-router", version=str(__version__), extensions=["generate"]
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        ok = request.name in self.models and request.version in ("", "1")
        return pb2.ModelReadyResponse(ready=ok and self._any_healthy())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.name not in self.models:
            msg = f"Request for unknown model: '{request.name}' is not found"
            return await context.abort(grpc.StatusCode.NOT_FOUND, msg)
        return kserve.model_metadata(pb2, request.name, self.names)

    # -- inference ------------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not self._key_ok(context):
            await self._refuse_key(context)
        try:
            text = await self._serve(request, context, "ModelInfer", unary=True, route=True)
        except IngressError as exc:
            return await context.abort(exc.code, str(exc))
        return kserve.text_response(
            pb2, request.model_name, request.id, text or "", self.names, final=None
        )

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        """Every request of the call served concurrently, as Triton does, without a task each:
        a request's ``Cycle`` runs on callbacks (``_StreamRequests``); this coroutine reads the
        requests, then waits until every one has ended."""
        if not self._key_ok(context):
            await self._refuse_key(context)
        served = _StreamRequests(context)
        route = True  # the stream's initial metadata names the first request's route
        try:
            async for request in request_iterator:
                try:
                    cycle, sink = self._begin(request, context, "ModelStreamInfer", False, route)
                except IngressError as exc:
                    served.fail(request, exc)
                else:
                    served.add(cycle, sink, request)
                route = False
            await served.wait()
        except asyncio.CancelledError:
            served.abort()
            raise

    async def _serve(
        self, request: Any, context: Any, name: str, *, unary: bool, route: bool
    ) -> str | None:
        """Serve one request through a ``Cycle``; its answer goes to ``context`` as it comes
        (streams) or is returned whole (unary). ``IngressError`` when it fails."""
        cycle, sink = self._begin(request, context, name, unary, route)
        try:
            return await sink.done
        except asyncio.CancelledError:
            cycle.abort()
            raise

    def _begin(
        self, request: Any, context: Any, name: str, unary: bool, route: bool
    ) -> tuple[Cycle, GrpcSink]:
        """Admit ``request`` and start its ``Cycle``; ``sink.done`` tells how it ends."""
        t0 = perf_counter()
        gw = self.gw
        try:
            treq = self._admit(request)
        except IngressError as exc:
            gw.metrics.count_request(NONE, NONE, exc.http)
            raise
        native = None if unary else request
        proxy = GrpcProxyRequest(name, treq, treq.stream and not unary, native)
        sink = GrpcSink(context, request, self.names, route)
        cycle = Cycle(gw, proxy, sink, t0)
        cycle.start()
        return cycle, sink

    def _admit(self, request: Any) -> tw.TritonRequest:
        if request.model_name not in self.models:
            msg = f"Request for unknown model: '{request.model_name}' is not found"
            raise IngressError(grpc.StatusCode.NOT_FOUND, msg, 404)
        try:
            return tw.from_tensors(kserve.request_values(request, self.names))
        except RequestError as exc:
            raise IngressError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), 400) from None


class GrpcIngress(GrpcServiceHost):
    """A gRPC server in the running loop serving a gateway's GRPCInferenceService."""

    def __init__(
        self, gw: Gateway, *, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False
    ) -> None:
        self.gw = gw
        server = gw.config.server
        limits = H2Limits(
            max_concurrent_streams=server.http2_max_streams,
            max_message=server.grpc_max_message_bytes,
        )
        super().__init__(
            IngressServicer(gw), host=host, port=port, reuse_port=reuse_port, limits=limits
        )


@contextlib.asynccontextmanager
async def serve_grpc_ingress(
    gw: Gateway, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[GrpcIngress]:
    """Serve ``gw``'s gRPC ingress in the running loop until the block exits."""
    ingress = GrpcIngress(gw, host=host, port=port)
    await ingress.start()
    try:
        yield ingress
    finally:
        await ingress.stop()
