"""The one protocol every upstream adapter implements, and what it hands back.

``Backend.start(req)`` sends a request and returns once the upstream answered with a success
status (failures before that raise ``BackendError`` subclasses, retryable ones marked so);
``UpstreamResponse.chunks()`` then yields OpenAI-wire bytes as they arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp


@dataclass(slots=True)
class BackendRequest:
    """An OpenAI request to forward: ``path`` like ``/v1/chat/completions``, body bytes."""

    path: str
    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """Per-replica settings and the shared client session, given to a backend factory."""

    url: str
    session: aiohttp.ClientSession
    connect_timeout: float
    first_byte_timeout: float
    read_timeout: float
    api_key: str | None = None


class ChunkSink(Protocol):
    """Where a streaming response's body goes, synchronously, chunk by chunk."""

    def write(self, data: bytes) -> bool:
        """Send ``data`` on; False asks the producer to pause until ``drain()`` returns."""
        ...

    async def drain(self) -> None:
        """Wait until the consumer can take more; raises ``ConnectionError`` if it left."""
        ...


class UpstreamResponse(Protocol):
    """An upstream answer in progress.

    ``readany()`` returns the next OpenAI-wire bytes as soon as some arrive, ``b""`` at the
    end; it is a plain bound method where possible (one call per relayed chunk), and any
    exception it raises means the upstream failed mid-stream.
    """

    status: int
    content_type: str

    def readany(self) -> Awaitable[bytes]: ...

    def at_eof(self) -> bool:
        """True when the upstream has sent everything (the last chunk may still be unread)."""
        ...

    async def pipe(self, sink: ChunkSink) -> None:
        """Hand every further chunk to ``sink`` until the end; raises on upstream failure."""
        ...

    async def read(self) -> bytes:
        """The whole (non-streaming) body; failures raise ``BackendError``."""
        ...

    def close(self) -> None:
        """Drop the upstream connection if the body was not read to its end (cancels it)."""
        ...


class Backend(Protocol):
    """One replica's protocol adapter."""

    async def start(self, req: BackendRequest) -> UpstreamResponse: ...

    async def probe(self, path: str, timeout_s: float) -> int:
        """GET ``path`` on the replica; returns the status, raises ``BackendError``."""
        ...

    async def aclose(self) -> None: ...
