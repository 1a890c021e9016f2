"""OpenAI-compatible upstreams over aiohttp's client (``https://``; any URL on request).

Bytes in, bytes out: the request body is sent as given and the response is relayed chunk by
chunk without parsing. aiohttp is coroutine-based: ``open`` runs ``start`` through the
``TaskCall`` shim. aiohttp errors become ``BackendError`` subclasses here.
"""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from expert_router.backends.base import (
    MAX_ERROR_BODY,
    BackendRequest,
    BackendSettings,
    Listener,
    retry_after,
)
from expert_router.backends.tasks import TaskCall
from expert_router.errors import (
    BackendError,
    BackendRefused,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
)


def unreachable(where: str, exc: aiohttp.ClientError) -> BackendUnavailable:
    """The error for an aiohttp failure to reach a replica: ``BackendRefused`` when nothing
    listened there (the replica is down), else ``BackendUnavailable``."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return BackendRefused(f"{where}: connection refused")
    return BackendUnavailable(f"{where}: {type(exc).__name__}")


class OpenAIResponse:
    """A streaming upstream response; ``close()`` drops the connection unless fully read."""

    __slots__ = ("_resp", "status", "content_type", "_url")

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.content_type = resp.headers.get("Content-Type", "application/json")

    async def readany(self) -> bytes:
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = type(exc).__name__
            raise BackendUnavailable(f"{self._url}: body interrupted: {what}") from exc

    def close(self) -> None:
        if self._resp.content.is_eof():
            self._resp.release()
        else:
            self._resp.close()


class OpenAIBackend:
    """One OpenAI-compatible replica behind a shared ``aiohttp.ClientSession``."""

    __slots__ = ("_s", "_base", "_headers", "_timeout", "_urls", "_first_byte")

    def __init__(self, settings: BackendSettings) -> None:
        self._s = settings
        self._base = settings.url.removeprefix("aiohttp+").rstrip("/")
        if self._base.endswith("/v1"):
            self._base = self._base[:-3]
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        # sock_read already bounds the wait for headers; a separate timer only when shorter.
        first = settings.first_byte_timeout
        self._first_byte = first if first < settings.read_timeout else None
        self._urls: dict[str, URL] = {}

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base + path)  # parsed once per path
        return url

    def open(self, req: BackendRequest, listener: Listener) -> TaskCall:
        return TaskCall(self.start(req), listener)

    async def start(self, req: BackendRequest) -> OpenAIResponse:
        headers = self._headers
        post = self._s.session.post
        try:
            if self._first_byte is None:
                resp = await post(
                    self._url(req.path), data=req.body, headers=headers, timeout=self._timeout
                )
            else:
                async with asyncio.timeout(self._first_byte):
                    resp = await post(
                        self._url(req.path), data=req.body, headers=headers, timeout=self._timeout
                    )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise unreachable(self._base, exc) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise BackendUnavailable(f"{self._base}: connect timed out") from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"{self._base}: no response headers in time") from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(f"{self._base}: {type(exc).__name__}") from exc
        if resp.status >= 400:
            try:
                body = await resp.content.read(MAX_ERROR_BODY)
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                resp.close()
            raise BackendStatusError(
                f"{self._base} answered {resp.status}",
                status=resp.status,
                body=body,
                retry_after=retry_after(resp.headers.get("Retry-After")),
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
            raise unreachable(f"{self._base}{path}", exc) from exc

    async def aclose(self) -> None:
        """The session is shared and closed by its owner."""


def make(settings: BackendSettings) -> OpenAIBackend:
    return OpenAIBackend(settings)


__all__ = ["OpenAIBackend", "OpenAIResponse", "BackendError", "make"]
