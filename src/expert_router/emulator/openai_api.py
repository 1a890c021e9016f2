"""OpenAI request parsing, answer planning and SSE chunk encoding for the emulator (no I/O).

``parse_request`` validates a completions / chat body into a ``Plan``: prompt tokens (shared
tokenizer), the number of tokens to generate (``max_tokens``, emulated EOS, ``min_tokens``,
``ignore_eos``, ``stop``) and the finish reason. ``ChunkEncoder`` renders one token per chunk.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from expert_router.errors import RequestError
from expert_router.tokenizer import TokenGenerator, count_tokens


class ContextLengthError(RequestError):
    """Prompt + completion exceed the model's context (vLLM's wording)."""


@dataclass(slots=True)
class Plan:
    """What the emulator will answer to one request."""

    chat: bool
    prompt_tokens: int
    max_tokens: int
    target: int
    finish_reason: str
    stream: bool
    include_usage: bool
    seed: int
    texts: list[str] | None = field(default=None)
    """Precomputed token texts (only when ``stop`` strings cut the answer)."""


def _err(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(f"'{key}' must be an integer, got {value!r}", key)
    if value < minimum:
        raise _err(f"'{key}' must be >= {minimum}, got {value}", key)
    return value


def _prompt(body: dict[str, Any], chat: bool) -> tuple[str, int]:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _err("'messages' must be a non-empty list", "messages")
        parts: list[str] = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise _err(f"messages[{i}] must be an object with a 'role'", f"messages.{i}")
            content = msg.get("content")
            if isinstance(content, list):
                content = "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise _err(f"messages[{i}].content must be a string", f"messages.{i}.content")
            parts.append(content)
        return "\n".join(parts), sum(count_tokens(p) for p in parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt, count_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        return " ".join(map(str, prompt)), len(prompt)
    raise _err("'prompt' must be a string, one-string list or list of token ids", "prompt")


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise _err("'stop' must be a string or a list of non-empty strings", "stop")
    return list(stop)


def eos_length(seed: int, mean_tokens: float) -> int:
    """Where the emulated end-of-sequence falls: 1 + exponential(mean), seeded per request."""
    return 1 + int(random.Random(seed ^ 0x5EED).expovariate(1.0 / mean_tokens))


def parse_request(
    body: Any, *, chat: bool, context: int, eos_mean_tokens: float
) -> tuple[Plan, str]:
    """Validate ``body``; returns the plan and the prompt text. Raises ``RequestError``."""
    if not isinstance(body, dict):
        raise _err("the request body must be a JSON object", "body")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _err("'model' must be a string", "model")
    text, prompt_tokens = _prompt(body, chat)
    n = _int(body, "n", 1)
    if n is not None and n != 1:
        raise _err("the emulator supports n=1 only", "n")
    max_tokens = _int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = _int(body, "max_completion_tokens", 1)
    min_tokens = _int(body, "min_tokens", 0) or 0
    ignore_eos = body.get("ignore_eos", False)
    stream = body.get("stream", False)
    for key, value in (("ignore_eos", ignore_eos), ("stream", stream)):
        if not isinstance(value, bool):
            raise _err(f"'{key}' must be a boolean", key)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _err("'stream_options' must be an object", "stream_options")
    include_usage = bool(options.get("include_usage", False))
    seed = _int(body, "seed", 0)
    stops = _stops(body)
    if max_tokens is None:
        max_tokens = max(context - prompt_tokens, 1)
    if prompt_tokens + max_tokens > context:
        raise ContextLengthError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion."
        )
    if min_tokens > max_tokens:
        raise _err(f"min_tokens ({min_tokens}) must be <= max_tokens ({max_tokens})", "min_tokens")
    seed = zlib.crc32(text.encode()) if seed is None else seed
    target, reason = max_tokens, "length"
    if not ignore_eos:
        eos = max(eos_length(seed, eos_mean_tokens), min_tokens)
        if eos < max_tokens:
            target, reason = eos, "stop"
    plan = Plan(chat, prompt_tokens, max_tokens, target, reason, stream, include_usage, seed)
    if stops:
        _apply_stops(plan, stops, min_tokens)
    return plan, text


def _apply_stops(plan: Plan, stops: list[str], min_tokens: int) -> None:
    """Cut the answer at the first stop string (not before ``min_tokens``); text excludes it."""
    gen = TokenGenerator(plan.seed)
    texts: list[str] = []
    full = ""
    for i in range(plan.target):
        tok = gen.next()
        texts.append(tok)
        full += tok
        if i + 1 < max(min_tokens, 1):
            continue
        window = full[-(len(tok) + max(map(len, stops))) :]
        hits = [window.find(s) for s in stops]
        hits = [h for h in hits if h >= 0]
        if hits:
            cut = len(full) - len(window) + min(hits)
            kept, out = 0, []
            for t in texts:
                out.append(t[: max(cut - kept, 0)])
                kept += len(t)
            plan.texts, plan.target, plan.finish_reason = out, i + 1, "stop"
            return


def error_body(exc: RequestError) -> dict[str, Any]:
    """The JSON of a 400: OpenAI's shape; vLLM's type for context-length errors."""
    if isinstance(exc, ContextLengthError):
        return {"error": {"message": str(exc), "type": "BadRequestError", "param": None,
                          "code": 400}}  # fmt: skip
    return {"error": {"message": str(exc), "type": "invalid_request_error",
                      "param": exc.param, "code": None}}  # fmt: skip


_JSON_CACHE: dict[str, bytes] = {}


def _json_str(text: str) -> bytes:
    cached = _JSON_CACHE.get(text)
    if cached is None:
        cached = json.dumps(text).encode()
        if len(_JSON_CACHE) < 4096:
            _JSON_CACHE[text] = cached
    return cached


class ChunkEncoder:
    """SSE bytes for one streamed answer: one token per ``data:`` event."""

    def __init__(self, plan: Plan, model: str, rid: str) -> None:
        self.plan = plan
        self.created = int(time.time())
        obj = "chat.completion.chunk" if plan.chat else "text_completion"
        head = f'data: {{"id":"{rid}","object":"{obj}","created":{self.created},'
        head += f'"model":{json.dumps(model)},'
        self._usage_head = head.encode()
        prefix = self._usage_head + b'"choices":[{"index":0,'
        self._head = prefix + (b'"delta":{"content":' if plan.chat else b'"text":')
        close = b"}" if plan.chat else b""
        self._mid = close + b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._end = close + b',"logprobs":null,"finish_reason":"%s"}]}\n\n'
        role = b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
        self.role = prefix + role + b"\n\n" if plan.chat else b""

    def token(self, text: str) -> bytes:
        return self._head + _json_str(text) + self._mid

    def last(self, text: str, reason: str) -> bytes:
        return self._head + _json_str(text) + self._end % reason.encode()

    def usage(self, completion_tokens: int) -> bytes:
        usage = usage_dict(self.plan.prompt_tokens, completion_tokens)
        return self._usage_head + b'"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n"


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def full_response(plan: Plan, model: str, rid: str, text: str, tokens: int) -> dict[str, Any]:
    """The non-streamed answer object."""
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": plan.finish_reason}
    if plan.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion" if plan.chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage_dict(plan.prompt_tokens, tokens),
    }
