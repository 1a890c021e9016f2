"""The client's self-check: a paced reference server with exact TTFT/TPOT, and the error report.

The reference server (its own process and event loop) sends token ``k`` of every request at
``t_recv + ttft + k * tpot`` on absolute deadlines and tells the client ``t_recv`` in a
``Server-Timing: calib-recv`` header, so every measured time can be compared with its nominal.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from expert_router.bench import metrics as m
from expert_router.bench.records import RequestRecord

RECV = "calib-recv"
_CHUNK = (
    b'data: {"object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":" the"}}]}\n\n'
)
_TEXT_CHUNK = b'data: {"object":"text_completion","choices":[{"index":0,"text":" the"}]}\n\n'


def _stamped(chunk: bytes, t_recv: int) -> bytes:
    """``chunk``'s event with ``"paced_ns": [t_recv, now]`` as its first field."""
    stamp = b'data: {"paced_ns":[%d,%d],' % (t_recv, time.perf_counter_ns())
    return chunk.replace(b"data: {", stamp, 1)


def paced_app(
    ttft_ms: float, tpot_ms: float, lags: list[int] | None = None, stamp: bool = False
) -> Any:
    """The paced server's ``aiohttp.web.Application``: token ``k`` of every request leaves at
    ``t_recv + ttft + k * tpot`` (per-request timers), plus ``/health`` and ``/v1/models``.
    Each token's lag behind its deadline (ns) is appended to ``lags`` when given. With
    ``stamp``, the first token's event carries ``"paced_ns": [t_recv, t_sent]`` (``perf_counter``,
    the machine's one monotonic clock), so that a client on the same machine can split its
    first-token time into the way there, the server's own time and the way back, through any
    proxy that relays the events as they are."""
    from aiohttp import web

    ttft_ns, tpot_ns = int(ttft_ms * 1e6), int(tpot_ms * 1e6)
    models = json.dumps({"object": "list", "data": [{"id": "paced", "object": "model"}]})

    async def stream(request: web.Request, chunk: bytes) -> web.StreamResponse:
        t_recv = time.perf_counter_ns()
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Server-Timing": f"{RECV};dur={t_recv / 1e6:.4f}",
            }
        )
        await resp.prepare(request)
        for k in range(n):
            deadline = t_recv + ttft_ns + k * tpot_ns
            delay = deadline - time.perf_counter_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            if lags is not None:
                lags.append(time.perf_counter_ns() - deadline)
            await resp.write(_stamped(chunk, t_recv) if stamp and k == 0 else chunk)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        return await stream(request, _CHUNK)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await stream(request, _TEXT_CHUNK)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def list_models(request: web.Request) -> web.Response:
        return web.Response(text=models, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", list_models)
    return app


def _server_main(conn: Connection, ttft_ms: float, tpot_ms: float) -> None:
    from aiohttp import web

    from expert_router.bench.workers import run_loop

    lags: list[int] = []

    async def main() -> None:
        runner = web.AppRunner(paced_app(ttft_ms, tpot_ms, lags), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        conn.send_bytes(json.dumps({"url": f"http://127.0.0.1:{port}"}).encode())
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(conn.fileno())
        await runner.cleanup()

    run_loop(main())
    arr = np.asarray(lags, dtype=np.float64) / 1e6
    stats = {"n": int(arr.size), "mean_ms": float(arr.mean()) if arr.size else None}
    if arr.size:
        stats["p99_ms"] = float(np.percentile(arr, 99))
    try:
        conn.recv_bytes()
        conn.send_bytes(json.dumps({"server_lag": stats}).encode())
    except (EOFError, OSError):
        pass


class ReferenceServer:
    """Handle of a running reference server process."""

    def __init__(self, url: str, conn: Connection) -> None:
        self.url = url
        self._conn = conn
        self.server_lag: dict[str, Any] = {}


@contextmanager
def reference_server(ttft_ms: float, tpot_ms: float) -> Iterator[ReferenceServer]:
    """Run the paced reference server in its own process until the block exits."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_server_main, args=(child, ttft_ms, tpot_ms), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError("reference server did not start within 60 s")
        srv = ReferenceServer(json.loads(parent.recv_bytes())["url"], parent)
        yield srv
        parent.send_bytes(b"stop")
        if parent.poll(30):
            srv.server_lag = json.loads(parent.recv_bytes()).get("server_lag", {})
    finally:
        parent.close()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def timing_errors(
    records: Sequence[RequestRecord], *, ttft_ms: float, tpot_ms: float
) -> dict[str, Any]:
    """TTFT and TPOT measured minus nominal (ms), and each token's delivery lag behind its
    nominal send time for records carrying the server's receipt time ``server_timing[calib-recv]``
    (seconds since run start, see ``relative_recv``)."""
    ok = m.ok(records)
    ttft_err = [(v - ttft_ms / 1e3) * 1e3 for v in m.ttfts(ok)]
    tpot_err = [(v - tpot_ms / 1e3) * 1e3 for v in m.tpots(ok)]
    lags: list[np.ndarray] = []
    request_lag: list[float] = []
    for r in ok:
        recv = r.server_timing.get(RECV)
        if recv is None or not r.token_times:
            continue
        request_lag.append((recv - r.start) * 1e3)
        nominal = recv + (ttft_ms + tpot_ms * np.arange(len(r.token_times))) / 1e3
        lags.append((np.asarray(r.token_times) - nominal) * 1e3)
    lag = np.concatenate(lags) if lags else np.zeros(0)
    span = max((r.end for r in records), default=0.0) - min((r.start for r in records), default=0.0)
    return {
        "requests": len(records),
        "errors": sum(r.status == "error" for r in records),
        "ttft_error_ms": m.describe(ttft_err),
        "tpot_error_ms": m.describe(tpot_err),
        "request_lag_ms": m.describe(request_lag),
        "token_lag_ms": m.describe(lag.tolist()),
        "events_per_s": sum(r.output_tokens for r in records) / span if span > 0 else None,
        "peak_events_per_s": max(m.time_buckets(records, 1.0)["tokens_per_s"], default=None),
    }


def relative_recv(records: Sequence[RequestRecord], t0_ns: int) -> None:
    """Turn the server's absolute receipt time (ms of ``perf_counter``) into seconds since the
    run start ``t0_ns``, in place."""
    for r in records:
        if RECV in r.server_timing:
            r.server_timing[RECV] = r.server_timing[RECV] / 1e3 - t0_ns / 1e9
