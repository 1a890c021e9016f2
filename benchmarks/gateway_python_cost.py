"""The gateway's own Python per request and per relayed event, with no socket and no kernel.

``benchmarks/gateway_overhead.py`` measures the whole proxy process (kernel, event loop,
interpreter and our code together) against nginx, on a shared machine whose figures move
from run to run. This one isolates the part our code owns, so that a change to the hot path
can be judged on its own: it drives the real objects in-process with a transport that drops
what is written.

- **relay**: one upstream chunk (a 109-byte SSE event, chunk-framed) fed to
  ``Http1Connection.data_received`` -> httptools -> ``Cycle`` -> the HTTP/1.1 sink's
  ``send`` -> ``transport.write``: the path every relayed event takes.
- **request**: a whole chat request (head and JSON body) fed to ``HttpConnection`` ->
  parse, check, classify (the bundled router), route, open a backend that answers at once
  with 16 events -> relay -> end, metrics, release: one request's lifecycle, whole.

Each part's warm-up pass checks that every event reached the client. Best of ``--rounds``
(hot caches: a lower bound of what the server pays). Prints, never asserts.

    python benchmarks/gateway_python_cost.py [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
from typing import Any

from expert_router.backends import BackendRequest
from expert_router.backends.base import Listener
from expert_router.backends.http1_conn import Http1Connection
from expert_router.config import gateway_config_from_experts
from expert_router.gateway.app import Gateway
from expert_router.gateway.cycle import Cycle
from expert_router.gateway.http_front import HttpFrontend
from expert_router.gateway.http_ingress import HttpConnection

EVENT = (
    b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"tok"}}]}\n\n'
)
EVENTS = 16  # the answer of gateway_overhead.py's default (max_tokens 16)
PROMPT = (
    "Explain how a transformer language model turns a prompt into tokens and predicts the next."
)


class NullTransport:
    """Drops what is written (counting the events while ``counting``); never full, never
    closing."""

    def __init__(self, counting: bool = False) -> None:
        self.counting = counting
        self.events = 0

    def write(self, data: bytes) -> None:
        if self.counting:
            self.events += data.count(b"data: {")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass


class InstantCall:
    def resume(self) -> None:
        pass

    def cancel(self) -> None:
        pass


class InstantBackend:
    """Answers every request at once: a head, ``EVENTS`` events, the end."""

    def open(self, req: BackendRequest, listener: Listener) -> InstantCall:
        listener.on_head(200, "text/event-stream")
        for _ in range(EVENTS - 1):
            listener.on_data(EVENT)
        listener.on_end(EVENT + b"data: [DONE]\n\n")
        return InstantCall()

    async def probe(self, path: str, timeout_s: float) -> int:
        return 200

    async def aclose(self) -> None:
        pass


def _best(rounds: int, n: int, run: Any) -> float:
    """Seconds per item, best of ``rounds`` timed runs of ``run()`` over ``n`` items."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def _check(out: NullTransport, events: int) -> None:
    """The warm-up pass relayed every event (or there is nothing to time); stop counting."""
    if out.events != events:
        raise RuntimeError(f"{out.events} events reached the client, not {events}")
    out.counting = False


def _request(i: int) -> bytes:
    body = json.dumps(
        {
            "model": "m",
            "stream": True,
            "max_tokens": EVENTS,
            "messages": [{"role": "user", "content": f"{PROMPT} (user {i}, request 3)"}],
        }
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )


async def measure(rounds: int, profile: bool) -> dict[str, float]:
    config = gateway_config_from_experts({"*": ["http://127.0.0.1:9"]})
    gw = Gateway(config, probes=False)
    await gw.start()
    try:
        assert gw.fleet is not None
        http1 = next(iter(gw.fleet.replicas.values())).backend  # the pooled-connection owner
        for replica in gw.fleet.replicas.values():
            replica.backend = InstantBackend()

        # relay: a Cycle past its first byte, fed by a pooled upstream connection
        sink = HttpConnection(HttpFrontend(gw, config.server))
        out = NullTransport(counting=True)
        sink.connection_made(out)  # type: ignore[arg-type]
        sink.responding = True

        class Streamed:
            route, text, stream = "/v1/chat/completions", "", True

        cycle = Cycle(gw, Streamed(), sink, 0.0)  # type: ignore[arg-type]
        cycle.sent = True
        upstream = Http1Connection(http1)  # type: ignore[arg-type]
        upstream.connection_made(NullTransport())  # type: ignore[arg-type]
        upstream.start(b"", cycle)
        upstream.data_received(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%b\r\n" % (len(EVENT), EVENT)
        n = 100_000

        def relay() -> None:
            for _ in range(n):
                upstream.data_received(chunk)

        relay()
        _check(out, n)
        per_event = _best(rounds, n, relay)

        # request: the whole lifecycle on one keep-alive client connection
        conn = HttpConnection(HttpFrontend(gw, config.server))
        client = NullTransport(counting=True)
        conn.connection_made(client)  # type: ignore[arg-type]
        requests = [_request(i) for i in range(2000)]

        def serve() -> None:
            for r in requests:
                conn.data_received(r)

        serve()
        _check(client, EVENTS * len(requests))
        per_request = _best(rounds, len(requests), serve)
        if profile:
            prof = cProfile.Profile()
            prof.runcall(serve)
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return {"relay_us": per_event * 1e6, "request_us": per_request * 1e6}
    finally:
        await gw.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="cProfile one pass of the requests")
    args = p.parse_args()
    r = asyncio.run(measure(args.rounds, args.profile))
    print(f"relay:   {r['relay_us']:.2f} us of Python per relayed event (best of {args.rounds})")
    print(
        f"request: {r['request_us']:.1f} us per request of {EVENTS} events, whole lifecycle"
        f" ({r['request_us'] / EVENTS:.2f} us per event)"
    )


if __name__ == "__main__":
    main()
