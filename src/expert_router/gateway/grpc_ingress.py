"""The gateway's gRPC ingress: GRPCInferenceService (KServe v2) for unchanged Triton clients.

``text_input`` is classified and the request goes through the same fleet (routing policy,
pools, wait queue, retries, health, metrics) as the HTTP proxy; Triton backends are read
natively, OpenAI ones through a completion request. Failures map to gRPC status codes
(unary calls) or to the stream's ``error_message`` (ModelStreamInfer), as Triton does.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from time import perf_counter
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.backends import BackendRequest, UpstreamResponse
from expert_router.backends.triton_grpc import NativeCall, TritonGrpcBackend, TritonResponse
from expert_router.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    NoCapacity,
    RequestError,
    RoutingError,
)
from expert_router.gateway.app import Gateway
from expert_router.gateway.pools import Replica
from expert_router.grpc_host import GrpcServiceHost
from expert_router.wire import kserve
from expert_router.wire import triton as tw
from expert_router.wire.sse import SSEDecoder

log = logging.getLogger("expert_router.gateway")
CLUSTER_KEY, REPLICA_KEY = "x-expert-router-cluster", "x-expert-router-replica"
_GRPC_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


_RELAYED = ("", True)  # what ``_generate`` yields after relaying an answer undecoded


class IngressError(Exception):
    """A request failed; ``code`` is the gRPC status, ``http`` the status the metrics count."""

    def __init__(self, code: grpc.StatusCode, message: str, http: int) -> None:
        super().__init__(message)
        self.code, self.http = code, http


def _for_backend(exc: BackendError) -> IngressError:
    if isinstance(exc, BackendTimeout):
        return IngressError(grpc.StatusCode.DEADLINE_EXCEEDED, f"expert timed out: {exc}", 504)
    if isinstance(exc, BackendStatusError):
        detail = str(exc)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            detail = json.loads(exc.body)["error"]["message"]
        code = _GRPC_FOR_HTTP.get(exc.status, grpc.StatusCode.UNAVAILABLE)
        return IngressError(code, f"expert answered {exc.status}: {detail}", exc.status)
    return IngressError(grpc.StatusCode.UNAVAILABLE, f"expert unavailable: {exc}", 502)


class IngressServicer(pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """GRPCInferenceService in front of one gateway's fleet."""

    def __init__(self, gw: Gateway, model: str = tw.DEFAULT_MODEL) -> None:
        self.gw = gw
        self.model = model
        self.names = tw.TritonNames(model)
        self.models = {model, gw.config.model_name}
        self._keys = [k.encode() for k in gw.config.api_keys]

    async def _check_key(self, context: Any) -> None:
        """Abort with UNAUTHENTICATED unless ``authorization: Bearer KEY`` names a known key."""
        if not self._keys:
            return
        given = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                given = value[7:].strip().encode()
        ok = False
        for k in self._keys:
            ok |= hmac.compare_digest(given, k)
        if not ok:
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
        await self._check_key(context)
        parts: list[str] = []
        route: list[tuple[str, str]] = []
        try:
            async for text, _ in self._generate(request, unary=True, route=route):
                if route:
                    await context.send_initial_metadata(route)
                    route = []
                parts.append(text)
        except IngressError as exc:
            return await context.abort(exc.code, str(exc))
        names = self.names
        return kserve.text_response(
            pb2, request.model_name, request.id, "".join(parts), names, final=None
        )

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        await self._check_key(context)
        sent = False  # the stream's initial metadata names the first request's route

        def handle(request: Any) -> AsyncIterator[Any]:
            nonlocal sent
            route: list[tuple[str, str]] | None = None
            if not sent:
                sent, route = True, []
            return self._stream_one(request, context, route)

        await kserve.serve_stream(request_iterator, context, handle)

    async def _stream_one(
        self, request: Any, context: Any, route: list[tuple[str, str]] | None
    ) -> AsyncIterator[Any]:
        rid, model, names = request.id, request.model_name, self.names
        Resp, text_response = pb2.ModelStreamInferResponse, kserve.text_response
        last = relayed = False
        try:
            async for piece in self._generate(request, unary=False, route=route, context=context):
                if piece is _RELAYED:
                    relayed = True  # the replica's own messages went to the client
                    continue  # (the generator ends right after: let it finish, not linger)
                text, last = piece
                msg = text_response(pb2, model, rid, text, names, final=True if last else None)
                yield Resp(infer_response=msg)
        except IngressError as exc:
            yield Resp(error_message=str(exc), infer_response=pb2.ModelInferResponse(id=rid))
            return
        if not last and not relayed:
            yield Resp(infer_response=text_response(pb2, model, rid, "", names, final=True))

    async def _admit(self, request: Any) -> tuple[tw.TritonRequest, Any, Any]:
        """Check and classify a request and reserve a replica: (request, prediction, decision)."""
        gw = self.gw
        assert gw.fleet is not None
        if request.model_name not in self.models:
            msg = f"Request for unknown model: '{request.model_name}' is not found"
            raise IngressError(grpc.StatusCode.NOT_FOUND, msg, 404)
        try:
            treq = tw.from_tensors(kserve.request_values(request, self.names))
        except RequestError as exc:
            raise IngressError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), 400) from None
        t1 = perf_counter()
        pred = gw.classifier.predict(treq.text)
        gw.metrics.classify_seconds.observe(perf_counter() - t1)
        try:
            decision = await gw.fleet.acquire(pred)
        except NoCapacity as exc:
            raise IngressError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), 429) from None
        except RoutingError as exc:
            raise IngressError(grpc.StatusCode.UNAVAILABLE, str(exc), 503) from None
        return treq, pred, decision

    async def _generate(
        self,
        request: Any,
        *,
        unary: bool,
        route: list[tuple[str, str]] | None = None,
        context: Any = None,
    ) -> AsyncIterator[tuple[str, bool]]:
        """Route one request and yield its (text, last) pieces; ``IngressError`` on failure.

        A non-streaming request (``stream`` false, or a unary call) yields its whole text once.
        ``route``, when given, receives the cluster and replica headers before the first piece.
        With ``context`` (a ModelStreamInfer call) they go out as its initial metadata, and a
        request a Triton replica can take as it is goes there unchanged, its answer relayed to
        ``context`` undecoded: then ``_RELAYED`` is yielded once it is complete.
        """
        gw, t0 = self.gw, perf_counter()
        fleet = gw.fleet
        assert fleet is not None
        cluster, replica_name, status = "none", "none", 200
        relayed = False
        try:
            treq, pred, decision = await self._admit(request)
            cluster = decision.cluster
            stream = treq.stream and not unary
            decided = [decision]

            def send(replica: Replica) -> Awaitable[UpstreamResponse | NativeCall]:
                backend = replica.backend
                if context is not None and isinstance(backend, TritonGrpcBackend):
                    if backend.relays(request):
                        return backend.start_native(request)
                body = json.dumps(tw.triton_to_openai(treq, replica.model)).encode()
                return backend.start(BackendRequest("/v1/completions", body, True))

            try:
                replica, up, t_sent = await gw.start_on(pred, decided, t0, send)
            except BackendError as exc:
                cluster = decided[0].cluster
                raise _for_backend(exc) from None
            cluster, replica_name = decided[0].cluster, replica.name
            if route is not None:
                route += [(CLUSTER_KEY, cluster), (REPLICA_KEY, replica_name)]
                if context is not None:
                    # Another request of this stream may have written first (metadata gone).
                    with contextlib.suppress(Exception):
                        await context.send_initial_metadata(route)
            try:
                if isinstance(up, NativeCall):
                    fleet.ttft[replica.name].observe(perf_counter() - t_sent)
                    await up.relay(context.send_framed)
                    status = 400 if up.failed else 200
                    relayed = True
                else:
                    first = True
                    parts: list[str] = []
                    async for text, last in _pieces(up):
                        if first:
                            fleet.ttft[replica.name].observe(perf_counter() - t_sent)
                            first = False
                        if stream:
                            yield text, last
                        else:
                            parts.append(text)
                    if not stream:
                        yield "".join(parts), True
                fleet.record_success(replica)
            except BackendError as exc:
                fleet.record_failure(replica, "stream_interrupted")
                raise _for_backend(exc) from None
            finally:
                up.close()
                fleet.release(replica)
        except IngressError as exc:
            status = exc.http
            raise
        except BaseException:
            status = 499
            raise
        finally:
            gw.metrics.count_request(cluster, replica_name, status)
        if relayed:
            yield _RELAYED


async def _pieces(up: UpstreamResponse) -> AsyncIterator[tuple[str, bool]]:
    """(text, last) pieces of an upstream answer: Triton's natively, OpenAI SSE by parsing."""
    if isinstance(up, TritonResponse):
        async for piece in up.texts():
            yield piece
        return
    decoder, read, done = SSEDecoder(), up.readany, False
    while not done and (chunk := await read()):
        for data in decoder.feed(chunk):
            if data == "[DONE]":
                done = True
                break
            try:
                text, reason = tw.openai_event_text(data)
            except RequestError as exc:
                raise BackendStatusError(f"in-stream error: {exc}", status=502) from None
            except ValueError:
                continue
            if text or reason:
                yield text, reason is not None


class GrpcIngress(GrpcServiceHost):
    """A grpc.aio server in the running loop serving a gateway's GRPCInferenceService."""

    def __init__(
        self, gw: Gateway, *, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False
    ) -> None:
        self.gw = gw
        super().__init__(IngressServicer(gw), host=host, port=port, reuse_port=reuse_port)


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
