"""Helpers for the Triton tests: tritonclient inputs and stream reading."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient

from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.server import EmulatorServer


class Emulator:
    """An emulated expert with its OpenAI URL and its gRPC target."""

    def __init__(self, server: EmulatorServer, grpc_server: TritonGrpcServer) -> None:
        self.server, self.grpc = server, grpc_server
        self.url, self.target = server.url, grpc_server.target


def inputs(
    text: str = "How do I bake bread?",
    max_tokens: int = 6,
    *,
    stream: bool = True,
    override: dict[str, tuple[Any, str]] | None = None,
) -> list[grpcclient.InferInput]:
    """TensorRT-LLM ``ensemble`` inputs as the paper's client builds them; ``override`` replaces
    (array, datatype) per tensor (array ``None`` drops it)."""
    arrays: dict[str, tuple[Any, str]] = {
        "text_input": (np.array([[text.encode()]], dtype=object), "BYTES"),
        "max_tokens": (np.array([[max_tokens]], dtype=np.int32), "INT32"),
        "stream": (np.array([[stream]], dtype=bool), "BOOL"),
        "min_length": (np.array([[max_tokens]], dtype=np.int32), "INT32"),
    }
    for key, value in (override or {}).items():
        arrays[key] = value
    out = []
    for name, (arr, dtype) in arrays.items():
        if arr is None:
            continue
        i = grpcclient.InferInput(name, list(arr.shape), dtype)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


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
