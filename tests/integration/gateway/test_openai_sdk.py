"""The official openai SDK talks to emulated experts through the gateway."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from gwhelpers import make_config

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration
# An unknown field for OpenAI, known to the emulator: proves unknown fields pass through.
EXTRA = {"ignore_eos": True}


async def test_chat_and_completions_stream_and_not(gateway: Any, two_topics: Any) -> None:
    text, cluster, _, _ = two_topics
    async with (
        serve_emulator("cpu-tiny", tpot_ms=2, ttft_ms=5) as srv,
        gateway(make_config({"*": [srv.url]})) as gw,
    ):
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        try:
            chunks = []
            raw = await client.chat.completions.with_raw_response.create(
                model="anything",
                messages=[{"role": "user", "content": text}],
                max_tokens=12,
                stream=True,
                extra_body=EXTRA,
            )
            assert raw.headers["x-expert-router-cluster"] == str(cluster)
            assert raw.headers["x-expert-router-replica"]
            assert "classify;dur=" in raw.headers["server-timing"]
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks.append(chunk.choices[0].delta.content)
            assert len(chunks) == 12

            full = await client.chat.completions.create(
                model="anything",
                messages=[{"role": "user", "content": text}],
                max_tokens=5,
                extra_body=EXTRA,
            )
            assert full.choices[0].message.content
            assert full.usage is not None and full.usage.completion_tokens == 5

            parts = []
            stream = await client.completions.create(
                model="anything", prompt=text, max_tokens=7, stream=True, extra_body=EXTRA
            )
            async for c in stream:
                parts.append(c.choices[0].text)
            assert len([p for p in parts if p]) == 7

            comp = await client.completions.create(
                model="anything", prompt=text, max_tokens=3, extra_body=EXTRA
            )
            assert comp.choices[0].text
            models = await client.models.list()
            assert [m.id for m in models.data] == ["expert-router"]
        finally:
            await client.close()
        assert srv.engine.num_running == 0


async def test_upstream_model_name_is_rewritten_only_when_configured(
    gateway: Any, two_topics: Any
) -> None:
    async with (
        serve_emulator("cpu-tiny", tpot_ms=1, model_name="served-name") as srv,
        gateway(make_config({"*": [{"url": srv.url, "model": "served-name"}]})) as gw,
    ):
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        try:
            out = await client.chat.completions.create(
                model="whatever",
                messages=[{"role": "user", "content": two_topics[0]}],
                max_tokens=2,
                extra_body={"unknown_field": {"kept": True}},
            )
            assert out.model == "served-name"
            ids = [m.id for m in (await client.models.list()).data]
            assert ids == ["expert-router", "served-name"]
        finally:
            await client.close()
