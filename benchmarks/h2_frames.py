"""HTTP/2 receive cost per DATA frame: one ~200-byte gRPC message per frame, fed to the lean
transport's connections with an in-memory transport (no sockets), read as the gateway reads:

- ``client listen``: a ``ClientConnection`` relaying Triton answers to a listener (the gRPC
  relay's path), one frame per ``data_received``;
- ``client read_raw``: the same answers read one by one with ``ClientCall.read_raw``;
- ``server read``: a ``ServerConnection`` whose servicer reads ModelStreamInfer requests.

Prints ns per frame (best of ``--rounds``); never asserts.

    python benchmarks/h2_frames.py [--frames 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from tritonclient.grpc import service_pb2 as pb2

from expert_router.h2 import frames as f
from expert_router.h2.client import ClientCall, ClientConnection
from expert_router.h2.grpc import message
from expert_router.h2.server import GrpcServer, ServerConnection


class Sink:
    """A transport that keeps nothing (what the connection writes is counted only)."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def answer() -> bytes:
    resp = pb2.ModelStreamInferResponse()
    out = resp.infer_response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    resp.infer_response.model_name = "ensemble"
    resp.infer_response.id = "er-123456"
    resp.infer_response.raw_output_contents.append(b"\x05\x00\x00\x00" + b" word" * 29)
    del out
    data: bytes = resp.SerializeToString()
    return data


def request() -> bytes:
    req = pb2.ModelInferRequest(model_name="ensemble", id="er-123456")
    req.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    req.raw_input_contents.append(b"\x90\x00\x00\x00" + b"p" * 144)
    data: bytes = req.SerializeToString()
    return data


def data_frames(sid: int, body: bytes, n: int) -> list[bytes]:
    frame = f.frame(f.DATA, 0, sid, message(body))
    return [frame] * n


class Drop:
    def message(self, framed: bytes, /) -> object:
        return None

    def end(self, error: object) -> None:
        pass


def _client() -> tuple[ClientConnection, ClientCall]:
    conn = ClientConnection()
    conn.connection_made(Sink())  # type: ignore[arg-type]
    conn.data_received(f.settings([]) + f.window_update(0, 1 << 30))
    call = ClientCall(conn, 1, pb2.ModelStreamInferResponse)
    conn.streams[1] = call
    conn.next_sid = 3
    head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    conn.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, f.header_block(head)))
    return conn, call


async def client_listen(n: int) -> float:
    conn, call = _client()
    call.listen(Drop())
    frames = data_frames(1, answer(), n)
    feed = conn.data_received
    t0 = time.perf_counter_ns()
    for fr in frames:
        feed(fr)
    return (time.perf_counter_ns() - t0) / n


async def client_read_raw(n: int, batch: int = 100) -> float:
    conn, call = _client()
    frames = data_frames(1, answer(), n)
    feed, read = conn.data_received, call.read_raw
    t0 = time.perf_counter_ns()
    for i in range(0, n, batch):
        for fr in frames[i : i + batch]:
            feed(fr)
        for _ in range(batch):
            await read()
    return (time.perf_counter_ns() - t0) / n


class Servicer:
    def __init__(self, done: Callable[[int], None]) -> None:
        self.done = done

    async def ModelStreamInfer(  # noqa: N802
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        count = 0
        async for _ in requests:
            count += 1
        self.done(count)
        if False:  # an async generator that answers nothing
            yield None


async def server_read(n: int, batch: int = 100) -> float:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[int] = loop.create_future()
    server = GrpcServer(Servicer(finished.set_result), pb2, "GRPCInferenceService")
    conn = ServerConnection(server)
    conn.connection_made(Sink())  # type: ignore[arg-type]
    head = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/inference.GRPCInferenceService/ModelStreamInfer"),
        (b":authority", b"x"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    conn.data_received(
        f.PREFACE
        + f.settings([])
        + f.frame(f.HEADERS, f.END_HEADERS, 1, f.header_block(head))
        + f.window_update(0, 1 << 30)
    )
    frames = data_frames(1, request(), n)
    feed = conn.data_received
    t0 = time.perf_counter_ns()
    for i in range(0, n, batch):
        for fr in frames[i : i + batch]:
            feed(fr)
        await asyncio.sleep(0)  # the servicer reads what arrived
    feed(f.frame(f.DATA, f.END_STREAM, 1, b""))
    count = await finished
    elapsed = time.perf_counter_ns() - t0
    assert count == n, count
    return elapsed / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"answer {len(answer())} B, request {len(request())} B (+5 B gRPC prefix, +9 B head)")
    for name, case in [
        ("client listen", client_listen),
        ("client read_raw", client_read_raw),
        ("server read", server_read),
    ]:
        best = min([await case(args.frames) for _ in range(args.rounds)])
        print(f"{name:16s} {best:8.0f} ns/frame (best of {args.rounds} x {args.frames:,})")


if __name__ == "__main__":
    asyncio.run(main())
