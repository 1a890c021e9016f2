"""The OpenAI-compatible streaming client (vLLM, SGLang, TGI, llama.cpp, the emulator, the gateway).

Asks for exactly ``max_tokens`` tokens (``max_tokens``, ``min_tokens``, ``ignore_eos``), reads
the SSE stream with ``iter_any`` and stamps each network read once with ``perf_counter_ns``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from expert_router.bench.protocols.base import ClientSettings, Message, StreamFailed, StreamSink

_now = time.perf_counter_ns
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class OpenAIClient:
    """Streams chat or text completions from one OpenAI-compatible base URL."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        base = settings.target.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        path = "/v1/chat/completions" if settings.endpoint == "chat" else "/v1/completions"
        self.url = base + path
        self.models_url = base + "/v1/models"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=self.settings.request_timeout,
                    sock_connect=self.settings.connect_timeout,
                ),
            )
        return self._session

    async def warm_up(self, connections: int, deadline_ns: int) -> None:
        """Open up to ``connections`` keep-alive connections (``GET /v1/models``) before the
        run starts, so that no user's first TTFT pays a TCP handshake. Best effort: failures
        are ignored and whatever is still open at ``deadline_ns`` (``perf_counter_ns``) stops.
        """
        session = self._get_session()

        async def one() -> None:
            async with session.get(self.models_url) as resp:
                await resp.read()

        timeout = (deadline_ns - _now()) / 1e9 - 0.2
        if connections < 1 or timeout <= 0:
            return
        tasks = [asyncio.ensure_future(one()) for _ in range(connections)]
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def body(self, messages: Sequence[Message], max_tokens: int) -> dict[str, Any]:
        """The request body: exactly ``max_tokens`` output tokens, streamed."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "stream": True,
            "max_tokens": max_tokens,
            "min_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
        }
        if self.settings.endpoint == "chat":
            body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        else:
            body["prompt"] = "\n\n".join(m.content for m in messages)
        return body

    async def stream(self, messages: Sequence[Message], max_tokens: int, sink: StreamSink) -> None:
        data = json.dumps(self.body(messages, max_tokens)).encode()
        chat = self.settings.endpoint == "chat"
        async with self._get_session().post(self.url, data=data, headers=self._headers) as resp:
            sink.headers(resp.status, resp.headers)
            if resp.status != 200:
                detail = (await resp.read())[:300].decode("utf-8", errors="replace")
                raise StreamFailed(f"HTTP {resp.status}: {detail}", http_status=resp.status)
            buf = b""
            async for raw in resp.content.iter_any():
                t = _now()
                buf = buf + raw if buf else raw
                if b"\r" in buf:
                    buf = buf.replace(b"\r\n", b"\n")
                while (end := buf.find(b"\n\n")) >= 0:
                    event, buf = buf[:end], buf[end + 2 :]
                    payload = _data(event)
                    if payload is None:
                        continue
                    if payload == b"[DONE]":
                        return
                    text = _text(payload, chat)
                    if text:
                        sink.text(t, text)
        raise StreamFailed("stream ended without [DONE]", http_status=200)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _data(event: bytes) -> bytes | None:
    """The ``data`` payload of one SSE event (``None`` for comments and other fields)."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


_CONTENT = b'"content":'
_TEXT = b'"text":'


def _text(payload: bytes, chat: bool) -> str | None:
    """The generated text carried by one event's payload; raises on an in-stream error.

    Fast path: the JSON string after ``"content":`` (chat) or ``"text":`` is decoded alone
    (C ``scanstring``); anything else (errors, usage, unusual shapes) is parsed in full.
    """
    key = _CONTENT if chat else _TEXT
    i = payload.find(key)
    if i >= 0 and b'"error"' not in payload:
        j = i + len(key)
        while payload[j : j + 1] == b" ":
            j += 1
        if payload[j : j + 1] == b'"':
            try:
                text: str = _scanstring(payload.decode("utf-8"), j + 1 - _offset(payload, j))[0]
                return text
            except (ValueError, UnicodeDecodeError):
                pass
    return _parse(payload.decode("utf-8", errors="replace"), chat)


def _offset(payload: bytes, j: int) -> int:
    """Bytes minus characters before position ``j`` (non-zero only for non-ASCII prefixes)."""
    prefix = payload[:j]
    return 0 if prefix.isascii() else len(prefix) - len(prefix.decode("utf-8"))


def _parse(event: str, chat: bool) -> str | None:
    """The generated text of one event by a full JSON parse; raises on an in-stream error."""
    try:
        obj = json.loads(event)
    except ValueError as exc:
        raise StreamFailed(f"unparseable event: {event[:100]!r}", http_status=200) from exc
    if not isinstance(obj, dict):
        return None
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise StreamFailed(f"in-stream error: {msg}", http_status=200)
    choices = obj.get("choices")
    if not choices:
        return None
    choice = choices[0]
    if chat:
        delta = choice.get("delta") or {}
        text = delta.get("content")
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else None
