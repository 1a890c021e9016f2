"""The paper's client: Triton / TensorRT-LLM over KServe v2 gRPC (``--protocol triton-grpc``).

Each request is one decoupled ``ModelStreamInfer`` call on a shared grpc.aio channel (made in
the running loop, closed by ``aclose``) asking for exactly ``max_tokens`` tokens
(``min_length`` = ``max_tokens``); every ``text_output`` is stamped on receipt.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.bench.protocols.base import ClientSettings, Message, StreamFailed, StreamSink
from expert_router.wire import kserve
from expert_router.wire import triton as tw

_now = time.perf_counter_ns
_ids = itertools.count(1)
HTTP_FOR_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def strip_scheme(target: str) -> str:
    """``grpc://h:p``, ``http://h:p/`` or ``h:p`` -> ``h:p``."""
    rest = target.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def model_of(settings: ClientSettings) -> str:
    return tw.DEFAULT_MODEL if settings.model in ("", "default") else settings.model


def prompt_of(messages: Sequence[Message]) -> str:
    """The ``text_input``: the conversation's contents, as the OpenAI completions client sends."""
    return "\n\n".join(m.content for m in messages)


class TritonGrpcClient:
    """Streams TensorRT-LLM generations from one Triton (or gateway) gRPC endpoint."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.target = strip_scheme(settings.target)
        self.names = tw.TritonNames(model_of(settings))
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def _get_stub(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.target)
            self._stub = pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def stream(self, messages: Sequence[Message], max_tokens: int, sink: StreamSink) -> None:
        req = tw.TritonRequest(prompt_of(messages), max_tokens, stream=True, min_length=max_tokens)
        msg = kserve.infer_request(pb2, req, self.names, f"b{next(_ids)}")
        call = self._get_stub().ModelStreamInfer(timeout=self.settings.request_timeout)
        key = self.names["text_output"]
        try:
            await call.write(msg)
            await call.done_writing()
            sink.headers(200, {k: str(v) for k, v in (await call.initial_metadata() or ())})
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise StreamFailed("stream ended without a final response", http_status=200)
                t = _now()
                if resp.error_message:
                    raise StreamFailed(f"in-stream error: {resp.error_message}", http_status=200)
                r = resp.infer_response
                if r.raw_output_contents:
                    text = _first_text(r, key)
                    if text:
                        sink.text(t, text)
                if kserve.is_final(r):
                    # Read the call to its end (its status), as tritonclient does: cancelling
                    # right after the final message would race the server's own ending.
                    await call.read()
                    return
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise StreamFailed(
                f"gRPC {code.name}: {exc.details()}", http_status=HTTP_FOR_GRPC.get(code, 502)
            ) from None
        finally:
            call.cancel()  # a no-op once the call is over

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None


def _first_text(r: Any, key: str) -> str:
    for i, tensor in enumerate(r.outputs):
        if tensor.name == key:
            raw = r.raw_output_contents[i]
            if len(raw) == 4 + int.from_bytes(raw[:4], "little"):  # one element: the usual case
                return str(raw[4:].decode("utf-8", errors="replace"))
            return "".join(b.decode("utf-8", errors="replace") for b in kserve.decode_bytes(raw))
    return ""
