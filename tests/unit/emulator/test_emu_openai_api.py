"""Request validation, answer planning (EOS, min_tokens, stop) and SSE chunk encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from expert_router.emulator.openai_api import (
    ChunkEncoder,
    ContextLengthError,
    Plan,
    error_body,
    parse_request,
)
from expert_router.errors import RequestError
from expert_router.tokenizer import TokenGenerator, count_tokens


def plan(body: dict[str, Any], chat: bool = False, context: int = 4096) -> Plan:
    return parse_request(body, chat=chat, context=context, eos_mean_tokens=20)[0]


def test_prompt_tokens_use_the_shared_tokenizer() -> None:
    text = "Hello, world! The emulator counts 123 tokens."
    assert plan({"prompt": text, "max_tokens": 3}).prompt_tokens == count_tokens(text)
    chat = {"messages": [{"role": "system", "content": "a b"}, {"role": "user", "content": "c"}]}
    assert plan({**chat, "max_tokens": 3}, chat=True).prompt_tokens == 3
    assert plan({"prompt": [1, 2, 3, 4], "max_tokens": 1}).prompt_tokens == 4


def test_ignore_eos_and_min_tokens_give_max_tokens() -> None:
    seeds = range(50)
    assert all(plan({"prompt": "x", "max_tokens": 300, "ignore_eos": True, "seed": s}).target
               == 300 for s in seeds)  # fmt: skip
    assert all(plan({"prompt": "x", "max_tokens": 300, "min_tokens": 300, "seed": s}).target
               == 300 for s in seeds)  # fmt: skip
    free = [plan({"prompt": "x", "max_tokens": 300, "seed": s}) for s in seeds]
    assert any(p.target < 300 and p.finish_reason == "stop" for p in free)
    assert plan({"prompt": "x", "max_tokens": 300, "seed": 7}).target == free[7].target


def test_context_length_error_in_vllm_words() -> None:
    with pytest.raises(ContextLengthError) as info:
        plan({"prompt": "a" + " a" * 89, "max_tokens": 20}, context=100)
    msg = str(info.value)
    assert "maximum context length is 100 tokens" in msg and "(90 in the messages, 20 in" in msg
    assert error_body(info.value)["error"]["code"] == 400
    assert plan({"prompt": "a" + " a" * 89}, context=100).max_tokens == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 3}, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "max_tokens": 2, "min_tokens": 3}, "min_tokens"),
        ([], "body"),
    ],
)
def test_malformed_requests_name_the_param(body: Any, param: str) -> None:
    with pytest.raises(RequestError) as info:
        plan(body)
    err = error_body(info.value)["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_chat_requires_messages() -> None:
    with pytest.raises(RequestError, match="messages"):
        plan({"messages": []}, chat=True)
    with pytest.raises(RequestError, match="content"):
        plan({"messages": [{"role": "user", "content": 5}]}, chat=True)


def test_stop_string_cuts_the_answer() -> None:
    gen = TokenGenerator(11)
    tokens = [gen.next() for _ in range(40)]
    stop = tokens[9].strip()  # a word that appears by token 10 at the latest
    first = next(i for i, t in enumerate(tokens) if stop in t)
    p = plan({"prompt": "x", "max_tokens": 40, "ignore_eos": True, "seed": 11, "stop": stop})
    assert p.finish_reason == "stop" and p.target == first + 1
    assert p.texts is not None and stop not in "".join(p.texts)
    assert "".join(p.texts) == "".join(tokens)[: "".join(tokens).index(stop)]


@pytest.mark.parametrize("chat", [False, True])
def test_chunks_are_valid_json_with_one_token_each(chat: bool) -> None:
    body = {"prompt": "x", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    enc = ChunkEncoder(plan(body, chat=chat), 'model "q"', "id-1")
    events = [enc.token(' the "x"'), enc.last(" end", "length"), enc.usage(3)]
    if chat:
        events.insert(0, enc.role)
    decoded = []
    for ev in events:
        assert ev.startswith(b"data: ") and ev.endswith(b"\n\n")
        decoded.append(json.loads(ev[6:]))
    assert all(d["model"] == 'model "q"' and d["id"] == "id-1" for d in decoded)
    key = "delta" if chat else None
    tok, last = decoded[-3], decoded[-2]
    text = tok["choices"][0][key]["content"] if key else tok["choices"][0]["text"]
    assert text == ' the "x"' and tok["choices"][0]["finish_reason"] is None
    assert last["choices"][0]["finish_reason"] == "length"
    assert decoded[-1]["choices"] == [] and decoded[-1]["usage"]["total_tokens"] == 4
    if chat:
        assert decoded[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
