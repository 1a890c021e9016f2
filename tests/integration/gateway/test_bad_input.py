"""Bad requests get exact OpenAI-shaped answers; a failing expert never takes the gateway down."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, post

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration
CHAT, COMP = "/v1/chat/completions", "/v1/completions"


def err(message: str, param: str | None, code: str = "invalid_request") -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


CASES: list[tuple[str, str, bytes, int, dict[str, Any] | None]] = [
    # (id, path, raw body, status, exact body or None when only the shape is checked)
    ("invalid-json", CHAT, b"{not json", 400, None),
    ("not-an-object", CHAT, b"[1, 2]", 400, err("request body must be a JSON object", None)),
    ("missing-messages", CHAT, b"{}", 400, err("'messages' is a required property", "messages")),
    (
        "messages-wrong-type",
        CHAT,
        b'{"messages": "hi"}',
        400,
        err("'messages' must be an array", "messages"),
    ),
    (
        "messages-empty",
        CHAT,
        b'{"messages": []}',
        400,
        err("'messages' must not be empty", "messages"),
    ),
    (
        "message-not-object",
        CHAT,
        b'{"messages": [3]}',
        400,
        err("'messages[0]' must be an object", "messages[0]"),
    ),
    (
        "role-missing",
        CHAT,
        b'{"messages": [{"content": "x"}]}',
        400,
        err("'messages[0].role' must be a string", "messages[0].role"),
    ),
    (
        "content-wrong-type",
        CHAT,
        b'{"messages": [{"role": "user", "content": 5}]}',
        400,
        err("'messages[0].content' must be a string or an array of parts", "messages[0].content"),
    ),
    (
        "stream-wrong-type",
        CHAT,
        b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        400,
        err("'stream' must be a boolean", "stream"),
    ),
    (
        "model-wrong-type",
        CHAT,
        b'{"messages": [{"role": "user", "content": "x"}], "model": 7}',
        400,
        err("'model' must be a string", "model"),
    ),
    (
        "missing-prompt",
        COMP,
        b'{"model": "m"}',
        400,
        err("'prompt' is a required property", "prompt"),
    ),
    (
        "prompt-wrong-type",
        COMP,
        b'{"prompt": {"a": 1}}',
        400,
        err("'prompt' must be a string or an array of strings", "prompt"),
    ),
    (
        "too-large",
        CHAT,
        b'{"messages": [{"role": "user", "content": "' + b"x" * 2000 + b'"}]}',
        413,
        err("request body exceeds 1024 bytes", None, "request_too_large"),
    ),
]


@pytest.fixture
async def gw(gateway: Any) -> Any:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        cfg = make_config({"*": [srv.url]}, limits={"max_body_bytes": 1024})
        async with gateway(cfg) as running:
            yield running


@pytest.mark.parametrize(("path", "body", "status", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
async def test_bad_requests(gw: Any, path: str, body: bytes, status: int, expected: Any) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + path, data=body) as resp:
            got = await resp.json()
            assert resp.status == status
            assert resp.headers["x-expert-router-cluster"] == "none"
            assert resp.content_type == "application/json"
    if expected is not None:
        assert got == expected
    else:
        assert set(got["error"]) == {"message", "type", "param", "code"}
        assert got["error"]["message"].startswith("request body is not valid JSON")
        assert got["error"]["param"] is None


async def test_body_limit_without_content_length(gw: Any) -> None:
    async def chunks() -> Any:
        for _ in range(4):
            yield b" " * 600

    async with aiohttp.ClientSession() as s, s.post(gw.url + CHAT, data=chunks()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"


async def test_unknown_route_and_method(gw: Any) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/v2/nothing?key=sk-secret") as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error"]["code"] == "unknown_url"
            assert "/v2/nothing" not in body["error"]["message"]  # request bytes never echoed
            assert "/v1/chat/completions" in body["error"]["message"]  # the routes that exist
        for method, path, allow in [("GET", CHAT, "POST"), ("DELETE", "/v1/models", "GET, HEAD")]:
            async with s.request(method, gw.url + path) as resp:
                assert resp.status == 405 and resp.headers["Allow"] == allow
                assert (await resp.json())["error"]["code"] == "method_not_allowed"
        async with s.head(gw.url + "/health") as resp:
            assert resp.status == 200 and int(resp.headers["Content-Length"]) > 0
            assert await resp.read() == b""


async def test_api_keys(gateway: Any, two_topics: Any) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        cfg = make_config({"*": [srv.url]}, api_keys=["sk-right", "sk-other"])
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            body = chat_body(two_topics[0])
            for headers in [
                {},
                {"Authorization": "Bearer sk-wrong"},
                {"Authorization": "sk-right"},
            ]:
                status, hdrs, raw = await post(s, g.url + CHAT, body, headers=headers)
                assert status == 401
                assert json.loads(raw)["error"]["code"] == "invalid_api_key"
                assert "sk-right" not in raw.decode()
                assert hdrs["x-expert-router-cluster"] == "none"
            async with s.get(g.url + "/v1/models") as resp:
                assert resp.status == 401
            for key in ("sk-right", "sk-other"):
                status, _, _ = await post(
                    s, g.url + CHAT, body, headers={"Authorization": f"Bearer {key}"}
                )
                assert status == 200
            async with s.get(g.url + "/health") as resp:
                assert resp.status == 200  # probes need no key


async def test_upstream_errors_pass_through_openai_shaped(gateway: Any, two_topics: Any) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        async with gateway(make_config({"*": [srv.url]})) as g, aiohttp.ClientSession() as s:
            # n=2 is valid OpenAI but the emulator refuses it with its own 400
            status, hdrs, raw = await post(s, g.url + CHAT, chat_body(two_topics[0], n=2))
            assert status == 400
            error = json.loads(raw)["error"]
            assert error["param"] == "n" and set(error) == {"message", "type", "param", "code"}
            assert hdrs["x-expert-router-cluster"] == str(two_topics[1])
            assert hdrs["x-expert-router-replica"]
            status, _, _ = await post(s, g.url + CHAT, chat_body(two_topics[0]))
            assert status == 200


async def test_dead_expert_gives_502_and_gateway_stays_up(gateway: Any, two_topics: Any) -> None:
    from expert_router.gateway.server import free_port

    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    cfg = make_config({"*": [dead]}, limits={"retries": 0})
    async with gateway(cfg, probes=False) as g, aiohttp.ClientSession() as s:
        status, hdrs, raw = await post(s, g.url + CHAT, chat_body(two_topics[0]))
        assert status == 502
        assert json.loads(raw)["error"]["code"] == "upstream_unavailable"
        assert hdrs["x-expert-router-replica"] == dead.removeprefix("http://")
        assert "route;dur=" in hdrs["Server-Timing"]
        async with s.get(g.url + "/health") as resp:
            assert resp.status == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fault_of_the_gateway_fails_that_request_alone(
    gateway: Any, two_topics: Any, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug on the request's way (here the backend's ``open`` raising) gives that request a
    500, releases its replica and leaves the connection and the gateway serving."""
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        async with gateway(make_config({"*": [srv.url]})) as g, aiohttp.ClientSession() as s:
            fleet = g.gateway.fleet
            replica = next(iter(fleet.replicas.values()))
            real_open = replica.backend.open

            def broken(*args: Any) -> Any:
                raise RuntimeError(f"a bug that quotes the prompt: {two_topics[0]}")

            replica.backend.open = broken  # type: ignore[method-assign]
            body = chat_body(two_topics[0], stream=stream)
            status, _, raw = await post(s, g.url + CHAT, body)
            assert status == 500
            assert json.loads(raw)["error"]["code"] == "internal_error"
            assert two_topics[0] not in caplog.text and "RuntimeError" in caplog.text
            assert replica.outstanding == 0
            replica.backend.open = real_open  # type: ignore[method-assign]
            status, _, _ = await post(s, g.url + CHAT, body)  # the same pooled connection
            assert status == 200
