"""Emulator capacity: streamed tokens/s of one emulator process serving 8 experts, and batch-1
TPOT of every preset beside its physical floor. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/emulator_capacity.py [--streams 192,320,400] [--seconds 10]

The emulator runs in its own process pinned to CPU 0 (``expert-router emulate --fleet 8``,
fixed TPOT 20 ms); this process is the load generator, pinned to CPU 1, with uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

TPOT_MS = 20.0


def preset_table() -> None:
    from expert_router.emulator.catalog import PRESETS

    print("\nBatch-1 decode step (TPOT) of each preset vs the physical floor")
    print(f"{'preset':16} {'weights/GPU GB':>14} {'floor ms':>9} {'model ms':>9} {'ratio':>6}"
          f" {'TTFT(335) ms':>13}")  # fmt: skip
    for name, p in PRESETS.items():
        m = p.step_model()
        floor, tpot = m.lower_bound_tpot(), m.decode_time(1, 335)
        print(
            f"{name:16} {m.weight_bytes / 1e9:14.1f} {floor * 1e3:9.2f} {tpot * 1e3:9.2f}"
            f" {tpot / floor:6.2f} {m.prefill_time(335) * 1e3:13.1f}"
        )


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def user(
    s: aiohttp.ClientSession,
    url: str,
    stop: float,
    window: tuple[float, float],
    acc: dict[str, Any],
) -> None:
    body = {"prompt": "benchmark prompt", "max_tokens": 300, "ignore_eos": True, "stream": True}
    while time.perf_counter() < stop:
        first = last = None
        n = 0
        async with s.post(url + "/v1/completions", json=body) as resp:
            async for chunk in resp.content.iter_any():
                t = time.perf_counter()
                k = chunk.count(b'"text"')
                if not k:
                    continue
                if first is None:
                    first = t
                    k -= 1
                    n = 1
                last = t
                n += k
                if window[0] <= t < window[1]:
                    acc["tokens"] += k + (n == 1)
        if first is not None and last is not None and n > 1 and window[0] <= first:
            acc["tpots"].append((last - first) / (n - 1))


async def load(urls: list[str], streams: int, seconds: float, pid: int) -> dict[str, Any]:
    acc: dict[str, Any] = {"tokens": 0, "tpots": []}
    now = time.perf_counter()
    warm = 2.0
    window = (now + warm, now + warm + seconds)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        cpu0 = None

        async def mark() -> None:
            nonlocal cpu0
            await asyncio.sleep(warm)
            cpu0 = cpu_seconds(pid)
            acc["own0"] = cpu_seconds(os.getpid())

        marker = asyncio.ensure_future(mark())
        tasks = [user(s, urls[i % len(urls)], window[1], window, acc) for i in range(streams)]
        done_at = None

        async def timer() -> None:
            nonlocal done_at
            await asyncio.sleep(warm + seconds)
            done_at = cpu_seconds(pid)
            acc["own"] = (cpu_seconds(os.getpid()) - acc["own0"]) / seconds

        await asyncio.gather(*tasks, timer(), marker)
    acc["cpu"] = ((done_at or 0) - (cpu0 or 0)) / seconds
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", default="192,320,400,640")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    preset_table()
    cmd = [sys.executable, "-m", "expert_router.cli.main", "emulate", "--preset", "cpu-tiny",
           "--fleet", "8", "--port", "0", "--tpot-ms", str(TPOT_MS), "--ttft-ms", str(TPOT_MS),
           "--max-batch", "128", "--kv-tokens", "1000000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2:
            os.sched_setaffinity(proc.pid, {cores[0]})
            os.sched_setaffinity(0, {cores[1]})
        urls: list[str] = []
        assert proc.stdout is not None
        while len(urls) < 8:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("emulator exited early")
            urls += re.findall(r"http://\S+", line)
        print(f"\nOne emulator process, 8 experts, fixed TPOT {TPOT_MS} ms, cores {cores}")
        print(f"{'streams':>8} {'offered tok/s':>14} {'streamed tok/s':>15} {'TPOT ms':>8}"
              f" {'TPOT err':>9} {'emulator CPU':>13} {'client CPU':>11}")  # fmt: skip
        runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]]
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        for n in (int(x) for x in args.streams.split(",")):
            acc = runner(load(urls, n, args.seconds, proc.pid))
            rate = acc["tokens"] / args.seconds
            tpot = statistics.mean(acc["tpots"]) * 1e3 if acc["tpots"] else float("nan")
            print(
                f"{n:8d} {n * 1000 / TPOT_MS:14.0f} {rate:15.0f} {tpot:8.2f}"
                f" {100 * (tpot / TPOT_MS - 1):+8.1f}% {100 * acc['cpu']:12.0f}%"
                f" {100 * acc['own']:10.0f}%"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
