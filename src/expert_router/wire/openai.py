"""OpenAI request checks, the text the classifier reads, and OpenAI-shaped error bodies.

Only what routing needs is checked (``messages``/``prompt``, ``stream``, ``model``); every
other field passes through untouched. Errors are ``RequestError`` naming the field (``param``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from expert_router.errors import RequestError

Kind = Literal["chat", "completion"]
TextMode = Literal["last_user", "all_user", "full"]


@dataclass(slots=True)
class ParsedRequest:
    """A checked request: the payload as parsed, and what the gateway reads from it."""

    kind: Kind
    payload: dict[str, Any]
    stream: bool
    model: str | None


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API returns it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_bytes(message: str, **kw: Any) -> bytes:
    return json.dumps(error_body(message, **kw)).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # one, not one per request
_BOM = b"\xef\xbb\xbf"
_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # |n| >= 2**63 takes 19 digits at least
MAX_JSON_DEPTH = 1024
"""Levels of nesting a request body may have: orjson's own limit, which ``parse_json`` keeps."""


def parse_json(body: bytes) -> Any:
    """Strict JSON (RFC 8259): UTF-8 (a leading byte order mark is ignored), no
    ``NaN``/``Infinity``, no lone surrogate escape, no number beyond a double, at most
    ``MAX_JSON_DEPTH`` levels deep; an integer beyond 64 bits reads as a float (``with_model``
    keeps it exact). ``RequestError`` (code ``invalid_json``) names what is wrong, never quoting
    the body.

    orjson reads every body (less than half the standard library's time on a core that has
    just woken: docs/benchmarks.md); what it refuses is read again by the standard library,
    only to name the reason.
    """
    try:
        return orjson.loads(body[3:] if body[:3] == _BOM else body)
    except orjson.JSONDecodeError as exc:
        why = _reason(body, exc)
    raise RequestError(f"request body is not valid JSON: {why}", code="invalid_json")


def _reason(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``body`` is not JSON, in the standard library's words where it refuses it too."""
    try:
        text = body.decode()
        _DECODER.decode(text[1:] if text[:1] == "\ufeff" else text)
    except RecursionError:
        return "nested too deeply"
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as std:
        return f"{std.msg} at byte {std.pos}"
    except ValueError as std:
        return str(std)
    return exc.msg  # refused by orjson alone: a lone surrogate, a number beyond a double, depth


def parse_body(body: bytes, kind: Kind | None) -> ParsedRequest:
    """Parse and check a chat or completion request body (``kind`` None: a chat when the
    object has ``messages``, else a completion)."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object", param=None)
    if kind is None:
        kind = "chat" if "messages" in payload else "completion"
    if kind == "chat":
        _check_messages(payload)
    else:
        _check_prompt(payload)
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean", param="stream")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("'model' must be a string", param="model")
    return ParsedRequest(kind, payload, stream, model)


def _check_messages(payload: dict[str, Any]) -> None:
    if "messages" not in payload:
        raise RequestError("'messages' is a required property", param="messages")
    messages = payload["messages"]
    if not isinstance(messages, list):
        raise RequestError("'messages' must be an array", param="messages")
    if not messages:
        raise RequestError("'messages' must not be empty", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RequestError(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        if not isinstance(msg.get("role"), str):
            raise RequestError(
                f"'messages[{i}].role' must be a string", param=f"messages[{i}].role"
            )
        content = msg.get("content")
        if content is not None and not isinstance(content, (str, list)):  # no Union per call
            raise RequestError(
                f"'messages[{i}].content' must be a string or an array of parts",
                param=f"messages[{i}].content",
            )


def _check_prompt(payload: dict[str, Any]) -> None:
    if "prompt" not in payload:
        raise RequestError("'prompt' is a required property", param="prompt")
    prompt = payload["prompt"]
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and all(
        isinstance(p, (str, int)) and not isinstance(p, bool) or isinstance(p, list) for p in prompt
    ):
        return
    raise RequestError("'prompt' must be a string or an array of strings", param="prompt")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def classify_text(req: ParsedRequest, mode: TextMode = "last_user") -> str:
    """The text the classifier reads: the last user message, all user messages, or all."""
    if req.kind == "completion":
        prompt = req.payload["prompt"]
        if isinstance(prompt, str):
            return prompt
        return "\n".join(p for p in prompt if isinstance(p, str))
    messages: list[dict[str, Any]] = req.payload["messages"]
    if mode == "last_user":
        for msg in reversed(messages):
            if msg.get("role") == "user":
                return _content_text(msg.get("content"))
        return _content_text(messages[-1].get("content"))
    if mode == "all_user":
        return "\n".join(
            _content_text(m.get("content")) for m in messages if m.get("role") == "user"
        )
    return "\n".join(_content_text(m.get("content")) for m in messages)


def with_model(req: ParsedRequest, body: bytes, model: str | None) -> bytes:
    """The body to send upstream: the original bytes unless the model name must change.

    Rewritten, every other field keeps its value: orjson reads an integer beyond 64 bits as a
    float, so a body that may hold one (a run of 19 digits) is read again by the standard
    library, whose integers are exact.
    """
    if model is None or model == req.model:
        return body
    with _deep():  # as deep as parse_json reads
        if _LONG_DIGITS.search(body) is None:
            payload = dict(req.payload)
        else:
            payload = json.loads(body[3:] if body[:3] == _BOM else body)
        payload["model"] = model
        return json.dumps(payload, separators=(",", ":")).encode()


@contextmanager
def _deep() -> Iterator[None]:
    """Room for the standard library's JSON to nest ``MAX_JSON_DEPTH`` levels (its reader and
    writer recurse once per level; the interpreter's default limit is 1000 frames)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + MAX_JSON_DEPTH + 64)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)
