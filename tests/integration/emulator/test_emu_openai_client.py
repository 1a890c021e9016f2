"""The official ``openai`` client against the emulator."""

from __future__ import annotations

import openai
import pytest

from expert_router.emulator import serve_emulator
from expert_router.tokenizer import count_tokens

pytestmark = pytest.mark.integration


async def test_openai_client_stream_and_plain() -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=2, ttft_ms=2, model_name="expert-7") as srv:
        client = openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        try:
            models = await client.models.list()
            assert [m.id for m in models.data] == ["expert-7"]
            chunks = await client.chat.completions.create(
                model="expert-7",
                messages=[{"role": "user", "content": "Tell me about rivers."}],
                max_tokens=25,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            pieces, usage, reasons = [], None, []
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces.append(choice.delta.content)
                    if choice.finish_reason:
                        reasons.append(choice.finish_reason)
            assert len(pieces) == 25 and count_tokens("".join(pieces)) == 25
            assert reasons == ["length"]
            assert usage is not None and usage.completion_tokens == 25
            assert usage.prompt_tokens == count_tokens("Tell me about rivers.")

            plain = await client.completions.create(
                model="expert-7", prompt="Once upon a time", max_tokens=30,
                extra_body={"min_tokens": 30},
            )  # fmt: skip
            assert plain.usage is not None and plain.usage.completion_tokens == 30
            assert count_tokens(plain.choices[0].text) == 30

            with pytest.raises(openai.BadRequestError, match="maximum context length"):
                await client.completions.create(model="expert-7", prompt="x", max_tokens=10**6)
        finally:
            await client.close()
