"""``--pacing per-request`` behind every face: OpenAI SSE and JSON, Triton gRPC (the official
tritonclient grpc.aio client) and HTTP generate_stream, client disconnects, /metrics, the CLI."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import tritonclient.grpc.aio as grpcclient
from emu_client import stream, words
from polling import eventually
from triton_inputs import inputs

from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.paced import PacedEngine
from expert_router.emulator.server import EmulatorServer, serve_emulator
from expert_router.tokenizer import count_tokens

pytestmark = pytest.mark.integration
PACED: dict[str, Any] = {"pacing": "per-request", "ttft_ms": 10.0, "tpot_ms": 40.0}


async def _metrics(s: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with s.get(url + "/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = float(value)
    return out


@pytest.fixture
def no_gc_pause() -> Iterator[None]:
    """No full collection while lateness is counted to 50 ms: one over the heap the tests
    before left behind can stall the loop that long (19 tokens late in one suite run)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc_pause")
async def test_openai_streams_are_paced_per_request() -> None:
    async with serve_emulator("cpu-tiny", **PACED) as srv, aiohttp.ClientSession() as s:
        assert isinstance(srv.engine, PacedEngine)
        body = {"prompt": words(20), "max_tokens": 5, "ignore_eos": True}

        async def one(delay: float) -> Any:
            await asyncio.sleep(delay)
            return await stream(s, srv.url, body)

        # 24 staggered arrivals: a batched engine makes each wait for the next step (0-40 ms).
        runs = await asyncio.gather(*(one(i * 0.0031) for i in range(24)))
        m = await _metrics(s, srv.url)
        chat = await stream(s, srv.url, {**body, "messages": [{"role": "user", "content": "hi"}]},
                            chat=True)  # fmt: skip
        t0 = time.perf_counter()
        async with s.post(srv.url + "/v1/completions", json={**body, "max_tokens": 4}) as r:
            full = await r.json()
        whole = time.perf_counter() - t0
    assert all(len(r.times) == 5 and r.done and r.finish_reason == "length" for r in runs)
    # Batched, the median would be ~30 ms (10 ms + half a 40 ms step).
    assert statistics.median(r.ttft for r in runs) == pytest.approx(0.010, abs=0.007)
    assert statistics.median(g for r in runs for g in r.gaps()) == pytest.approx(0.040, abs=0.006)
    assert len(chat.times) == 5 and chat.done
    assert full["usage"]["completion_tokens"] == 4 and count_tokens(full["choices"][0]["text"]) == 4
    assert whole == pytest.approx(0.010 + 3 * 0.040, abs=0.030)
    assert m["vllm:request_success_total"] == 24 and m["vllm:generation_tokens_total"] == 120
    assert m["vllm:num_requests_running"] == 0 and m["emulator:paced_late_tokens_total"] == 0


async def test_disconnect_cancels_and_metrics_count_running_requests() -> None:
    async with serve_emulator("cpu-tiny", **PACED) as srv, aiohttp.ClientSession() as s:
        body = {"prompt": words(10), "max_tokens": 500, "ignore_eos": True, "stream": True}
        resps = [await s.post(srv.url + "/v1/completions", json=body) for _ in range(5)]
        for r in resps:
            await r.content.readline()  # the first event is here: all five are running
        m = await _metrics(s, srv.url)
        assert (m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]) == (5, 0)
        for r in resps[:3]:
            r.close()
        await eventually(lambda: srv.engine.num_running == 2)
        m = await _metrics(s, srv.url)
        assert m["vllm:request_aborted_total"] == 3 and m["vllm:num_requests_running"] == 2
        for r in resps[3:]:
            r.close()
        await eventually(lambda: srv.engine.num_running == 0)
        assert srv.engine.cancelled_total == 5 and srv.engine.finished_total == 0


async def test_triton_http_generate_stream_one_event_per_token() -> None:
    async with serve_emulator("cpu-tiny", **PACED) as srv, aiohttp.ClientSession() as s:
        body = {"text_input": "How do I bake bread?", "max_tokens": 6, "min_length": 6}
        times, texts = [], []
        t0 = time.perf_counter()
        async with s.post(srv.url + "/v2/models/ensemble/generate_stream", json=body) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: "):
                    times.append(time.perf_counter() - t0)
                    texts.append(json.loads(line[6:])["text_output"])
    assert len(texts) == 6 and count_tokens("".join(texts)) == 6
    assert times[0] == pytest.approx(0.010, abs=0.015)
    assert times[-1] == pytest.approx(0.010 + 5 * 0.040, abs=0.030)


async def test_triton_grpc_stream_with_tritonclient() -> None:
    async with serve_emulator("cpu-tiny", **PACED) as srv:
        g = TritonGrpcServer(srv)
        await g.start()
        client = grpcclient.InferenceServerClient(g.target)
        try:
            reqs = [
                {"model_name": "ensemble", "inputs": inputs("first prompt", 5), "request_id": "a"},
                {"model_name": "ensemble", "inputs": inputs("second one", 3), "request_id": "b"},
            ]

            async def gen() -> AsyncIterator[dict[str, Any]]:
                for r in reqs:
                    yield r

            got: dict[str, list[tuple[float, str, bool]]] = {"a": [], "b": []}
            t0, left = time.perf_counter(), 2
            async for result, error in client.stream_infer(gen()):
                assert error is None, error
                resp = result.get_response()
                final = resp.parameters.get("triton_final_response")
                is_final = bool(final and final.bool_param)
                arr = result.as_numpy("text_output")
                text = b"".join(arr.ravel()).decode() if arr is not None else ""
                got[resp.id].append((time.perf_counter() - t0, text, is_final))
                left -= is_final
                if not left:
                    break
            await eventually(lambda: srv.engine.num_running == 0)
            assert srv.engine.finished_total == 2
        finally:
            await client.close()
            await g.stop()
    for rid, n in (("a", 5), ("b", 3)):
        msgs = got[rid]
        assert len(msgs) == n and [f for *_, f in msgs] == [False] * (n - 1) + [True]
        assert count_tokens("".join(t for _, t, _ in msgs)) == n
        assert msgs[0][0] == pytest.approx(0.010, abs=0.020)
        assert msgs[-1][0] == pytest.approx(0.010 + (n - 1) * 0.040, abs=0.030)


async def test_emulate_cli_serves_paced_grpc() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "emulate", "--port", "0",
        "--grpc-port", "0", "--pacing", "per-request", "--tpot-ms", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert "[pacing per-request]" in line, line
        target = re.search(r"gRPC on (\S+)", line)
        assert target is not None, line
        client = grpcclient.InferenceServerClient(target.group(1))
        try:
            result = await client.infer("ensemble", inputs("hello there", 4)[:2])
            text = b"".join(result.as_numpy("text_output").ravel()).decode()
            assert text
        finally:
            await client.close()
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()


def test_server_type_is_chosen_by_the_preset() -> None:
    from expert_router.emulator.presets import get_preset

    assert isinstance(EmulatorServer(get_preset("cpu-tiny", **PACED)).engine, PacedEngine)
    assert not isinstance(EmulatorServer(get_preset("cpu-tiny")).engine, PacedEngine)
