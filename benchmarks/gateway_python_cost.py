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
(hot caches: a lower bound of what the server pays). Then the same two paths **cold**: each
event, each request after ``--sleep-ms`` of sleep (medians, the cases taken in turn). A core
that idles loses its caches to whatever else the machine runs, so a server woken by one event
pays this, not the hot figure: on a shared virtual machine it is ten times higher or more,
and it is what the load benchmark's CPU per event follows. Two floors are taken cold beside
the relay: a bare relay (``data_received`` writes what it read: the byte relay of
``gateway_overhead.py --targets relay``) and a strict one (httptools de-chunks, the chunk is
framed again and written, no more). ``--stages`` also splits a cold request into its steps
(timestamps between them; the wrappers that take them add a little). ``--evict`` makes cold
colder and the same on any machine: a buffer twice the last-level cache is streamed through
the core before each item, so every step pays its misses from memory (what idling costs
depends on what else the machine runs). Prints, never asserts.

    python benchmarks/gateway_python_cost.py [--rounds 5] [--profile] [--stages] [--sleep-ms 6]
                                             [--evict]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import httptools

from _cold import CacheFlush
from expert_router.backends import BackendRequest
from expert_router.backends.base import Listener
from expert_router.backends.http1 import Http1Call
from expert_router.backends.http1_conn import Http1Connection
from expert_router.config import gateway_config_from_experts
from expert_router.gateway import cycle as cycle_module
from expert_router.gateway import http_ingress
from expert_router.gateway.app import Gateway
from expert_router.gateway.cycle import Cycle
from expert_router.gateway.http_front import HttpFrontend

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


class Idle:
    """What comes before each cold item: ``sleep_s`` of sleep, then (``evict``) the caches
    flushed (``_cold.CacheFlush``), which leaves none of the gateway's code or data cached."""

    def __init__(self, sleep_s: float, evict: bool) -> None:
        self.sleep_s = sleep_s
        self.flush = CacheFlush() if evict else None

    def __call__(self) -> None:
        time.sleep(self.sleep_s)
        if self.flush is not None:
            self.flush()


def _cold(items: int, idle: Idle, cases: dict[str, Callable[[int], object]]) -> dict[str, float]:
    """Median seconds of each case's ``run(i)`` for ``i`` in ``range(items)``, each call after
    ``idle()``; the cases take turns, so that they meet the same machine."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(items):
        for name, run in cases.items():
            idle()
            t = time.perf_counter()
            run(i)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


class BareRelay:
    """The floor of any relay: what it read, written (``_byte_relay.py``'s path)."""

    def __init__(self, out: NullTransport) -> None:
        self.out = out

    def data_received(self, data: bytes) -> None:
        self.out.write(data)


class StrictFloor:
    """The least a relay that reads the upstream's framing does per read: httptools
    de-chunks (into a list's ``append``: no Python per piece), the body is framed again and
    written (``_byte_relay.py --strict``'s path)."""

    def __init__(self, out: NullTransport, head: bytes) -> None:
        self.out = out
        self.parts: list[bytes] = []
        self.parser = httptools.HttpResponseParser(SimpleNamespace(on_body=self.parts.append))
        self.parser.feed_data(head)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        parts = self.parts
        body = b"".join(parts)
        parts.clear()
        self.out.write(b"%x\r\n%b\r\n" % (len(body), body))


class CycleCount:
    """``with CycleCount() as left:`` counts in ``left.objects`` what the block leaves in
    reference cycles: objects freed only by the cyclic collector, whose collections under
    load walk every request in flight."""

    objects = 0

    def __enter__(self) -> CycleCount:
        self.collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.objects = gc.collect()
        if self.collecting:
            gc.enable()


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


STEPS = (  # each mark, and the step that ends there (it starts at the mark before; "in" first)
    ("head_done", "head parsed to its last header"),
    ("head_checked", "head checks (on_headers_complete)"),
    ("json", "body read, request dispatched"),
    ("json_done", "body JSON (parse_body)"),
    ("classify", "to the classifier"),
    ("classify_done", "classification (predict)"),
    ("reserve_done", "a replica reserved"),
    ("open", "the upstream request built and opened"),
    ("first", "the first event, with the response head"),
    ("rest", "the next 14 events"),
    ("finish", "the last event and the end"),
    ("finish_done", "the exit: release, counts, access-log test"),
    ("out", "back out of data_received"),
)


class _Marks:
    """Timestamps of one request's steps, taken by wrappers put around the steps' functions
    (``--stages``; put back after)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.undo: list[tuple[Any, str, Any]] = []

    def mark(self, name: str) -> None:
        self.at[name] = time.perf_counter()

    def wrap(self, owner: Any, attr: str, before: str | None, after: str | None) -> None:
        fn = getattr(owner, attr)
        self.undo.append((owner, attr, owner.__dict__.get(attr)))

        def timed(*args: Any, **kw: Any) -> Any:
            if before:
                self.mark(before)
            out = fn(*args, **kw)
            if after:
                self.mark(after)
            return out

        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, old in reversed(self.undo):
            if old is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


class MarkingBackend(InstantBackend):
    def __init__(self, marks: _Marks) -> None:
        self.marks = marks

    def open(self, req: BackendRequest, listener: Listener) -> InstantCall:
        mark = self.marks.mark
        mark("open")
        listener.on_head(200, "text/event-stream")
        listener.on_data(EVENT)
        mark("first")
        for _ in range(EVENTS - 2):
            listener.on_data(EVENT)
        mark("rest")
        listener.on_end(EVENT + b"data: [DONE]\n\n")
        return InstantCall()


def _stages(gw: Gateway, idle: Idle, items: int) -> list[tuple[str, float]]:
    """Median seconds of each step of a request served after ``idle()`` (``STEPS``)."""
    marks = _Marks()
    assert gw.fleet is not None
    for replica in gw.fleet.replicas.values():
        replica.backend = MarkingBackend(marks)
    conn_type = http_ingress.HttpConnection
    marks.wrap(conn_type, "on_headers_complete", "head_done", "head_checked")
    marks.wrap(http_ingress, "parse_body", "json", "json_done")
    marks.wrap(gw.classifier, "predict", "classify", "classify_done")
    marks.wrap(gw.fleet, "reserve", None, "reserve_done")
    marks.wrap(cycle_module.Cycle, "_finish", "finish", "finish_done")
    try:
        conn = conn_type(HttpFrontend(gw, gw.config.server))
        conn.connection_made(NullTransport())  # type: ignore[arg-type]
        order = ["in", *(name for name, _ in STEPS)]
        times: list[list[float]] = []
        for i in range(items):
            idle()
            marks.at.clear()
            marks.mark("in")
            conn.data_received(_request(i))
            marks.mark("out")
            at = [marks.at[name] for name in order]
            times.append([end - start for start, end in pairwise(at)])
    finally:
        marks.restore()
    columns = zip(*times, strict=True)
    return [(what, statistics.median(col)) for (_, what), col in zip(STEPS, columns, strict=True)]


async def measure(
    rounds: int,
    profile: bool,
    idle: Idle,
    cold_items: int = 300,
    stages: bool = False,
) -> dict[str, float]:
    config = gateway_config_from_experts({"*": ["http://127.0.0.1:9"]})
    gw = Gateway(config, probes=False)
    await gw.start()
    try:
        assert gw.fleet is not None
        http1 = next(iter(gw.fleet.replicas.values())).backend  # the pooled-connection owner
        for replica in gw.fleet.replicas.values():
            replica.backend = InstantBackend()

        # relay: a Cycle past its first byte, fed by a pooled upstream connection
        sink = http_ingress.HttpConnection(HttpFrontend(gw, config.server))
        out = NullTransport(counting=True)
        sink.connection_made(out)  # type: ignore[arg-type]
        sink.responding = True

        class Streamed:
            route, text, stream = "/v1/chat/completions", "", True

        cycle = Cycle(gw, Streamed(), sink, 0.0)  # type: ignore[arg-type]
        cycle.sent = True
        upstream = Http1Connection(http1)  # type: ignore[arg-type]
        upstream.connection_made(NullTransport())  # type: ignore[arg-type]
        upstream.start(b"", cycle, Http1Call())
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        upstream.data_received(head)
        chunk = b"%x\r\n%b\r\n" % (len(EVENT), EVENT)
        n = 100_000

        def relay() -> None:
            for _ in range(n):
                upstream.data_received(chunk)

        relay()
        _check(out, n)
        per_event = _best(rounds, n, relay)

        # request: the whole lifecycle on one keep-alive client connection
        conn = http_ingress.HttpConnection(HttpFrontend(gw, config.server))
        client = NullTransport(counting=True)
        conn.connection_made(client)  # type: ignore[arg-type]
        requests = [_request(i) for i in range(2000)]

        def serve() -> None:
            for r in requests:
                conn.data_received(r)

        serve()
        _check(client, EVENTS * len(requests))
        per_request = _best(rounds, len(requests), serve)
        with CycleCount() as left:
            serve()
        garbage = left.objects / len(requests)
        bare, strict = BareRelay(NullTransport()), StrictFloor(NullTransport(), head)
        cold = _cold(
            cold_items,
            idle,
            {
                "cold_relay_us": lambda i: upstream.data_received(chunk),
                "cold_strict_floor_us": lambda i: strict.data_received(chunk),
                "cold_bare_floor_us": lambda i: bare.data_received(chunk),
                "cold_request_us": lambda i: conn.data_received(requests[i]),
            },
        )
        steps = _stages(gw, idle, cold_items) if stages else []
        if profile:
            prof = cProfile.Profile()
            prof.runcall(serve)
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return (
            {"relay_us": per_event * 1e6, "request_us": per_request * 1e6}
            | {"garbage_per_request": garbage}
            | {name: seconds * 1e6 for name, seconds in cold.items()}
            | {f"step: {what}": seconds * 1e6 for what, seconds in steps}
        )
    finally:
        await gw.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="cProfile one pass of the requests")
    p.add_argument("--sleep-ms", type=float, default=6.0, help="idle before each cold item")
    p.add_argument("--stages", action="store_true", help="split a cold request into its steps")
    p.add_argument("--evict", action="store_true", help="flush the caches before each cold item")
    args = p.parse_args()
    idle = Idle(args.sleep_ms / 1e3, args.evict)
    r = asyncio.run(measure(args.rounds, args.profile, idle, stages=args.stages))
    print(f"relay:   {r['relay_us']:.2f} us of Python per relayed event (best of {args.rounds})")
    print(
        f"request: {r['request_us']:.1f} us per request of {EVENTS} events, whole lifecycle"
        f" ({r['request_us'] / EVENTS:.2f} us per event)"
    )
    flushed = " and the caches flushed" if args.evict else ""
    print(f"cold, after {args.sleep_ms:g} ms idle{flushed} each (medians of 300, in turn):")
    print(
        f"  relayed event: {r['cold_relay_us']:.1f} us (strict floor: httptools + framing "
        f"{r['cold_strict_floor_us']:.1f} us; bare relay {r['cold_bare_floor_us']:.1f} us)"
    )
    print(f"  request:       {r['cold_request_us']:.1f} us, whole lifecycle")
    print(f"garbage: {r['garbage_per_request']:.2f} objects per request left in reference cycles")
    if args.stages:
        print("a cold request, step by step (medians of 300, timestamps between the steps):")
        for name, us in r.items():
            if name.startswith("step: "):
                print(f"  {us:7.1f} us  {name[6:]}")


if __name__ == "__main__":
    main()
