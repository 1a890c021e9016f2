"""A deterministic upstream for the overhead benchmark: the calibration's paced reference server.

Each request gets its first token exactly ``--ttft-ms`` after the server RECEIVES it, then one
token every ``--tpot-ms`` (per-request timers, no batch iterations), in OpenAI SSE format, so a
proxy's added first-token latency is not hidden under an emulator's batching phase. The first
token's event carries when the request arrived and when that token left (``paced_ns``), for
the load generator to tell the legs of a first token apart. Serves
``--fleet`` ports (one process, one event loop); ``--cpus`` pins it with ``sched_setaffinity``.
On SIGTERM it prints how late tokens left versus their deadlines (one JSON line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from expert_router.bench.calibrate import paced_app  # noqa: E402
from expert_router.bench.workers import run_loop  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True, help="first port; the fleet uses port+i")
    p.add_argument("--fleet", type=int, default=1)
    p.add_argument("--ttft-ms", type=float, default=5.0)
    p.add_argument("--tpot-ms", type=float, default=500.0)
    p.add_argument("--cpus", default=None, help="comma-separated CPU ids to pin to")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace, lags: list[int]) -> None:
    from aiohttp import web

    runner = web.AppRunner(paced_app(args.ttft_ms, args.tpot_ms, lags, stamp=True), access_log=None)
    await runner.setup()
    for i in range(args.fleet):
        await web.TCPSite(runner, "127.0.0.1", args.port + i, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    lags: list[int] = []
    run_loop(serve(args, lags))
    if lags:
        ms = sorted(v / 1e6 for v in lags)
        summary = {
            "tokens": len(ms),
            "lag_mean_ms": sum(ms) / len(ms),
            "lag_p50_ms": ms[len(ms) // 2],
            "lag_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        }
        print(json.dumps({"paced_upstream": summary}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
