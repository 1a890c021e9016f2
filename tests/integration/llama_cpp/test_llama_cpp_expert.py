"""A real llama.cpp server (llama-cpp-python, tiny random GGUF) as an expert behind the gateway.

The official ``openai`` client streams chat and completions through the gateway; with greedy
decoding the text must equal what llama.cpp answers directly, chunk for chunk.
"""

from __future__ import annotations

import pytest
from openai import OpenAI
from tiny_gguf import WORDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = "Tell me about the expert router and its stream"
MAX_TOKENS = 12


def _client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def _stream_chat(base_url: str) -> tuple[list[str], str | None, dict[str, str]]:
    with _client(base_url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            stream=True,
        )
        pieces: list[str] = []
        finish = None
        with raw.parse() as stream:
            for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
        return pieces, finish, dict(raw.headers)


def _stream_completion(base_url: str) -> tuple[list[str], str | None, dict[str, str]]:
    with _client(base_url) as client:
        raw = client.completions.with_raw_response.create(
            model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, stream=True
        )
        pieces: list[str] = []
        finish = None
        with raw.parse() as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    pieces.append(chunk.choices[0].text)
                if chunk.choices:
                    finish = chunk.choices[0].finish_reason or finish
        return pieces, finish, dict(raw.headers)


def _assert_words(pieces: list[str]) -> None:
    assert len(pieces) >= MAX_TOKENS // 2, pieces
    words = "".join(pieces).split()
    assert words, pieces
    assert set(words) <= set(WORDS), words


def test_llama_cpp_streams_directly(llama_url: str) -> None:
    pieces, finish, _ = _stream_chat(llama_url)
    _assert_words(pieces)
    assert finish == "length"


def test_chat_streams_through_the_gateway(llama_url: str, gateway_url: str) -> None:
    pieces, finish, headers = _stream_chat(gateway_url)
    _assert_words(pieces)
    assert finish == "length"
    assert headers["x-expert-router-cluster"].strip()
    assert headers["content-type"].startswith("text/event-stream")
    direct, _, _ = _stream_chat(llama_url)
    assert pieces == direct


def test_completions_stream_through_the_gateway(llama_url: str, gateway_url: str) -> None:
    pieces, finish, headers = _stream_completion(gateway_url)
    _assert_words(pieces)
    assert finish == "length"
    assert headers["x-expert-router-cluster"].strip()
    direct, _, _ = _stream_completion(llama_url)
    assert pieces == direct


def test_non_streaming_chat_through_the_gateway(gateway_url: str) -> None:
    with _client(gateway_url) as client:
        resp = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == MAX_TOKENS
    assert set((resp.choices[0].message.content or "").split()) <= set(WORDS)
