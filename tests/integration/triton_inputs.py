"""The tritonclient inputs of a TensorRT-LLM ``ensemble`` request, shared by the integration
tests that speak Triton gRPC (their folders put ``tests/integration`` on ``sys.path``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient


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
