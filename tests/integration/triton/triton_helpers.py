"""Helpers for the Triton tests: stream reading and a Triton-faced emulator (``inputs`` comes
from ``tests/integration/triton_inputs.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import tritonclient.grpc.aio as grpcclient
from triton_inputs import inputs
from tritonclient.grpc import service_pb2 as pb2

from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.server import EmulatorServer
from expert_router.wire import kserve
from expert_router.wire import triton as tw

__all__ = ["Emulator", "infer_request", "inputs", "stream_texts"]


class Emulator:
    """An emulated expert with its OpenAI URL and its gRPC target."""

    def __init__(self, server: EmulatorServer, grpc_server: TritonGrpcServer) -> None:
        self.server, self.grpc = server, grpc_server
        self.url, self.target = server.url, grpc_server.target


def infer_request(rid: str, text: str, tokens: int, model: str = "ensemble") -> Any:
    """A ``ModelInferRequest`` for exactly ``tokens`` tokens of answer (as grpc's stubs take it)."""
    req = tw.TritonRequest(text, tokens, min_length=tokens)
    msg = kserve.infer_request(pb2, req, tw.TritonNames(), rid)
    msg.model_name = model
    return msg


async def stream_texts(
    client: grpcclient.InferenceServerClient, requests: list[dict[str, Any]]
) -> dict[str, list[tuple[str, bool]]]:
    """Send ``requests`` on one stream; (text, final) per response, by request id.

    Stops when every request got its final response; errors are raised.
    """

    async def gen() -> AsyncIterator[dict[str, Any]]:
        for r in requests:
            yield r

    out: dict[str, list[tuple[str, bool]]] = {r["request_id"]: [] for r in requests}
    left = len(requests)
    async for result, error in client.stream_infer(gen()):
        if error is not None:
            raise error
        resp = result.get_response()
        final = resp.parameters.get("triton_final_response")
        arr = result.as_numpy("text_output")
        text = b"".join(arr.ravel()).decode() if arr is not None else ""
        out[resp.id].append((text, bool(final and final.bool_param)))
        if final and final.bool_param:
            left -= 1
            if not left:
                break
    return out
