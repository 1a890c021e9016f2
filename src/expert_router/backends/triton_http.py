"""Triton / TensorRT-LLM upstreams over HTTP (``triton-http://HOST:PORT[?model=&template=]``).

Streams through Triton's ``/v2/models/{model}/generate_stream`` (SSE of ``text_output``) on
the gateway's shared aiohttp session and re-emits OpenAI chunks; health is
``/v2/health/live`` + ``/v2/models/{model}/ready``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp

from expert_router.backends.base import BackendRequest, BackendSettings, Listener
from expert_router.backends.openai import unreachable
from expert_router.backends.tasks import TaskCall
from expert_router.backends.triton_grpc import TritonResponse, parse_target, translate
from expert_router.errors import (
    BackendProtocolError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)
from expert_router.wire import triton as tw
from expert_router.wire.openai import error_bytes
from expert_router.wire.sse import SSEDecoder

_ids = itertools.count(1)


def generate_body(req: tw.TritonRequest) -> dict[str, Any]:
    """The JSON of a ``generate`` / ``generate_stream`` request (canonical tensor names)."""
    body: dict[str, Any] = {}
    for name, _, elems in tw.to_tensors(req):
        value = [e.decode() if isinstance(e, bytes) else e for e in elems]
        body[name] = value if name in ("stop_words", "bad_words") else value[0]
    return body


class _HttpPieces:
    """Text pieces of one ``generate_stream`` answer (or the one ``generate`` body)."""

    __slots__ = ("_resp", "_dec", "_queue", "_key", "_where", "_stream", "_done")

    def __init__(self, resp: aiohttp.ClientResponse, key: str, where: str, stream: bool) -> None:
        self._resp, self._key, self._where, self._stream = resp, key, where, stream
        self._dec = SSEDecoder()
        self._queue: list[str] = []
        self._done = False

    async def next(self) -> tuple[str, bool]:
        if not self._stream:
            obj = self._parse(await self._read_all())
            self._resp.release()
            return obj, True
        while not self._queue:
            try:
                chunk = await self._resp.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BackendUnavailable(f"{self._where}: stream interrupted: {exc!r}") from exc
            if not chunk:
                self._resp.release()
                return "", True
            self._queue.extend(self._parse(d) for d in self._dec.feed(chunk))
        text = self._queue.pop(0)
        if not self._queue and self._resp.content.at_eof():
            self._resp.release()
            return text, True
        return text, False

    async def _read_all(self) -> str:
        try:
            return (await self._resp.read()).decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self._where}: body interrupted: {exc!r}") from exc

    def _parse(self, data: str) -> str:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise BackendProtocolError(f"{self._where}: unparseable event {data[:80]!r}") from exc
        if isinstance(obj, dict) and "error" in obj:
            raise BackendProtocolError(f"{self._where}: {obj['error']}")
        text = obj.get(self._key) if isinstance(obj, dict) else None
        if isinstance(text, list):
            text = "".join(str(t) for t in text)
        return text if isinstance(text, str) else ""

    def cancel(self) -> None:
        self._resp.close()


class TritonHttpBackend:
    """One Triton replica reached over its HTTP generate extension."""

    def __init__(self, settings: BackendSettings) -> None:
        self._s = settings
        target, t = parse_target(settings.url)
        self.names, self.template = t.names, t.template
        self.base = f"http://{target}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )

    def open(self, req: BackendRequest, listener: Listener) -> TaskCall:
        treq, enc = translate(req, self.template, self.names.model, f"er-http-{next(_ids)}")
        return TaskCall(self.start(treq, enc), listener)

    async def start(self, treq: tw.TritonRequest, enc: tw.OpenAIChunks) -> TritonResponse:
        """Post ``treq`` to ``generate`` (``generate_stream``) and wait for its first piece."""
        body = {self.names[k]: v for k, v in generate_body(treq).items()}
        suffix = "generate_stream" if treq.stream else "generate"
        url = f"{self.base}/v2/models/{self.names.model}/{suffix}"
        try:
            async with asyncio.timeout(self._s.first_byte_timeout):
                resp = await self._s.session.post(url, json=body, timeout=self._timeout)
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.base}: no response headers in time") from exc
        except aiohttp.ClientError as exc:
            raise unreachable(self.base, exc) from exc
        if resp.status >= 400:
            try:
                detail = (await resp.read())[:4096].decode("utf-8", errors="replace")
            finally:
                resp.close()
            try:
                message = str(json.loads(detail).get("error", detail))
            except (ValueError, AttributeError):
                message = detail
            raise BackendStatusError(
                f"{self.base} answered {resp.status}: {message}",
                status=resp.status,
                body=error_bytes(message, type="upstream_error"),
            )
        pieces = _HttpPieces(resp, self.names["text_output"], self.base, treq.stream)
        try:
            first = await pieces.next()
        except BaseException:
            resp.close()
            raise
        return TritonResponse(pieces, enc, first, treq.max_tokens, treq.stream)

    async def probe(self, path: str, timeout_s: float) -> int:
        """200 when ``/v2/health/live`` and the model's ``ready`` both answer 200."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        status = 200
        try:
            for p in ("/v2/health/live", f"/v2/models/{self.names.model}/ready"):
                async with self._s.session.get(self.base + p, timeout=timeout) as resp:
                    await resp.read()
                    if resp.status != 200:
                        status = 503
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.base}: probe timed out") from exc
        except aiohttp.ClientError as exc:
            raise unreachable(self.base, exc) from exc
        return status

    async def aclose(self) -> None:
        """The session is shared and closed by its owner."""


def make(settings: BackendSettings) -> TritonHttpBackend:
    return TritonHttpBackend(settings)
