"""The emulator as a Triton server: KServe v2 gRPC (GRPCInferenceService) with a TensorRT-LLM
model ``ensemble``, and Triton's HTTP ``generate`` / ``generate_stream``, on the same engine as
the OpenAI API. A streamed answer's last message carries ``triton_final_response``. While the
server shuts down, new calls and those cut by the drain timeout end with UNAVAILABLE.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.emulator.drain import REFUSED, Drained
from expert_router.emulator.engine import CANCELLED, DONE, EngineRequest
from expert_router.emulator.live import StreamSink
from expert_router.emulator.openai_api import parse_request
from expert_router.emulator.server import EmulatorServer, end_stream
from expert_router.errors import RequestError
from expert_router.grpc_host import GrpcServiceHost
from expert_router.h2.limits import H2Limits
from expert_router.tokenizer import TokenGenerator
from expert_router.wire import kserve
from expert_router.wire import triton as tw

TRITON_LIMITS = H2Limits(max_concurrent_streams=10_000)
"""Triton (grpc-core) advertises no stream limit: a client may multiplex every user's calls
on one connection. The emulator stands in for it; the gateway's own ingress keeps 100."""

_ids = itertools.count(10_000_000)
NAMES = tw.TritonNames()
MODEL = tw.DEFAULT_MODEL
SERVER_VERSION = "2.41.0"


class UnknownModel(RequestError):
    """The request names a model this server does not serve."""


def check_model(name: str, version: str = "") -> None:
    if name != MODEL or version not in ("", "1"):
        shown = f"{name}" + (f"' version '{version}" if version else "")
        raise UnknownModel(f"Request for unknown model: '{shown}' is not found", param="model")


async def generate(
    server: EmulatorServer, req: tw.TritonRequest
) -> AsyncIterator[tuple[str, bool]]:
    """Run ``req`` on the server's engine; yields (text, last) pieces, one per wake-up when
    streaming, the whole text otherwise. Leaving early cancels the request in the engine;
    raises ``Drained`` when the server refuses it or the drain timeout cuts it."""
    if server.shutdown.draining:
        raise Drained(REFUSED)
    body = tw.triton_to_openai(req)
    plan, _ = parse_request(
        body, chat=False, context=server.context, eos_mean_tokens=server.preset.eos_mean_tokens
    )
    sink = StreamSink(per_token=req.stream)
    ereq = EngineRequest(next(_ids), plan.prompt_tokens, plan.max_tokens, plan.target, sink)
    engine, driver = server.engine, server.driver
    gen, texts = TokenGenerator(plan.seed), plan.texts
    shutdown = server.shutdown
    with shutdown.track(sink):
        engine.submit(ereq, driver.now())
        try:
            if not req.stream:
                while not sink.done:
                    sink.pending = 0
                    await shutdown.next(sink)
                if texts is None:
                    texts = [gen.next() for _ in range(plan.target)]
                yield "".join(texts), True
                return
            sent = 0
            while sent < plan.target:
                await shutdown.next(sink)
                n, sink.pending = sink.pending, 0
                if texts is not None:
                    piece = "".join(texts[sent : sent + n])
                else:
                    piece = "".join(gen.next() for _ in range(n))
                sent += n
                if n:
                    yield piece, sent >= plan.target
                elif sink.done:
                    break
        finally:
            if ereq.state not in (DONE, CANCELLED):
                engine.cancel(ereq, driver.now())


class EmulatorServicer(pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """GRPCInferenceService over one emulated expert."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerReadyResponse(ready=not self.server.shutdown.draining)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ModelReadyResponse(ready=request.name == MODEL and request.version in ("", "1"))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb2.ServerMetadataResponse(
            name="triton", version=SERVER_VERSION, extensions=["generate", "statistics"]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            check_model(request.name, request.version)
        except UnknownModel as exc:
            return await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return kserve.model_metadata(pb2, MODEL, NAMES)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            check_model(request.model_name, request.model_version)
            req = tw.from_tensors(kserve.request_values(request, NAMES))
        except UnknownModel as exc:
            return await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except RequestError as exc:
            return await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        req.stream = False
        try:
            text = "".join([piece async for piece, _ in generate(self.server, req)])
        except Drained as exc:
            return await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return kserve.text_response(pb2, MODEL, request.id, text, NAMES, final=None)

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> None:
        if self.server.shutdown.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSED)
        try:
            await kserve.serve_stream(request_iterator, context, self._stream_one)
        except Drained as exc:  # the drain timeout: end the whole call
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _stream_one(self, request: Any) -> AsyncIterator[Any]:
        rid = request.id
        try:
            check_model(request.model_name, request.model_version)
            req = tw.from_tensors(kserve.request_values(request, NAMES))
            last = False
            async for piece, last in generate(self.server, req):
                msg = kserve.text_response(
                    pb2, MODEL, rid, piece, NAMES, final=True if last else None
                )
                yield pb2.ModelStreamInferResponse(infer_response=msg)
            if not last:
                msg = kserve.text_response(pb2, MODEL, rid, "", NAMES, final=True)
                yield pb2.ModelStreamInferResponse(infer_response=msg)
        except RequestError as exc:
            yield pb2.ModelStreamInferResponse(
                error_message=str(exc), infer_response=pb2.ModelInferResponse(id=rid)
            )


class TritonGrpcServer(GrpcServiceHost):
    """A grpc.aio server in the running loop serving one emulator's GRPCInferenceService."""

    def __init__(self, emulator: EmulatorServer, *, host: str = "127.0.0.1", port: int = 0):
        self.emulator = emulator
        super().__init__(EmulatorServicer(emulator), host=host, port=port, limits=TRITON_LIMITS)


# -- Triton's HTTP generate extension ---------------------------------------------------------
def add_http_routes(app: web.Application, server: EmulatorServer) -> None:
    """``POST /v2/models/{model}/generate`` and ``.../generate_stream`` on the emulator's app."""

    async def handle(request: web.Request) -> web.StreamResponse:
        stream = request.path.endswith("_stream")
        try:
            check_model(request.match_info["model"])
            req = http_request(await request.read())
        except UnknownModel as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except RequestError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        refused = server.refused()
        if refused is not None:
            return refused
        if not stream:
            req.stream = False
            try:
                text = "".join([p async for p, _ in generate(server, req)])
            except Drained as exc:
                return web.json_response({"error": str(exc)}, status=503)
            return web.json_response(_http_out(text))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            async for piece, _ in generate(server, req):
                await resp.write(b"data: " + json.dumps(_http_out(piece)).encode() + b"\n\n")
            await resp.write_eof()
        except Drained as exc:
            await end_stream(resp, b"data: " + json.dumps({"error": str(exc)}).encode() + b"\n\n")
        except ConnectionError:
            pass
        return resp

    async def live(request: web.Request) -> web.Response:
        return web.json_response({})

    async def ready(request: web.Request) -> web.Response:
        ok = request.match_info["model"] == MODEL
        return web.json_response(
            {} if ok else {"error": "unknown model"}, status=200 if ok else 404
        )

    app.router.add_get("/v2/health/live", live)

    async def server_ready(request: web.Request) -> web.Response:
        return web.json_response({}, status=503 if server.shutdown.draining else 200)

    app.router.add_get("/v2/health/ready", server_ready)
    app.router.add_get("/v2/models/{model}/ready", ready)
    app.router.add_post("/v2/models/{model}/generate", handle)
    app.router.add_post("/v2/models/{model}/generate_stream", handle)


def _http_out(text: str) -> dict[str, Any]:
    return {"model_name": MODEL, "model_version": "1", "text_output": text}


def http_request(body: bytes) -> tw.TritonRequest:
    """The JSON of a ``generate`` request (scalars or lists; ``parameters`` merged in)."""
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RequestError("request body must be a JSON object")
    params = obj.pop("parameters", None) or {}
    if isinstance(params, dict):
        obj = {**params, **obj}
    values: dict[str, list[Any]] = {}
    for key, value in obj.items():
        if key not in tw.TENSOR_TYPES or key == "text_output":
            continue  # Triton ignores unknown parameters
        values[key] = value if isinstance(value, list) else [value]
    return tw.from_tensors(values)
