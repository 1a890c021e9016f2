"""``expert-router emulate`` shuts down gracefully on SIGTERM: readiness turns 503 at once, new
requests are refused, a stream that outlives the signal completes, one that outlives the drain
timeout ends with an SSE error event (gRPC: UNAVAILABLE), and the process exits 0; a second
signal ends it at once."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient

pytestmark = pytest.mark.integration

TPOT_MS = 20
DRAIN_S = 3.0
TIMER_SLACK_S = 0.005
SHORT = 40  # tokens: about 0.8 s, well inside the drain timeout
LONG = 2000  # tokens: about 40 s, cut by the drain timeout


@dataclass
class Emulate:
    proc: asyncio.subprocess.Process
    url: str
    target: str

    async def stderr_line(self, pattern: str) -> str:
        """The next stderr line matching ``pattern`` (the process's own progress lines)."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                assert line, "emulate closed stderr"
                if re.search(pattern, line):
                    return line


@asynccontextmanager
async def emulate(*extra: str) -> AsyncIterator[Emulate]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "emulate", "--port", "0",
        "--grpc-port", "0", "--pacing", "per-request", "--tpot-ms", str(TPOT_MS),
        "--ttft-ms", "1", "--drain-timeout", str(DRAIN_S), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        found = re.search(r"(http://\S+).*gRPC on (\S+)", line)
        assert found, f"unexpected first line: {line!r}"
        yield Emulate(proc, found[1], found[2])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass
class Stream:
    """One streamed completion read to its end: every ``data:`` payload, and when it ended."""

    first: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[bytes] = field(default_factory=list)
    ended: float = 0.0

    async def run(self, session: aiohttp.ClientSession, url: str, tokens: int) -> None:
        body = {"prompt": "hello", "max_tokens": tokens, "ignore_eos": True, "stream": True}
        async with session.post(url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: "):
                    self.events.append(line[6:].strip())
                    self.first.set()
        self.ended = time.monotonic()

    @property
    def tokens(self) -> int:
        return sum(1 for e in self.events if e != b"[DONE]" and b'"choices"' in e)


async def grpc_stream(target: str, tokens: int, first: asyncio.Event) -> grpc.StatusCode:
    """A Triton gRPC stream of ``tokens``; the status code it ended with."""
    client = grpcclient.InferenceServerClient(target)
    arrays = {
        "text_input": (np.array([[b"hello"]], dtype=object), "BYTES"),
        "max_tokens": (np.array([[tokens]], dtype=np.int32), "INT32"),
        "stream": (np.array([[True]], dtype=bool), "BOOL"),
        "min_length": (np.array([[tokens]], dtype=np.int32), "INT32"),  # no emulated EOS
    }
    inputs = []
    for name, (arr, dtype) in arrays.items():
        i = grpcclient.InferInput(name, list(arr.shape), dtype)
        i.set_data_from_numpy(arr)
        inputs.append(i)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "ensemble", "inputs": inputs, "request_id": "1"}

    try:
        async for _result, error in client.stream_infer(requests()):
            assert error is None
            first.set()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        await client.close()


async def test_sigterm_drains_then_cuts_then_exits_0() -> None:
    async with emulate() as emu, aiohttp.ClientSession() as session:
        short, long = Stream(), Stream()
        tasks = [
            asyncio.create_task(short.run(session, emu.url, SHORT)),
            asyncio.create_task(long.run(session, emu.url, LONG)),
        ]
        grpc_first = asyncio.Event()
        grpc_task = asyncio.create_task(grpc_stream(emu.target, LONG, grpc_first))
        async with asyncio.timeout(20):
            for event in (short.first, long.first, grpc_first):
                await event.wait()
        emu.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        line = await emu.stderr_line("stopping")
        assert "3 requests in flight" in line

        # readiness and new work are refused at once, while the streams go on
        async with session.get(emu.url + "/health") as r:
            assert r.status == 503
        async with session.get(emu.url + "/v2/health/ready") as r:
            assert r.status == 503
        async with session.get(emu.url + "/v2/health/live") as r:
            assert r.status == 200
        body = {"prompt": "hello", "max_tokens": 2}
        async with session.post(emu.url + "/v1/completions", json=body) as r:
            assert r.status == 503
            assert "shutting down" in (await r.json())["error"]["message"]
        client = grpcclient.InferenceServerClient(emu.target)
        try:
            assert not await client.is_server_ready()
        finally:
            await client.close()

        async with asyncio.timeout(DRAIN_S + 15):
            await asyncio.gather(*tasks)
            grpc_code = await grpc_task
            status = await emu.proc.wait()

        # the short stream outlived the signal and completed
        assert short.ended > signalled
        assert short.events[-1] == b"[DONE]"
        assert short.tokens == SHORT
        assert not any(b'"error"' in e for e in short.events)
        # the long one was cut by the drain timeout with an error event
        assert long.events[-1] == b"[DONE]"
        error = json.loads(long.events[-2])["error"]
        assert error["code"] == 503 and "drain timeout" in error["message"]
        assert 0 < long.tokens < LONG
        # (libuv's timers count whole milliseconds from a cached loop time: the drain's
        # timer may fire up to ~1 ms before a monotonic clock reads DRAIN_S)
        assert long.ended - signalled >= DRAIN_S - TIMER_SLACK_S
        assert grpc_code == grpc.StatusCode.UNAVAILABLE
        assert status == 0


async def test_second_signal_stops_at_once() -> None:
    async with emulate("--drain-timeout", "60") as emu, aiohttp.ClientSession() as session:
        long = Stream()
        task = asyncio.create_task(long.run(session, emu.url, LONG))
        async with asyncio.timeout(20):
            await long.first.wait()
        emu.proc.send_signal(signal.SIGTERM)
        await emu.stderr_line("stopping")
        emu.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):  # far below the 60 s drain timeout
            status = await emu.proc.wait()
            await task
        assert status == 128 + signal.SIGTERM
        assert b'"error"' in long.events[-2]
        assert long.tokens < LONG


async def test_sigint_with_nothing_in_flight_exits_0_at_once() -> None:
    async with emulate("--drain-timeout", "60") as emu:
        emu.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await emu.proc.wait() == 0


async def test_drain_in_process_cuts_every_face() -> None:
    """``EmulatorServer.drain``: a non-streamed answer cut by the timeout is a 503, a Triton
    ``generate_stream`` ends with its error event; what was not cut is counted as such."""
    from expert_router.emulator import serve_emulator

    async with (
        serve_emulator("cpu-tiny", pacing="per-request", tpot_ms=TPOT_MS, ttft_ms=1) as server,
        aiohttp.ClientSession() as session,
    ):
        plain = {"prompt": "hello", "max_tokens": LONG, "ignore_eos": True}
        triton = {"text_input": "hello", "max_tokens": LONG, "min_length": LONG}
        started = asyncio.Event()
        events: list[bytes] = []

        async def triton_stream() -> None:
            url = server.url + "/v2/models/ensemble/generate_stream"
            async with session.post(url, json=triton) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        events.append(line[6:].strip())
                        started.set()

        both = asyncio.Event()  # set once both requests are in flight
        track = server.shutdown.track

        @contextmanager
        def tracking(sink: Any) -> Iterator[None]:
            with track(sink):
                if server.shutdown.in_flight == 2:
                    both.set()
                yield

        server.shutdown.track = tracking  # type: ignore[method-assign]
        plain_task = asyncio.create_task(session.post(server.url + "/v1/completions", json=plain))
        stream_task = asyncio.create_task(triton_stream())
        async with asyncio.timeout(20):
            await started.wait()
            await both.wait()
            assert await server.drain(0.2) == 2
            resp = await plain_task
            await stream_task
        assert resp.status == 503
        assert "drain timeout" in (await resp.json())["error"]["message"]
        assert "drain timeout" in json.loads(events[-1])["error"]
        assert server.shutdown.in_flight == 0
