"""The gateway's gRPC ingress: GRPCInferenceService (KServe v2) for unchanged Triton clients.

Each request's ``text_input`` is classified and served by a ``Cycle`` (the same lifecycle as
the HTTP ingress: routing, queue, retries, health, metrics, access line); ``GrpcSink`` writes
its answer as Triton messages: decoded from an OpenAI replica's SSE, or a Triton replica's
own messages relayed undecoded when the client's request could be forwarded as it came.
Failures map to gRPC status codes (unary calls) or to the stream's ``error_message``
(ModelStreamInfer), as Triton does. Both inference methods run on callbacks, with no task
(``StreamInfer`` and ``UnaryInfer``, the server's ``CallHandler``s); health and metadata calls
are coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
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
from expert_router.h2.server import ServerCall
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
        treq, model = self.treq, replica.model

        def body() -> bytes:  # built only for a replica that does not take ``native``
            return json.dumps(tw.triton_to_openai(treq, model)).encode()

        return BackendRequest("/v1/completions", body, True, native=self.native)


Ended = Callable[[str | None, "IngressError | None"], None]
"""How a request ended: the whole text (unary calls) or None, or the error it failed with."""


class GrpcSink:
    """Writes one request's answer to a gRPC call as Triton messages; ``ended`` is called
    once, when the answer is complete or the request failed."""

    __slots__ = (
        "context", "model", "rid", "names", "route", "ended", "decoder", "final", "drainer",
        "cut", "streamed",
    )  # fmt: skip

    def __init__(
        self,
        context: Any,
        request: Any,
        names: tw.TritonNames,
        route: bool,
        ended: Ended,
        streamed: bool = True,
    ) -> None:
        self.context = context
        self.streamed = streamed  # a stream call's request (its answer is messages), not unary
        self.model, self.rid, self.names = request.model_name, request.id, names
        self.route = route  # this request's route goes out as the call's initial metadata
        self.ended: Ended | None = ended
        self.decoder: SSEDecoder | None = None  # made for an SSE answer only
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
        if self.decoder is None:
            self.decoder = SSEDecoder()
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
        if self.route:
            self._route(cycle)
        if cycle.content_type == GRPC:  # a Triton replica's own message: relayed as it came
            return self.context.send_framed(data) or self._sent(cycle, False)
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
        if cycle.content_type == GRPC:  # a Triton replica's own messages, whole: as they came
            self.final = True
            self.context.send_framed(body)
            self._resolve(None)
            return
        try:
            text = "".join(t for t, _ in self._pieces(cycle, body))
        except (RequestError, ValueError) as exc:
            self.send_error(cycle, BackendStatusError(f"in-stream error: {exc}", status=502), 502)
            return
        if not self.streamed:  # a unary call: its servicer answers with the text
            self._resolve(text)
            return
        msg = kserve.text_response(pb2, self.model, self.rid, text, self.names, final=True)
        self.final = True  # a stream call's request: its whole answer as one final message
        self.context.send_framed(_framed(msg))
        self._resolve(None)

    def send_error(self, cycle: Cycle, exc: ExpertRouterError, status: int) -> None:
        self._route(cycle)
        ended, self.ended = self.ended, None
        if ended is not None:
            ended(None, for_error(exc, status))

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
        ended, self.ended = self.ended, None
        if ended is not None:
            ended(text, None)


def _framed(response: Any) -> bytes:
    """A ``ModelInferResponse`` as one framed ``ModelStreamInferResponse`` message."""
    return message(pb2.ModelStreamInferResponse(infer_response=response).SerializeToString())


_KEY_MESSAGE = "Incorrect or missing API key. Send metadata 'authorization: Bearer <key>'."


class StreamInfer:
    """One ``ModelStreamInfer`` call, served on callbacks (the server's ``CallHandler``): each
    request that arrives starts its ``Cycle`` at once, and they run concurrently, as Triton's
    decoupled streams do. A request that fails gets its error as a stream message
    (``error_message``); the call ends OK once the client has half-closed and every request
    has ended, and a cancelled call aborts the requests still in flight."""

    __slots__ = ("servicer", "call", "cycles", "input_done", "route")

    def __init__(self, servicer: IngressServicer, call: ServerCall) -> None:
        self.servicer, self.call = servicer, call
        self.cycles: dict[int, Cycle] = {}  # by request, in flight
        self.input_done = False
        self.route = True  # the stream's initial metadata names the first request's route
        servicer._check_key(call)

    def on_message(self, request: Any) -> None:
        route, self.route = self.route, False
        key = id(request)

        def ended(text: str | None, exc: IngressError | None) -> None:
            self.cycles.pop(key, None)
            if exc is not None:
                self.fail(request, exc)
            self._end_if_done()

        try:
            cycle = self.servicer._begin(request, self.call, "ModelStreamInfer", ended, route)
        except IngressError as exc:
            self.fail(request, exc)
            return
        if not cycle.over:  # else ended at once (no replica, say)
            self.cycles[key] = cycle

    def fail(self, request: Any, exc: IngressError) -> None:
        error = pb2.ModelStreamInferResponse(
            error_message=str(exc), infer_response=pb2.ModelInferResponse(id=request.id)
        )
        self.call.send_framed(message(error.SerializeToString()))

    def on_input_end(self) -> None:
        self.input_done = True
        self._end_if_done()

    def _end_if_done(self) -> None:
        if self.input_done and not self.cycles:
            self.call.finish(grpc.StatusCode.OK)

    def on_cancel(self) -> None:
        """The call was cancelled (the client left): every request still in flight too."""
        cycles, self.cycles = self.cycles, {}
        for cycle in cycles.values():
            cycle.abort()


class UnaryInfer:
    """One ``ModelInfer`` call, served on callbacks: its request starts a ``Cycle`` as it
    arrives, and the call ends with the whole answer or with the status of the error."""

    __slots__ = ("servicer", "call", "request", "cycle")

    def __init__(self, servicer: IngressServicer, call: ServerCall) -> None:
        self.servicer, self.call = servicer, call
        self.request: Any = None
        self.cycle: Cycle | None = None
        servicer._check_key(call)

    def on_message(self, request: Any) -> None:
        if self.request is not None:  # a unary call serves its first request (as grpc.aio)
            return
        self.request = request
        try:
            cycle = self.servicer._begin(
                request, self.call, "ModelInfer", self.ended, route=True, unary=True
            )
        except IngressError as exc:
            self.call.finish(exc.code, str(exc))
            return
        if not cycle.over:
            self.cycle = cycle

    def ended(self, text: str | None, exc: IngressError | None) -> None:
        self.cycle = None
        if exc is not None:
            self.call.finish(exc.code, str(exc))
            return
        request, names = self.request, self.servicer.names
        response = kserve.text_response(
            pb2, request.model_name, request.id, text or "", names, final=None
        )
        self.call.finish(grpc.StatusCode.OK, "", message(response.SerializeToString()))

    def on_input_end(self) -> None:
        if self.request is None:
            self.call.finish(grpc.StatusCode.INTERNAL, "request message missing")

    def on_cancel(self) -> None:
        cycle, self.cycle = self.cycle, None
        if cycle is not None:
            cycle.abort()


class IngressServicer(pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """GRPCInferenceService in front of one gateway's fleet."""

    def __init__(self, gw: Gateway, model: str = tw.DEFAULT_MODEL) -> None:
        self.gw = gw
        self.model = model
        self.names = tw.TritonNames(model)
        self.models = {model, gw.config.model_name}
        # the methods served on callbacks (h2.server.CallHandler), not as coroutines
        self.callbacks: dict[str, Callable[[ServerCall], StreamInfer | UnaryInfer]] = {
            "ModelStreamInfer": lambda call: StreamInfer(self, call),
            "ModelInfer": lambda call: UnaryInfer(self, call),
        }

    def _check_key(self, call: ServerCall) -> None:
        """End ``call`` UNAUTHENTICATED unless ``authorization: Bearer KEY`` names a known key
        (or none is needed)."""
        if not self.gw.keys_required:
            return
        headers = [v for k, v in call.invocation_metadata() or () if k == "authorization"]
        value = headers[0].encode("latin-1", errors="replace") if len(headers) == 1 else None
        if not self.gw.key_ok(value):
            call.finish(grpc.StatusCode.UNAUTHENTICATED, _KEY_MESSAGE)

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
    def _begin(
        self, request: Any, context: Any, name: str, ended: Ended, route: bool, unary: bool = False
    ) -> Cycle:
        """Admit ``request`` and start its ``Cycle``; ``ended`` tells how it ends."""
        t0 = perf_counter()
        gw = self.gw
        try:
            treq = self._admit(request)
        except IngressError as exc:
            gw.metrics.count_request(NONE, NONE, exc.http)
            raise
        native = None if unary else request
        proxy = GrpcProxyRequest(name, treq, treq.stream and not unary, native)
        sink = GrpcSink(context, request, self.names, route, ended, streamed=not unary)
        cycle = Cycle(gw, proxy, sink, t0)
        cycle.start()
        return cycle

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
            preface_timeout=server.head_timeout,
            idle_timeout=server.idle_timeout,
        )
        super().__init__(
            IngressServicer(gw),
            host=host,
            port=port,
            reuse_port=reuse_port,
            limits=limits,
            max_connections=server.max_connections,
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
