"""The gateway's own Python per gRPC request, with no socket and no kernel: the gRPC twin of
``gateway_python_cost.py``.

It drives the real objects in-process, in a running event loop, with transports that drop
what is written: a Triton client's ``ModelStreamInfer`` call (HEADERS as grpc-core encodes
them, one ``ModelInferRequest``, END_STREAM) fed to the ingress's ``ServerConnection`` ->
the servicer -> ``Cycle`` (classify with the bundled router, route) -> the Triton backend,
whose request leaves on an upstream ``ClientConnection``; that connection is then fed what a
Triton replica answers (response HEADERS, ``EVENTS`` messages each in its own read, the last
with the ``grpc-status: 0`` trailers), which is relayed to the client undecoded, and the call
ends with its trailers. The loop turns between the reads, as it would between packets: what
the event loop does for the call (tasks, futures, callbacks) is counted with the rest.

Best of ``--rounds`` passes over ``--requests`` calls (hot caches: a lower bound of what the
server pays), the relay of one call's messages alone, and the objects a call leaves in
reference cycles (freed only by the cyclic collector, whose collections under load scan every
call in flight: it should be none); ``--profile`` prints cProfile's top of one pass. Prints,
never asserts.

    python benchmarks/grpc_python_cost.py [--rounds 5] [--requests 2000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from hpack import Encoder
from tritonclient.grpc import service_pb2 as pb2

from expert_router.backends.triton_grpc import TritonGrpcBackend
from expert_router.config import gateway_config_from_experts
from expert_router.gateway.app import Gateway
from expert_router.gateway.grpc_ingress import IngressServicer
from expert_router.grpc_host import SERVICE
from expert_router.h2 import frames as f
from expert_router.h2.client import ClientConnection
from expert_router.h2.grpc import message
from expert_router.h2.server import GrpcServer, ServerConnection
from expert_router.wire import kserve
from expert_router.wire import triton as tw
from gateway_python_cost import CycleCount
from h2_frames import Sink

SORT = "tottime"
EVENTS = 16  # the answer of gateway_overhead.py's default (max_tokens 16)
PROMPT = (
    "Explain how a transformer language model turns a prompt into tokens and predicts the next."
)
MODEL = "ensemble"
_CLIENT_HEADERS = [  # what grpc-core sends, in its order
    (":scheme", "http"),
    (":method", "POST"),
    (":authority", "127.0.0.1:8001"),
    (":path", "/inference.GRPCInferenceService/ModelStreamInfer"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python-asyncio/1.66.0 grpc-c/43.0.0 (linux; chttp2)"),
    ("grpc-accept-encoding", "identity, deflate, gzip"),
]


class CountingTransport(Sink):
    """Drops what is written, counting the HTTP/2 DATA frames in it while ``counting``."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.frames = 0

    def write(self, data: bytes) -> None:
        if self.counting:
            pos = 0
            while pos + 9 <= len(data):
                hi, lo, kind, _, _ = f.HEAD.unpack_from(data, pos)
                self.frames += kind == f.DATA
                pos += 9 + (hi << 16 | lo)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def _answer() -> list[bytes]:
    """The replica's answer messages (framed), the last one final."""
    names = tw.TritonNames(MODEL)
    out = []
    for i in range(EVENTS):
        final = True if i == EVENTS - 1 else None
        resp = kserve.text_response(pb2, MODEL, "1", "tok", names, final=final)
        stream = pb2.ModelStreamInferResponse(infer_response=resp)
        out.append(message(stream.SerializeToString()))
    return out


def _request(i: int) -> bytes:
    req = tw.TritonRequest(f"{PROMPT} (user {i}, request 3)", EVENTS, min_length=EVENTS)
    return message(
        kserve.infer_request(pb2, req, tw.TritonNames(MODEL), str(i)).SerializeToString()
    )


async def _turn(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def measure(rounds: int, requests: int, profile: bool) -> dict[str, float]:
    config = gateway_config_from_experts({"*": [f"grpc://127.0.0.1:9?model={MODEL}"]})
    gw = Gateway(config, probes=False)
    await gw.start()
    try:
        assert gw.fleet is not None
        backend = next(iter(gw.fleet.replicas.values())).backend
        assert isinstance(backend, TritonGrpcBackend)
        channel = backend.channel()
        up = ClientConnection(channel.limits)
        up_out = CountingTransport()
        up.connection_made(up_out)  # type: ignore[arg-type]
        wide = [(f.INITIAL_WINDOW_SIZE, f.MAX_WINDOW)]  # the peers never run out of window
        grant = f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW)
        up.data_received(f.settings([(f.MAX_CONCURRENT_STREAMS, 1 << 30), *wide]) + grant)
        channel._conns.append(up)

        server = GrpcServer(IngressServicer(gw), pb2, SERVICE)
        conn = ServerConnection(server)
        client = CountingTransport()
        conn.connection_made(client)  # type: ignore[arg-type]
        conn.data_received(f.PREFACE + f.settings(wide) + grant)

        encoder = Encoder()  # grpc-core's first block fills the table; the rest refer to it
        blocks = [encoder.encode(_CLIENT_HEADERS), encoder.encode(_CLIENT_HEADERS)]
        head = f.header_block([(b":status", b"200"), (b"content-type", b"application/grpc")])
        tail = f.header_block([(b"grpc-status", b"0")])
        answer = _answer()
        bodies = [_request(i) for i in range(requests)]
        state: dict[str, Any] = {"sid": 1, "took": 0.0}
        phases = [0.0, 0.0, 0.0]
        clock = time.perf_counter

        def frames(i: int, usid: int) -> tuple[bytes, bytes, list[bytes], bytes]:
            """Call ``i``'s bytes from the client, and its upstream call's (stream ``usid``)
            from the replica: the head with the first message, the next ones, the last with
            the trailers."""
            sid = 2 * i + 1
            block = blocks[min(i, 1)]
            call = f.frame(f.HEADERS, f.END_HEADERS, sid, block)
            call += f.frame(f.DATA, f.END_STREAM, sid, bodies[i % len(bodies)])
            first = f.frame(f.HEADERS, f.END_HEADERS, usid, head) + f.frame(
                f.DATA, 0, usid, answer[0]
            )
            rest = [f.frame(f.DATA, 0, usid, msg) for msg in answer[1:-1]]
            last = f.frame(f.DATA, 0, usid, answer[-1])
            last += f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, usid, tail)
            return call, first, rest, last

        async def one(i: int, call: bytes, first: bytes, rest: list[bytes], last: bytes) -> None:
            t0 = clock()
            conn.data_received(call)
            await _turn(2)
            if up.next_sid - 2 != int.from_bytes(first[5:9], "big"):
                raise RuntimeError("the upstream call is not on the stream expected")
            t1 = clock()
            up.data_received(first)
            for frame in rest:
                up.data_received(frame)
            t2 = clock()
            up.data_received(last)
            await _turn(3)
            t3 = clock()
            phases[0] += t1 - t0
            phases[1] += t2 - t1
            phases[2] += t3 - t2

        async def run() -> None:
            base, ubase = state["sid"] // 2, up.next_sid  # the calls' stream ids, in order
            work = [frames(base + i, ubase + 2 * i) for i in range(requests)]
            state["sid"] += 2 * requests
            phases[:] = [0.0, 0.0, 0.0]
            t = clock()
            for i, w in enumerate(work):
                await one(base + i, *w)
            state["took"] = clock() - t

        client.counting = True
        await run()
        if client.frames != EVENTS * requests:
            raise RuntimeError(
                f"{client.frames} messages reached the client, not {EVENTS * requests}"
            )
        if conn.streams or up.streams:
            raise RuntimeError(f"calls left open: {len(conn.streams)} in, {len(up.streams)} up")
        client.counting = False
        with CycleCount() as left:  # what the calls leave to the cyclic collector
            await run()
        garbage = left.objects / requests
        best = float("inf")
        split = [0.0, 0.0, 0.0]
        for _ in range(rounds):
            await run()
            took = state["took"] / requests
            if took < best:
                best, split = took, [p / requests for p in phases]
        # relay: one call past its first message, fed message after message
        call, first, _, _ = frames(state["sid"] // 2, up.next_sid)
        state["sid"] += 2  # this call stays open
        conn.data_received(call)
        await _turn(2)
        up.data_received(first)
        usid = up.next_sid - 2
        frame = f.frame(f.DATA, 0, usid, answer[1])
        feed = up.data_received
        n = 100_000
        relay = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(n):
                feed(frame)
            relay = min(relay, (time.perf_counter() - t) / n)
        # the loop turns alone, the floor under every request of this harness
        t = time.perf_counter()
        for _ in range(requests):
            await _turn(5)
        turns = (time.perf_counter() - t) / requests
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            await run()
            prof.disable()
            pstats.Stats(prof).sort_stats(SORT).print_stats(40)
        return {
            "request_us": best * 1e6,
            "garbage_per_call": garbage,
            "relay_us": relay * 1e6,
            "turns_us": turns * 1e6,
            "open_us": split[0] * 1e6,
            "events_us": split[1] * 1e6,
            "end_us": split[2] * 1e6,
        }
    finally:
        await gw.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--profile", action="store_true", help="cProfile one pass of the calls")
    args = p.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    r = runner(measure(args.rounds, args.requests, args.profile))
    print(f"relay:   {r['relay_us']:.2f} us of Python per relayed message (best of {args.rounds})")
    print(f"garbage: {r['garbage_per_call']:.2f} objects per call left in reference cycles")
    print(
        f"request: {r['request_us']:.1f} us per gRPC call of {EVENTS} messages, whole lifecycle"
        f" (best of {args.rounds})"
    )
    print(
        f"  the call read and its upstream call opened: {r['open_us']:.1f} us;"
        f" {EVENTS - 1} messages relayed: {r['events_us']:.1f} us"
        f" ({r['events_us'] / (EVENTS - 1):.2f} us each); the last one and the end:"
        f" {r['end_us']:.1f} us; the loop's 5 empty turns take {r['turns_us']:.1f} us"
    )


if __name__ == "__main__":
    main()
