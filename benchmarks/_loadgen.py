"""Streaming load generator, run as its OWN process so it never shares the measured event loop.

N users loop over streaming requests; first-token latency is timed with perf_counter_ns. After
a warm-up it measures a window: requests started in the window, events received in it, and the
CPU seconds and resident memory of the watched processes (read from /proc). Prints one JSON line.
A new wire protocol is one class with ``request()`` and an entry in ``PROTOCOLS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from expert_router.bench.workers import run_loop

PROMPTS = (
    "Explain how a transformer language model turns a prompt into tokens and predicts the next.",
    "Write a short recipe for a tomato soup with basil, garlic and a little cream.",
    "What were the main causes of the French revolution and how did it change Europe?",
    "Describe the rules of football for someone who has never watched a match before.",
    "How do I configure a reverse proxy so that server-sent events are not buffered?",
    "Summarise the plot of a detective novel set in a small seaside town in winter.",
    "Which exercises strengthen the lower back, and how often should a beginner train?",
    "Compare the interest rates of fixed and variable mortgages over twenty years.",
)


def prompts_of(tokens: int) -> tuple[str, ...]:
    """The prompts users send: ``PROMPTS`` (about 18 words) for 0; else the bundled prompt
    set's documents cut to ``tokens`` tokens (the paper's base prompt is 335; the set's
    documents hold 400-640), as a client with real prompts sends them."""
    if tokens <= 0:
        return PROMPTS
    from expert_router.bench.workload import load_documents
    from expert_router.tokenizer import truncate

    return tuple(truncate(doc, tokens) for doc in load_documents(None))


@dataclass
class Record:
    """One request: times in ns (perf_counter_ns), 0 when not reached. ``up_recv_ns`` and
    ``up_sent_ns``: when the upstream received the request and sent the first token, where it
    says so (the paced upstream's ``paced_ns``; same clock, same machine)."""

    start_ns: int
    headers_ns: int = 0
    first_ns: int = 0
    end_ns: int = 0
    up_recv_ns: int = 0
    up_sent_ns: int = 0
    events: int = 0
    ok: bool = False
    error: str = ""


class Streamer(Protocol):
    async def request(self, user: int, seq: int) -> Record: ...

    async def aclose(self) -> None: ...


@dataclass
class Counters:
    events: int = 0
    started: int = 0
    finished: int = 0
    records: list[Record] = field(default_factory=list)


class OpenAIStreamer:
    """Streams ``/v1/chat/completions`` or ``/v1/completions`` over aiohttp; counts SSE events."""

    def __init__(
        self,
        urls: list[str],
        route: str,
        model: str,
        max_tokens: int,
        c: Counters,
        api_key: str | None = None,
        prompts: tuple[str, ...] = PROMPTS,
    ):
        self.urls = [u.rstrip("/") for u in urls]
        self.prompts = prompts
        self.chat = route == "chat"
        self.path = "/v1/chat/completions" if self.chat else "/v1/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.counters = c
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=120)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)

    def _body(self, user: int, seq: int) -> dict[str, Any]:
        prompts = self.prompts
        prompt = f"{prompts[(user + seq) % len(prompts)]} (user {user}, request {seq})"
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "stream": True,
            "ignore_eos": True,
            "temperature": 0.0,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _token(self, payload: bytes) -> dict[str, Any] | None:
        """The event, when it carries a token."""
        try:
            event = json.loads(payload)
            choice = event["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if self.chat:
            return event if (choice.get("delta") or {}).get("content") else None
        return event if choice.get("text") else None

    async def request(self, user: int, seq: int) -> Record:
        url = self.urls[user % len(self.urls)] + self.path
        rec = Record(start_ns=time.perf_counter_ns())
        try:
            async with self.session.post(url, json=self._body(user, seq)) as resp:
                rec.headers_ns = time.perf_counter_ns()
                if resp.status != 200:
                    rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return rec
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        rec.ok = rec.first_ns > 0
                        continue  # read to the end, so the connection goes back to the pool
                    rec.events += 1
                    self.counters.events += 1
                    if not rec.first_ns and (event := self._token(payload)) is not None:
                        rec.first_ns = time.perf_counter_ns()
                        stamp = event.get("paced_ns")
                        if isinstance(stamp, list) and len(stamp) == 2:
                            rec.up_recv_ns, rec.up_sent_ns = int(stamp[0]), int(stamp[1])
                if not rec.ok and not rec.error:
                    rec.error = "stream ended without [DONE]" if rec.first_ns else "no token"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            rec.end_ns = time.perf_counter_ns()
        return rec

    async def aclose(self) -> None:
        await self.session.close()


PROTOCOLS = {"openai": OpenAIStreamer}


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (nginx workers, gateway workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the live ``pids`` (and their watched descendants), in seconds."""
    ticks = 0
    for pid in pids:
        for proc in descendants(pid):
            try:
                fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of ``pids`` and their descendants, in bytes."""
    total = 0
    for pid in pids:
        for proc in descendants(pid):
            try:
                pages = int(Path(f"/proc/{proc}/statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            total += pages * os.sysconf("SC_PAGE_SIZE")
    return total


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); nan when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": values[-1] if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


LEGS = ("forward", "return", "outside")
"""The legs of a first token outside the upstream, each reported as ``<leg>_ms`` (``_legs``)."""


def _legs(records: list[Record]) -> dict[str, Any]:
    """A first token's time outside the upstream, split in its two legs (ms): ``forward``,
    request sent -> upstream received it; ``return``, upstream sent the token -> client read
    it; ``outside``, their sum (the first-token time less the upstream's own). The upstream's
    pacing (its timers firing late) is in the first-token time and in none of these."""
    fwd = [(r.up_recv_ns - r.start_ns) / 1e6 for r in records]
    ret = [(r.first_ns - r.up_sent_ns) / 1e6 for r in records]
    out = [f + r for f, r in zip(fwd, ret, strict=True)]
    legs = {f"{leg}_ms": _stats(sorted(v)) for leg, v in zip(LEGS, (fwd, ret, out), strict=True)}
    return legs | {"legs_n": len(records)}


async def _user(
    streamer: Streamer, user: int, c: Counters, stop: asyncio.Event, delay: float, think: float
) -> None:
    rng = random.Random(user)
    await asyncio.sleep(delay)
    seq = 0
    while not stop.is_set():
        c.started += 1
        rec = await streamer.request(user, seq)
        c.finished += 1
        c.records.append(rec)
        seq += 1
        if think > 0:
            await asyncio.sleep(rng.uniform(0.0, think))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counters = Counters()
    streamer: Streamer = PROTOCOLS[args.protocol](
        args.url,
        args.route,
        args.model,
        args.max_tokens,
        counters,
        os.environ.get("LOADGEN_API_KEY"),
        prompts_of(args.prompt_tokens),
    )
    stop = asyncio.Event()
    ramp = args.ramp_s
    tasks = [
        asyncio.create_task(
            _user(streamer, u, counters, stop, ramp * u / args.users, args.think_ms / 1e3)
        )
        for u in range(args.users)
    ]
    samples: list[dict[str, float]] = []
    t_run = time.perf_counter_ns()
    await asyncio.sleep(max(args.warmup_s, ramp))
    w0_ns, ev0, cpu0 = time.perf_counter_ns(), counters.events, cpu_seconds(args.watch)
    rss0 = rss_bytes(args.watch)
    end = time.monotonic() + args.duration_s
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, args.sample_s))
        samples.append(
            {
                "t_s": (time.perf_counter_ns() - w0_ns) / 1e9,
                "rss_bytes": rss_bytes(args.watch),
                "cpu_s": cpu_seconds(args.watch) - cpu0,
                "events": counters.events - ev0,
                "started": counters.started,
                "finished": counters.finished,
            }
        )
    w1_ns, ev1, cpu1 = time.perf_counter_ns(), counters.events, cpu_seconds(args.watch)
    rss1 = rss_bytes(args.watch)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=args.drain_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await streamer.aclose()

    window = [r for r in counters.records if w0_ns <= r.start_ns < w1_ns]
    ttft = sorted((r.first_ns - r.start_ns) / 1e6 for r in window if r.ok)
    ttfb = sorted((r.headers_ns - r.start_ns) / 1e6 for r in window if r.ok)
    errors = [r.error for r in counters.records if not r.ok]
    legs = [r for r in window if r.ok and r.up_sent_ns]
    cpu = cpu1 - cpu0
    return {
        "protocol": args.protocol,
        "users": args.users,
        "window_s": (w1_ns - w0_ns) / 1e9,
        "run_s": (time.perf_counter_ns() - t_run) / 1e9,
        "requests_in_window": len(window),
        "ok_in_window": len(ttft),
        "requests_started": counters.started,
        "requests_ok": sum(1 for r in counters.records if r.ok),
        "requests_failed": len(errors),
        "requests_unfinished": counters.started - counters.finished,
        "first_errors": errors[:5],
        "ttft_ms": _stats(ttft),
        "headers_ms": _stats(ttfb),
        **(_legs(legs) if legs else {}),
        "events_in_window": ev1 - ev0,
        "events_per_s": (ev1 - ev0) / ((w1_ns - w0_ns) / 1e9),
        "watched_cpu_s": cpu,
        "events_per_cpu_s": (ev1 - ev0) / cpu if cpu > 0 else float("nan"),
        "rss_start_bytes": rss0,
        "rss_end_bytes": rss1,
        "samples": samples,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", action="append", required=True, help="base URL; users spread over")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="openai")
    p.add_argument("--route", choices=("chat", "completions"), default="chat")
    p.add_argument("--model", default="emulated")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=0, help="0: ~18-word prompts")
    p.add_argument("--ramp-s", type=float, default=0.0, help="spread user starts over this")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--think-ms", type=float, default=0.0, help="pause U(0, this) between")
    p.add_argument("--duration-s", type=float, default=10.0, help="measured window")
    p.add_argument("--drain-s", type=float, default=60.0, help="wait for in-flight at the end")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS/CPU sample interval")
    p.add_argument("--watch", type=int, action="append", default=[], help="pid to measure")
    p.add_argument("--out", default=None, help="write the JSON here (default: stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Without the cyclic collector: with 1000 streams in flight, its pauses (up to 25 ms, ~0.2 s
    # a run) landed on a random few dozen requests of whichever target this process measured,
    # as much of the p99 as any proxy's own cost (docs/benchmarks.md, 2026-12-07 14:20).
    result = run_loop(run(args))
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
