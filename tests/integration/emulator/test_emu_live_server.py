"""The live emulator over real sockets: timing, queueing, cancellation, API shape, fleets."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import pytest
from emu_client import stream, words
from polling import eventually

from expert_router.emulator import get_preset, serve_emulator, serve_fleet

pytestmark = pytest.mark.integration


async def test_batch_one_fixed_timing_within_ten_percent() -> None:
    async with (
        serve_emulator("cpu-tiny", tpot_ms=20, ttft_ms=100) as srv,
        aiohttp.ClientSession() as s,
    ):
        runs = []
        for i in range(5):
            body = {"prompt": words(30 + i), "max_tokens": 30, "ignore_eos": True}
            runs.append(await stream(s, srv.url, body))
    assert all(len(r.times) == 30 and r.finish_reason == "length" and r.done for r in runs)
    gaps = [g for r in runs for g in r.gaps()]
    assert statistics.median(gaps) == pytest.approx(0.020, rel=0.10)
    assert statistics.mean(r.tpot for r in runs) == pytest.approx(0.020, rel=0.10)
    assert statistics.median(r.ttft for r in runs) == pytest.approx(0.100, rel=0.10)


async def test_batch_one_model_timing_within_ten_percent() -> None:
    preset = get_preset("cpu-tiny")
    model = preset.step_model()
    async with serve_emulator(preset) as srv, aiohttp.ClientSession() as s:
        runs = [
            await stream(s, srv.url, {"prompt": words(800), "max_tokens": 30, "ignore_eos": True})
            for _ in range(5)
        ]
    predicted_tpot = model.decode_time(1, 815)
    predicted_ttft = model.prefill_time(800)
    assert predicted_tpot == pytest.approx(0.0158, rel=0.05)  # ~16 ms: fast tests
    assert predicted_ttft == pytest.approx(0.16, rel=0.05)
    assert statistics.median(g for r in runs for g in r.gaps()) == pytest.approx(
        predicted_tpot, rel=0.10
    )
    assert statistics.median(r.ttft for r in runs) == pytest.approx(predicted_ttft, rel=0.10)


async def _open_streams(
    s: aiohttp.ClientSession, url: str, n: int, prompt: int, max_tokens: int
) -> list[aiohttp.ClientResponse]:
    body = {"prompt": words(prompt), "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    return [await s.post(url + "/v1/completions", json=body) for _ in range(n)]


async def _metric(s: aiohttp.ClientSession, url: str, name: str) -> float:
    async with s.get(url + "/metrics") as r:
        text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


async def test_queueing_begins_exactly_at_max_batch_and_cancel_frees_the_slot() -> None:
    async with serve_emulator("cpu-tiny", max_batch=3, tpot_ms=10, ttft_ms=10) as srv:
        engine = srv.engine
        async with aiohttp.ClientSession() as s:
            streams = [
                asyncio.ensure_future(_open_streams(s, srv.url, 1, 20, 500)) for _ in range(5)
            ]
            await eventually(lambda: engine.num_running + engine.num_waiting == 5)
            await asyncio.sleep(0.05)
            assert (engine.num_running, engine.num_waiting) == (3, 2)
            assert await _metric(s, srv.url, "vllm:num_requests_running") == 3
            assert await _metric(s, srv.url, "vllm:num_requests_waiting") == 2
            responses = [r for t in streams for r in await t]
            running = [r for r in responses if r.status == 200]
            # read one token of a running stream, then hang up
            await running[0].content.readline()
            running[0].close()
            await eventually(lambda: engine.cancelled_total == 1, within=0.5)
            await eventually(lambda: engine.num_waiting == 1, within=0.2)  # next iteration admits
            assert engine.num_running == 3
            assert await _metric(s, srv.url, "vllm:request_aborted_total") == 1
            for r in responses:
                r.close()
            await eventually(lambda: engine.num_running + engine.num_waiting == 0)
            assert engine.kv_reserved == 0


async def test_queueing_begins_exactly_at_kv_capacity() -> None:
    # each request reserves 100 prompt + 200 output = 300 tokens: three fit in 1000
    async with serve_emulator("cpu-tiny", max_batch=8, kv_tokens=1000, tpot_ms=10) as srv:
        engine = srv.engine
        async with aiohttp.ClientSession() as s:
            responses = await asyncio.gather(
                *(_open_streams(s, srv.url, 1, 100, 200) for _ in range(4))
            )
            await eventually(lambda: engine.num_running + engine.num_waiting == 4)
            await asyncio.sleep(0.03)
            assert (engine.num_running, engine.num_waiting) == (3, 1)
            assert await _metric(s, srv.url, "vllm:gpu_cache_usage_perc") == pytest.approx(0.9)
            for group in responses:
                for r in group:
                    r.close()


async def test_ignore_eos_exact_tokens_and_emulated_eos() -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1, ttft_ms=1, eos_mean_tokens=5) as srv:
        async with aiohttp.ClientSession() as s:
            usage = {"include_usage": True}
            body = {"prompt": "hi", "max_tokens": 97, "ignore_eos": True, "stream_options": usage}
            exact = await stream(s, srv.url, body)
            assert len(exact.texts) == 97 and exact.usage is not None
            assert exact.usage["completion_tokens"] == 97 and exact.finish_reason == "length"
            minimum = await stream(s, srv.url, {"prompt": "hi", "max_tokens": 50, "min_tokens": 50})
            assert len(minimum.texts) == 50
            free = [
                await stream(s, srv.url, {"prompt": f"p{i}", "max_tokens": 60}) for i in range(8)
            ]
            assert any(len(f.texts) < 60 and f.finish_reason == "stop" for f in free)
            messages = [{"role": "user", "content": "x"}]
            body = {"messages": messages, "max_tokens": 12, "ignore_eos": True}
            chat = await stream(s, srv.url, body, chat=True)
            assert len(chat.texts) == 12 and chat.done


async def test_errors_are_openai_shaped() -> None:
    async with serve_emulator("cpu-tiny", max_model_len=64) as srv, aiohttp.ClientSession() as s:
        async with s.post(
            srv.url + "/v1/completions", json={"prompt": words(60), "max_tokens": 10}
        ) as r:
            assert r.status == 400
            err = (await r.json())["error"]
            assert "maximum context length is 64 tokens" in err["message"]
        async with s.post(srv.url + "/v1/completions", data=b"{not json") as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "body"
        async with s.post(srv.url + "/v1/chat/completions", json={"max_tokens": 3}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "messages"
        async with s.get(srv.url + "/v1/models") as r:
            assert (await r.json())["data"][0]["id"] == "cpu-tiny"


async def test_fleet_serves_every_expert_on_its_own_port() -> None:
    names = ["e0", "e1", "e2"]
    async with serve_fleet(["cpu-tiny"] * 3, tpot_ms=2, ttft_ms=2, model_names=names) as fleet:
        assert len(set(fleet.urls)) == 3
        assert [srv.model_name for srv in fleet.servers] == names
        async with aiohttp.ClientSession() as s:
            for url in fleet.urls:
                async with s.get(url + "/health") as r:
                    assert r.status == 200
            results = await asyncio.gather(*(
                stream(s, url, {"prompt": "x", "max_tokens": 5, "ignore_eos": True})
                for url in fleet.urls
            ))  # fmt: skip
        assert [len(r.texts) for r in results] == [5, 5, 5]
        assert [srv.engine.finished_total for srv in fleet.servers] == [1, 1, 1]


async def test_stop_aborts_requests_in_flight_promptly() -> None:
    body = {"prompt": "x", "max_tokens": 2000, "ignore_eos": True}
    async with aiohttp.ClientSession() as s:
        async with serve_emulator("cpu-tiny", tpot_ms=10) as srv:
            streaming = await s.post(srv.url + "/v1/completions", json={**body, "stream": True})
            await streaming.content.readline()
            plain = asyncio.ensure_future(s.post(srv.url + "/v1/completions", json=body))
            await eventually(lambda: srv.engine.num_running == 2)
            started = time.monotonic()
        assert time.monotonic() - started < 0.3
        with pytest.raises(aiohttp.ClientError):
            await streaming.content.read()
        with pytest.raises(aiohttp.ClientError):
            await plain
        streaming.close()


async def test_paged_policy_preempts_yet_streams_every_token() -> None:
    overrides: dict[str, Any] = dict(
        kv_policy="paged", kv_tokens=160, max_batch=8, tpot_ms=2, ttft_ms=2
    )
    async with serve_emulator("cpu-tiny", **overrides) as srv, aiohttp.ClientSession() as s:
        body = {"prompt": words(16), "max_tokens": 100, "ignore_eos": True}
        results = await asyncio.gather(*(stream(s, srv.url, body) for _ in range(3)))
        assert [len(r.texts) for r in results] == [100, 100, 100]
        assert await _metric(s, srv.url, "vllm:num_preemptions_total") >= 1
