"""The streaming client against a small SSE server: tokens per chunk, headers, history, errors."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from expert_router.bench.client import Counters, parse_server_timing, run_users
from expert_router.bench.protocols import ClientSettings, make_client
from expert_router.bench.records import RequestRecord
from expert_router.bench.workload import UserPlan, WorkloadConfig
from expert_router.errors import ConfigError
from expert_router.tokenizer import count_tokens

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CFG = WorkloadConfig(base_tokens=20, continuation_tokens=40, output_tokens=5, jitter=0)


def _event(text: str) -> bytes:
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _start(handler: Handler, models: Handler | None = None) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/v1/completions", handler)
    if models is not None:
        app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _plans(n: int) -> list[UserPlan]:
    return [
        UserPlan(user=u, cluster=u % 2, base=f"base prompt of user {u}", base_tokens=5,
                 continuation_target=40, pad=" more words about the same topic " * 10)
        for u in range(n)
    ]  # fmt: skip


async def _run(url: str, n: int = 2, **kw: Any) -> list[RequestRecord]:
    return await run_users(
        _plans(n), CFG, protocol="openai", settings=ClientSettings(url, **kw), users=n,
        repetition=0, t0_ns=time.perf_counter_ns(),
    )  # fmt: skip


def test_parse_server_timing() -> None:
    assert parse_server_timing("classify;dur=0.5, route;dur=0.25") == {
        "classify": 0.5, "route": 0.25}  # fmt: skip
    assert parse_server_timing('x;desc="a";dur="1.5", y, z;dur=bad') == {"x": 1.5}


async def test_stream_records_tokens_headers_and_history() -> None:
    bodies = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "x-expert-router-cluster": "1",
            "x-expert-router-replica": "gpu-0", "Server-Timing": "classify;dur=0.2, route;dur=0.1",
        })  # fmt: skip
        await resp.prepare(request)
        await resp.write(_event(" the"))
        await resp.write(_event(" big cat"))  # one chunk, two tokens
        await resp.write(b'data: {"choices":[],"usage":{"completion_tokens":3}}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    runner, url = await _start(handler)
    try:
        records = await _run(url, model="m1")
    finally:
        await runner.cleanup()
    assert len(records) == 4 and all(r.status == "ok" for r in records)
    base = next(r for r in records if r.user == 1 and r.turn == 0)
    cont = next(r for r in records if r.user == 1 and r.turn == 1)
    assert base.output_tokens == 3 and len(base.token_times) == 3
    assert base.token_times[1] == base.token_times[2]  # same chunk, same arrival time
    assert base.first_token is not None
    assert base.start <= base.first_token <= base.end and base.first_token == base.token_times[0]
    assert base.max_tokens == 5  # asked for 5, got 3: reported, not hidden
    assert (base.routed_cluster, base.replica, base.cluster) == (1, "gpu-0", 1)
    assert base.server_timing == {"classify": 0.2, "route": 0.1}
    assert base.http_status == 200 and cont.start >= base.end
    # the request asks for exactly N tokens
    first = bodies[0]
    assert first["max_tokens"] == first["min_tokens"] == 5 and first["ignore_eos"] is True
    assert first["stream"] is True and first["model"] == "m1"
    # the continuation carries the history: base prompt, the answer, a follow-up
    follow = next(b for b in bodies if len(b["messages"]) == 3)
    roles = [m["role"] for m in follow["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert follow["messages"][1]["content"] == " the big cat"
    expected = 5 + 3 + count_tokens(follow["messages"][2]["content"])
    assert cont.prompt_tokens == expected
    assert count_tokens(follow["messages"][2]["content"]) == 40 - 5 - 3


async def test_completions_endpoint_sends_a_prompt() -> None:
    bodies = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"text":" hi"}]}\n\ndata: [DONE]\n\n')
        return resp

    runner, url = await _start(handler)
    try:
        records = await _run(url + "/v1", n=1, endpoint="completions")
    finally:
        await runner.cleanup()
    assert [r.output_tokens for r in records] == [1, 1]
    assert "prompt" in bodies[0] and "messages" not in bodies[0]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b'{"error": {"message": "overloaded"}}', 503, "HTTP 503"),
        (_event(" a") + b'data: {"error": {"message": "oom"}}\n\n', 200, "in-stream error: oom"),
        (_event(" a"), 200, "without [DONE]"),
        (b"data: {not json\n\n", 200, "unparseable"),
    ],
)
async def test_failures_become_error_records(payload: bytes, status: int, message: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if status != 200:
            return web.Response(status=status, body=payload, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(payload)
        return resp

    runner, url = await _start(handler)
    try:
        records = await _run(url)
    finally:
        await runner.cleanup()
    assert len(records) == 4
    assert all(r.status == "error" and message in (r.error or "") for r in records)
    assert all(r.http_status == status for r in records)


async def test_unreachable_server_gives_error_records() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    counters = Counters()
    records = await run_users(
        _plans(3), CFG, protocol="openai", settings=ClientSettings(f"http://127.0.0.1:{port}"),
        users=3, repetition=0, t0_ns=time.perf_counter_ns(), counters=counters,
    )  # fmt: skip
    assert len(records) == 6 and all(r.status == "error" for r in records)
    assert all("Connect" in (r.error or "") for r in records)
    assert (counters.done, counters.errors, counters.active) == (6, 6, 0)


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="openai"):
        make_client("carrier-pigeon", ClientSettings("http://x"))


async def test_connections_are_opened_before_the_start() -> None:
    """Given time before the start, every user's first request reuses a warmed connection."""
    warmed, used = set(), set()

    async def models(request: web.Request) -> web.Response:
        assert request.transport is not None
        warmed.add(request.transport.get_extra_info("peername"))
        return web.json_response({"object": "list", "data": []})

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        used.add(request.transport.get_extra_info("peername"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_event(" the") + b"data: [DONE]\n\n")
        return resp

    runner, url = await _start(handler, models)
    try:
        records = await run_users(
            _plans(3), CFG, protocol="openai", settings=ClientSettings(url), users=3,
            repetition=0, t0_ns=time.perf_counter_ns() + 1_000_000_000,
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert all(r.status == "ok" for r in records)
    assert len(warmed) == 3
    assert used <= warmed
