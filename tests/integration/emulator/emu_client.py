"""A minimal timed SSE client for the emulator's integration tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Streamed:
    start: float
    status: int = 0
    first: float | None = None
    times: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.start

    @property
    def tpot(self) -> float:
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


async def stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], *, chat: bool = False
) -> Streamed:
    """POST a streaming request and time every token event."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    out = Streamed(start=time.perf_counter())
    async with session.post(url + path, json={**body, "stream": True}) as resp:
        out.status = resp.status
        async for line in resp.content:
            now = time.perf_counter()
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                out.done = True
                break
            event = json.loads(data)
            if event.get("usage"):
                out.usage = event["usage"]
            for choice in event.get("choices", []):
                text = choice["delta"].get("content") if chat else choice["text"]
                if text:
                    out.first = out.first if out.first is not None else now
                    out.times.append(now)
                    out.texts.append(text)
                if choice.get("finish_reason"):
                    out.finish_reason = choice["finish_reason"]
    return out


def words(n: int) -> str:
    """A prompt of exactly ``n`` tokens."""
    return "word" + " word" * (n - 1)
