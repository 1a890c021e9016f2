"""The emulator as a Triton server, driven by the official tritonclient (grpc.aio and http)."""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from triton_helpers import Emulator, inputs, stream_texts
from tritonclient.utils import InferenceServerException

from expert_router.tokenizer import count_tokens

pytestmark = pytest.mark.integration


async def test_health_and_metadata(emu: Emulator) -> None:
    client = grpcclient.InferenceServerClient(emu.target)
    try:
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("ensemble")
        assert not await client.is_model_ready("llama")
        meta = await client.get_model_metadata("ensemble", as_json=True)
        names = {i["name"] for i in meta["inputs"]}
        assert {"text_input", "max_tokens", "stream", "end_id", "stop_words"} <= names
        assert meta["outputs"][0]["name"] == "text_output"
        with pytest.raises(InferenceServerException, match="unknown model: 'llama'") as e:
            await client.get_model_metadata("llama")
        assert e.value.status() == "StatusCode.NOT_FOUND"
        server = await client.get_server_metadata(as_json=True)
        assert server["name"] == "triton"
    finally:
        await client.close()


async def test_stream_exact_length_and_final_flag_on_last_message(emu: Emulator) -> None:
    client = grpcclient.InferenceServerClient(emu.target)
    try:
        reqs = [
            {"model_name": "ensemble", "inputs": inputs("first prompt", 7), "request_id": "a"},
            {"model_name": "ensemble", "inputs": inputs("second prompt", 4), "request_id": "b"},
        ]
        got = await stream_texts(client, reqs)
        for rid, n in (("a", 7), ("b", 4)):
            msgs = got[rid]
            assert [f for _, f in msgs] == [False] * (len(msgs) - 1) + [True]
            assert count_tokens("".join(t for t, _ in msgs)) == n
        unary = await client.infer("ensemble", inputs("first prompt", 7, stream=False))
        full = b"".join(unary.as_numpy("text_output").ravel()).decode()
        assert full == "".join(t for t, _ in got["a"])  # same prompt, same answer
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("model", "extra", "code", "message"),
    [
        ("llama", {}, "NOT_FOUND", "unknown model: 'llama'"),
        ("ensemble", {"text_input": (None, "")}, "INVALID_ARGUMENT", "'text_input' is required"),
        (
            "ensemble",
            {"max_tokens": (np.array([[2.5]], dtype=np.float32), "FP32")},
            "INVALID_ARGUMENT",
            "input 'max_tokens': expected int",
        ),
        (
            "ensemble",
            {"colour": (np.array([[1]], dtype=np.int32), "INT32")},
            "INVALID_ARGUMENT",
            "unexpected inference input 'colour'",
        ),
    ],
)
async def test_errors_map_to_grpc_codes(
    emu: Emulator, model: str, extra: dict[str, Any], code: str, message: str
) -> None:
    client = grpcclient.InferenceServerClient(emu.target)
    try:
        with pytest.raises(InferenceServerException, match=message) as e:
            await client.infer(model, inputs(override=extra))
        assert e.value.status() == f"StatusCode.{code}"
        # On a stream the same failure arrives as the response's error message.
        with pytest.raises(InferenceServerException, match=message):
            req = {"model_name": model, "inputs": inputs(override=extra), "request_id": "x"}
            await stream_texts(client, [req])
    finally:
        await client.close()


async def test_http_generate_and_generate_stream(emu: Emulator) -> None:
    host = emu.url.removeprefix("http://")
    client = httpclient.InferenceServerClient(host)
    try:
        assert await client.is_server_live() and await client.is_model_ready("ensemble")
    finally:
        await client.close()
    body = {"text_input": "bread", "max_tokens": 5, "min_length": 5}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{emu.url}/v2/models/ensemble/generate", json=body) as r:
            assert r.status == 200
            full = (await r.json())["text_output"]
        async with s.post(
            f"{emu.url}/v2/models/ensemble/generate_stream", json={**body, "stream": True}
        ) as r:
            assert r.status == 200 and r.content_type == "text/event-stream"
            raw = (await r.read()).decode()
        async with s.post(f"{emu.url}/v2/models/nope/generate", json=body) as r:
            assert r.status == 404 and "unknown model: 'nope'" in (await r.json())["error"]
        async with s.post(f"{emu.url}/v2/models/ensemble/generate", json={"max_tokens": 2}) as r:
            assert r.status == 400 and "'text_input' is required" in (await r.json())["error"]
    import json

    pieces = [json.loads(line[5:])["text_output"] for line in raw.split("\n\n") if line]
    assert len(pieces) == 5 and "".join(pieces) == full and count_tokens(full) == 5
