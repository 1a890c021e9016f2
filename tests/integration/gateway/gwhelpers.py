"""Helpers for gateway integration tests: configs, request bodies, polling."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from expert_router.config import GatewayConfig, validate_gateway_config


def make_config(experts: dict[str, list[Any]], **overrides: Any) -> GatewayConfig:
    """``experts`` maps cluster -> replica URLs or replica dicts."""
    data: dict[str, Any] = {
        "experts": {
            c: {"replicas": [r if isinstance(r, dict) else {"url": r} for r in reps]}
            for c, reps in experts.items()
        },
        **overrides,
    }
    return validate_gateway_config(data)


def chat_body(text: str, *, stream: bool = False, max_tokens: int = 8, **kw: Any) -> dict[str, Any]:
    return {
        "model": "any",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **kw,
    }


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, json=body, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request read by a scripted test upstream: its head and its (Content-Length) body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)
