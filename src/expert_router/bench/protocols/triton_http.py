"""Triton's HTTP generate extension as a bench client (``--protocol triton-http``).

POSTs ``/v2/models/{model}/generate_stream`` asking for exactly ``max_tokens`` tokens and
reads the SSE stream of ``text_output`` events, stamping each network read on receipt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import aiohttp

from expert_router.bench.protocols.base import ClientSettings, Message, StreamFailed, StreamSink
from expert_router.bench.protocols.triton_grpc import model_of, prompt_of, strip_scheme
from expert_router.wire.sse import SSEDecoder

_now = time.perf_counter_ns


class TritonHttpClient:
    """Streams ``generate_stream`` answers from one Triton (or emulator) HTTP endpoint."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.url = f"http://{strip_scheme(settings.target)}/v2/models/{model_of(settings)}"
        self.url += "/generate_stream"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(
                    total=self.settings.request_timeout,
                    sock_connect=self.settings.connect_timeout,
                ),
            )
        return self._session

    async def stream(self, messages: Sequence[Message], max_tokens: int, sink: StreamSink) -> None:
        body = {
            "text_input": prompt_of(messages),
            "max_tokens": max_tokens,
            "min_length": max_tokens,
            "stream": True,
        }
        async with self._get_session().post(self.url, json=body) as resp:
            sink.headers(resp.status, resp.headers)
            if resp.status != 200:
                detail = (await resp.read())[:300].decode("utf-8", errors="replace")
                raise StreamFailed(f"HTTP {resp.status}: {detail}", http_status=resp.status)
            events = SSEDecoder()
            async for raw in resp.content.iter_any():
                t = _now()
                for payload in events.feed(raw):
                    obj = json.loads(payload)
                    if "error" in obj:
                        raise StreamFailed(f"in-stream error: {obj['error']}", http_status=200)
                    text = obj.get("text_output")
                    if isinstance(text, str) and text:
                        sink.text(t, text)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
