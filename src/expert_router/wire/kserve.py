"""KServe v2 on the wire, for TensorRT-LLM models: raw tensor contents, the protobuf messages
of tritonclient's service definitions (requests, text responses, model metadata, the final
flag) and the serving of one decoupled ``ModelStreamInfer`` call. Pure, no sockets.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from expert_router.errors import RequestError
from expert_router.wire.triton import (
    FINAL,
    OPTIONAL_INPUTS,
    TENSOR_TYPES,
    TritonNames,
    TritonRequest,
    to_tensors,
)

# -- KServe v2 raw tensors -------------------------------------------------------------------
_FORMATS = {"INT32": "<i", "INT64": "<q", "FP32": "<f", "FP64": "<d", "BOOL": "<?", "UINT32": "<I"}
_STRUCTS = {datatype: struct.Struct(fmt) for datatype, fmt in _FORMATS.items()}


def encode_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES tensor contents: each element as a 4-byte little-endian length and its bytes."""
    if isinstance(items, list) and len(items) == 1:  # the usual case: one element
        one: bytes = items[0]
        return len(one).to_bytes(4, "little") + one
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def decode_bytes(raw: bytes) -> list[bytes]:
    out, i, n = [], 0, len(raw)
    while i < n:
        if i + 4 > n:
            raise RequestError("malformed BYTES tensor: truncated length prefix")
        (size,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + size > n:
            raise RequestError("malformed BYTES tensor: element overruns the buffer")
        out.append(raw[i : i + size])
        i += size
    return out


def decode_raw(name: str, datatype: str, raw: bytes) -> list[Any]:
    """The elements of a raw tensor; ``RequestError`` naming the tensor when it does not parse."""
    if datatype == "BYTES":
        return decode_bytes(raw)
    form = _STRUCTS.get(datatype)
    if form is None:
        raise RequestError(f"input '{name}': unsupported datatype {datatype}", param=name)
    size = form.size
    if len(raw) == size:  # the usual case: one element
        return [form.unpack(raw)[0]]
    if len(raw) % size:
        raise RequestError(f"input '{name}': {len(raw)} bytes is not a whole {datatype} tensor")
    return [v for (v,) in form.iter_unpack(raw)]


# -- KServe v2 protobuf messages (tritonclient's service definitions) ------------------------
def request_values(pb: Any, names: TritonNames) -> dict[str, list[Any]]:
    """Decode a ``ModelInferRequest``'s inputs (raw or typed contents) by canonical name."""
    values: dict[str, list[Any]] = {}
    raw = pb.raw_input_contents
    if raw and len(raw) != len(pb.inputs):
        raise RequestError(f"{len(raw)} raw input contents for {len(pb.inputs)} inputs")
    for i, tensor in enumerate(pb.inputs):
        given, datatype = tensor.name, tensor.datatype  # each read makes a new str: once
        name = names.canonical(given)
        want = TENSOR_TYPES.get(name)
        if want is None or name == "text_output":
            raise RequestError(f"unexpected inference input '{given}'", param=given)
        if datatype != want and not (want != "BYTES" and datatype in _FORMATS):
            raise RequestError(
                f"input '{given}': datatype {datatype}, expected {want}", param=given
            )
        if raw:
            values[name] = decode_raw(given, datatype, raw[i])
        else:
            c = tensor.contents
            values[name] = list(
                c.bytes_contents
                or c.int_contents
                or c.int64_contents
                or c.fp32_contents
                or c.fp64_contents
                or c.bool_contents
                or c.uint_contents
            )
    return values


def infer_request(pb2: Any, req: TritonRequest, names: TritonNames, rid: str = "") -> Any:
    """A ``ModelInferRequest`` for ``req``: raw contents, batch shape [1, N]."""
    msg = pb2.ModelInferRequest(model_name=names.model, id=rid)
    for name, datatype, elems in to_tensors(req):
        t = msg.inputs.add(name=names[name], datatype=datatype, shape=[1, len(elems)])
        del t
        if datatype == "BYTES":
            msg.raw_input_contents.append(encode_bytes(elems))
        else:
            msg.raw_input_contents.append(
                b"".join(struct.pack(_FORMATS[datatype], e) for e in elems)
            )
    out = msg.outputs.add()
    out.name = names["text_output"]
    return msg


def text_response(
    pb2: Any, model: str, rid: str, text: str, names: TritonNames, *, final: bool | None
) -> Any:
    """A ``ModelInferResponse`` carrying ``text`` as ``text_output`` (final flag when given)."""
    msg = pb2.ModelInferResponse(model_name=model, model_version="1", id=rid)
    if text or final is not True:
        msg.outputs.add(name=names["text_output"], datatype="BYTES", shape=[1, 1])
        msg.raw_output_contents.append(encode_bytes([text.encode()]))
    if final is not None:
        msg.parameters[FINAL].bool_param = final
    return msg


def response_text(pb: Any, names: TritonNames) -> str:
    """The ``text_output`` of a ``ModelInferResponse`` ("" for an empty final response)."""
    want = names["text_output"]
    for i, tensor in enumerate(pb.outputs):
        if tensor.name != want:
            continue
        if pb.raw_output_contents:
            items = decode_bytes(pb.raw_output_contents[i])
        else:
            items = list(tensor.contents.bytes_contents)
        return b"".join(items).decode("utf-8", errors="replace")
    return ""


def model_metadata(pb2: Any, model: str, names: TritonNames) -> Any:
    """A TensorRT-LLM ``ensemble``'s ``ModelMetadataResponse`` (batch dimension first)."""
    meta = pb2.ModelMetadataResponse.TensorMetadata
    inputs = [
        meta(name=names[n], datatype=TENSOR_TYPES[n], shape=[-1, -1 if n.endswith("words") else 1])
        for n in ("text_input", "max_tokens", "stream", *OPTIONAL_INPUTS)
    ]
    out = meta(name=names["text_output"], datatype="BYTES", shape=[-1, -1])
    return pb2.ModelMetadataResponse(
        name=model, versions=["1"], platform="ensemble", inputs=inputs, outputs=[out]
    )


def is_final(pb: Any) -> bool:
    p = pb.parameters.get(FINAL)
    return bool(p is not None and p.bool_param)


# -- decoupled streams -------------------------------------------------------------------------
class StreamWriter(Protocol):
    """What ``serve_stream`` writes to: a grpc.aio servicer context of a streaming call."""

    async def write(self, message: Any) -> None: ...


async def serve_stream(
    requests: AsyncIterator[Any],
    context: StreamWriter,
    handle: Callable[[Any], AsyncIterator[Any]],
) -> None:
    """Serve every request of one ``ModelStreamInfer`` call concurrently, as Triton does.

    ``handle(request)`` yields that request's stream messages, written to ``context`` as they
    are produced (one write at a time). Returns when the client has sent everything and every
    request is answered; leaving early (the call was cancelled) cancels the handlers. When the
    context tells that the client has already half-closed after its first request (an
    ``input_done()`` method, as the project's own gRPC server has), that request is served in
    place, without a task.
    """
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()
    write = context.write
    input_done: Callable[[], bool] | None = getattr(context, "input_done", None)

    async def run_one(request: Any) -> None:
        async for msg in handle(request):
            async with lock:
                await write(msg)

    try:
        async for request in requests:
            if not tasks and input_done is not None and input_done():
                async for msg in handle(request):
                    await write(msg)
                continue  # the iterator ends next, at once
            task = asyncio.create_task(run_one(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*tasks)
    finally:
        if tasks:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
