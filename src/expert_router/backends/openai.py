"""OpenAI-compatible HTTP upstreams (vLLM, SGLang, TGI, llama.cpp, Ollama, the emulator).

Bytes in, bytes out: the request body is sent as given and the response is relayed chunk by
chunk without parsing. aiohttp errors become ``BackendError`` subclasses here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from expert_router.backends.base import BackendRequest, BackendSettings
from expert_router.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)

_MAX_ERROR_BODY = 64 * 1024


class OpenAIResponse:
    """A streaming upstream response; ``close()`` drops the connection unless fully read."""

    __slots__ = ("_resp", "status", "content_type", "_url")

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.content_type = resp.headers.get("Content-Type", "application/json")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self._url}: stream interrupted: {exc!r}") from exc

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self._url}: body interrupted: {exc!r}") from exc

    def close(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()
        else:
            self._resp.close()


class OpenAIBackend:
    """One OpenAI-compatible replica behind a shared ``aiohttp.ClientSession``."""

    __slots__ = ("_s", "_base", "_headers", "_timeout")

    def __init__(self, settings: BackendSettings) -> None:
        self._s = settings
        self._base = settings.url.rstrip("/")
        if self._base.endswith("/v1"):
            self._base = self._base[:-3]
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )

    async def start(self, req: BackendRequest) -> OpenAIResponse:
        url = self._base + req.path
        headers = self._headers if not req.headers else {**self._headers, **req.headers}
        try:
            async with asyncio.timeout(self._s.first_byte_timeout):
                resp = await self._s.session.post(
                    url, data=req.body, headers=headers, timeout=self._timeout
                )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise BackendUnavailable(f"{self._base}: {exc!r}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise BackendUnavailable(f"{self._base}: connect timed out") from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"{self._base}: no response headers in time") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{self._base}: {exc!r}") from exc
        if resp.status >= 400:
            try:
                body = await resp.content.read(_MAX_ERROR_BODY)
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                resp.close()
            raise BackendStatusError(
                f"{self._base} answered {resp.status}", status=resp.status, body=body
            )
        return OpenAIResponse(resp, self._base)

    async def probe(self, path: str, timeout_s: float) -> int:
        try:
            async with self._s.session.get(
                self._base + path, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                await resp.read()
                return resp.status
        except TimeoutError as exc:
            raise BackendTimeout(f"{self._base}{path}: probe timed out") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{self._base}{path}: {exc!r}") from exc

    async def aclose(self) -> None:
        """The session is shared and closed by its owner."""


def make(settings: BackendSettings) -> OpenAIBackend:
    return OpenAIBackend(settings)


__all__ = ["OpenAIBackend", "OpenAIResponse", "BackendError", "make"]
