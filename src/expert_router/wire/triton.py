"""Pure mapping between OpenAI requests/streams and TensorRT-LLM's Triton tensors (no I/O).

``TritonNames`` holds the (configurable) tensor names; ``PromptTemplate`` renders chat messages
into ``text_input``; ``from_tensors`` / ``to_tensors`` and ``openai_to_triton`` /
``triton_to_openai`` convert requests; ``OpenAIChunks`` renders Triton text pieces as OpenAI
SSE chunks. The KServe v2 wire side (raw tensors, protobuf messages, decoupled streams) is
``wire/kserve.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from expert_router.errors import RequestError

FINAL = "triton_final_response"
DEFAULT_MODEL = "ensemble"

# tensor -> (Triton datatype, Python kind)
TENSOR_TYPES: dict[str, str] = {
    "text_input": "BYTES",
    "max_tokens": "INT32",
    "stream": "BOOL",
    "end_id": "INT32",
    "pad_id": "INT32",
    "temperature": "FP32",
    "top_p": "FP32",
    "top_k": "INT32",
    "stop_words": "BYTES",
    "bad_words": "BYTES",
    "min_length": "INT32",
    "text_output": "BYTES",
}
OPTIONAL_INPUTS = (
    "end_id", "pad_id", "temperature", "top_p", "top_k", "stop_words", "bad_words", "min_length",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TritonNames:
    """Model and tensor names; ``rename`` maps a canonical tensor name to the model's own."""

    model: str = DEFAULT_MODEL
    rename: tuple[tuple[str, str], ...] = ()

    def __getitem__(self, canonical: str) -> str:
        for k, v in self.rename:
            if k == canonical:
                return v
        return canonical

    def canonical(self, name: str) -> str:
        for k, v in self.rename:
            if v == name:
                return k
        return name


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """``message`` is formatted per chat message (``{role}``, ``{content}``), then ``suffix``."""

    message: str = "{role}: {content}\n"
    suffix: str = "assistant: "

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        out = [
            self.message.format(role=m.get("role", "user"), content=_content(m)) for m in messages
        ]
        return "".join(out) + self.suffix


TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(),
    "raw": PromptTemplate("{content}\n", ""),
    "chatml": PromptTemplate(
        "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n"
    ),
    "llama3": PromptTemplate(
        "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
}


@dataclass(frozen=True, slots=True)
class TritonTarget:
    """What a ``grpc://`` / ``triton-http://`` URL's query configures."""

    names: TritonNames
    template: PromptTemplate


def target_from_query(query: str) -> TritonTarget:
    """``model=NAME&template=chatml&tensor.text_input=prompt...`` (every key optional)."""
    model, template, rename = DEFAULT_MODEL, TEMPLATES["plain"], []
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key == "model":
            model = value
        elif key == "template":
            if value not in TEMPLATES:
                known = ", ".join(TEMPLATES)
                raise RequestError(f"template: unknown {value!r} (known: {known})", param=key)
            template = TEMPLATES[value]
        elif key.startswith("tensor.") and key[7:] in TENSOR_TYPES:
            rename.append((key[7:], value))
        else:
            raise RequestError(f"unknown Triton URL option {key!r}", param=key)
    return TritonTarget(TritonNames(model, tuple(rename)), template)


def _content(msg: Mapping[str, Any]) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


# -- request mapping -------------------------------------------------------------------------
@dataclass(slots=True)
class TritonRequest:
    """A generation request in canonical tensor terms (one batch element)."""

    text: str
    max_tokens: int
    stream: bool = True
    end_id: int | None = None
    pad_id: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_words: list[str] | None = None
    bad_words: list[str] | None = None
    min_length: int | None = None


def _expect(name: str, value: Any, kinds: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise RequestError(
            f"input '{name}': expected {kinds[0].__name__}, got {value!r}", param=name
        )
    return value


def from_tensors(values: Mapping[str, list[Any]]) -> TritonRequest:
    """Check decoded inputs (canonical names -> elements) into a ``TritonRequest``."""
    if "text_input" not in values or not values["text_input"]:
        raise RequestError("input 'text_input' is required", param="text_input")
    text = values["text_input"][0]
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise RequestError("input 'text_input' is not UTF-8", param="text_input") from exc
    if not isinstance(text, str):
        raise RequestError("input 'text_input' must be BYTES", param="text_input")
    if "max_tokens" not in values or not values["max_tokens"]:
        raise RequestError("input 'max_tokens' is required", param="max_tokens")
    max_tokens = _int32("max_tokens", values["max_tokens"][0])
    if max_tokens < 1:
        raise RequestError(f"input 'max_tokens' must be >= 1, got {max_tokens}", param="max_tokens")
    req = TritonRequest(text, max_tokens)
    if values.get("stream"):
        req.stream = bool(_expect("stream", values["stream"][0], (bool, int)))
    for key in ("end_id", "pad_id", "top_k", "min_length"):
        if values.get(key):
            setattr(req, key, _int32(key, values[key][0]))
    for key in ("temperature", "top_p"):
        if values.get(key):
            setattr(req, key, float(_expect(key, values[key][0], (float, int))))
    for key in ("stop_words", "bad_words"):
        if values.get(key):
            setattr(req, key, [w for w in (_word(key, w) for w in values[key]) if w])
    return req


def _int32(name: str, value: Any) -> int:
    """An integer the INT32 tensor it is sent as holds (the client may send it as INT64)."""
    n: int = _expect(name, value, (int,))
    if not -(2**31) <= n < 2**31:
        raise RequestError(f"input '{name}' is out of the INT32 range, got {n}", param=name)
    return n


def _word(name: str, word: Any) -> str:
    if not isinstance(word, bytes):
        return str(word)
    try:
        return word.decode()
    except UnicodeDecodeError as exc:
        raise RequestError(f"input '{name}' holds a word that is not UTF-8", param=name) from exc


def to_tensors(req: TritonRequest) -> list[tuple[str, str, list[Any]]]:
    """(canonical name, datatype, elements) of every input to send."""
    out: list[tuple[str, str, list[Any]]] = [
        ("text_input", "BYTES", [req.text.encode()]),
        ("max_tokens", "INT32", [req.max_tokens]),
        ("stream", "BOOL", [req.stream]),
    ]
    for key in OPTIONAL_INPUTS:
        value = getattr(req, key)
        if value is None:
            continue
        if key in ("stop_words", "bad_words"):
            if value:
                out.append((key, "BYTES", [w.encode() for w in value]))
        else:
            out.append((key, TENSOR_TYPES[key], [value]))
    return out


def openai_to_triton(payload: Mapping[str, Any], template: PromptTemplate) -> TritonRequest:
    """An OpenAI chat or completion request (its shape checked by the gateway) as tensors.
    ``RequestError`` (the client's fault: 400, the replica not blamed) for a value the tensors
    cannot carry: a token count that is not an integer in INT32 range, a sampling parameter
    that is not a finite FP32 number."""
    if "messages" in payload:
        text = template.render(payload["messages"])
    else:
        prompt = payload.get("prompt", "")
        text = (
            prompt if isinstance(prompt, str) else "".join(p for p in prompt if isinstance(p, str))
        )
    max_tokens = _openai_int(payload, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = _openai_int(payload, "max_completion_tokens", 1)
    req = TritonRequest(text, 256 if max_tokens is None else max_tokens)
    req.stream = payload.get("stream") is True
    req.temperature = _openai_fp32(payload, "temperature")
    req.top_p = _openai_fp32(payload, "top_p")
    req.top_k = _openai_int(payload, "top_k", -(2**31))  # (-1: vLLM's "no top-k")
    req.min_length = _openai_int(payload, "min_tokens", 0)
    if payload.get("ignore_eos") is True:
        req.end_id = -1  # no token has id -1: the end token is never matched
    stop = payload.get("stop")
    if isinstance(stop, str):
        req.stop_words = [stop]
    elif isinstance(stop, list):
        req.stop_words = [s for s in stop if isinstance(s, str) and s]
    return req


_FP32_MAX = 3.4028234663852886e38


def _openai_int(payload: Mapping[str, Any], key: str, least: int) -> int | None:
    """``payload[key]`` as an INT32 tensor takes it (None: absent or null)."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**31:
        raise RequestError(f"'{key}' must be an integer from {least} to {2**31 - 1}", param=key)
    return value


def _openai_fp32(payload: Mapping[str, Any], key: str) -> float | None:
    """``payload[key]`` as an FP32 tensor takes it (None: absent or null)."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= _FP32_MAX:
        raise RequestError(f"'{key}' must be a finite number", param=key)
    return float(value)


def triton_to_openai(req: TritonRequest, model: str | None = None) -> dict[str, Any]:
    """A Triton request as an OpenAI completion body (the gateway forwards it upstream)."""
    body: dict[str, Any] = {"prompt": req.text, "max_tokens": req.max_tokens, "stream": True}
    if model:
        body["model"] = model
    for key in ("temperature", "top_p", "top_k"):
        if getattr(req, key) is not None:
            body[key] = getattr(req, key)
    if req.min_length is not None:
        body["min_tokens"] = min(req.min_length, req.max_tokens)
        if req.min_length >= req.max_tokens:
            body["ignore_eos"] = True
    if req.end_id == -1:
        body["ignore_eos"] = True
    if req.stop_words:
        body["stop"] = req.stop_words[:4]
    return body


# -- streams ---------------------------------------------------------------------------------
class OpenAIChunks:
    """OpenAI SSE bytes for text pieces arriving from Triton (chat or text completion)."""

    __slots__ = ("_head", "_mid", "_end", "role", "chat", "created", "model", "rid")

    def __init__(self, chat: bool, model: str, rid: str) -> None:
        self.chat, self.model, self.rid = chat, model, rid
        self.created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        prefix = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{self.created},'
            f'"model":{json.dumps(model)},"choices":[{{"index":0,'
        ).encode()
        self._head = prefix + (b'"delta":{"content":' if chat else b'"text":')
        close = b"}" if chat else b""
        self._mid = close + b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._end = close + b',"logprobs":null,"finish_reason":"%s"}]}\n\n'
        role = b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
        self.role = prefix + role + b"\n\n" if chat else b""

    def piece(self, text: str) -> bytes:
        return self._head + json.dumps(text).encode() + self._mid

    def last(self, text: str, reason: str) -> bytes:
        return (
            self._head
            + json.dumps(text).encode()
            + self._end % reason.encode()
            + b"data: [DONE]\n\n"
        )

    def full(self, text: str, reason: str, prompt_tokens: int = 0, tokens: int = 0) -> bytes:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": reason}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        body = {
            "id": self.rid,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        return json.dumps(body).encode()


def openai_event_text(data: str) -> tuple[str, str | None]:
    """(text, finish_reason) of one OpenAI SSE event's JSON; ``RequestError`` for an error."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        return "", None
    if "error" in obj:
        err = obj["error"]
        raise RequestError(str(err.get("message") if isinstance(err, dict) else err))
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", None  # no choice, or not one shaped as OpenAI's: no text
    c = choices[0]
    text = c.get("text")
    if text is None:
        inner = c.get("delta") or c.get("message")
        text = inner.get("content") if isinstance(inner, dict) else None
    reason = c.get("finish_reason")
    return (text if isinstance(text, str) else ""), None if reason is None else str(reason)
