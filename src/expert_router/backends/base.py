"""The one contract every upstream adapter implements: ``Backend.open(request, listener)``.

``open`` sends a request and returns an ``UpstreamCall`` at once, before any callback; the
adapter then reports to the ``Listener`` from its own callbacks: ``on_head`` once for a
success status, ``on_data`` with the answer's bytes as they arrive, and exactly one of
``on_end`` / ``on_error``. An error status arrives as ``on_error(BackendStatusError)`` with
(a bounded part of) its body. Transport failures are ``BackendError`` subclasses, retryable
ones marked so. Adapters whose client library is coroutine-based drive the listener from a
task (``backends/tasks.py``); the gateway never knows which kind it talks to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from expert_router.errors import BackendError

MAX_ERROR_BODY = 64 * 1024
"""Bytes of an upstream's error answer kept for the client (an OpenAI error is ~200 bytes)."""


def retry_after(value: bytes | str | None) -> float | None:
    """Seconds of a ``Retry-After`` value in its delay form; None for anything else (an
    HTTP date is read as absent: the gateway then backs off for its default).

    >>> retry_after(b"2"), retry_after("1.5"), retry_after(b"Wed, 21 Oct 2015"), retry_after(None)
    (2.0, 1.5, None, None)
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


class BackendRequest:
    """An OpenAI request to forward: ``path`` like ``/v1/chat/completions``, body bytes.

    ``native`` is the client's own message when it came in an upstream protocol (a KServe
    ``ModelInferRequest`` from the gRPC ingress): an adapter of that protocol may forward it
    unchanged and answer in it (content type ``application/grpc``, framed messages). Its
    OpenAI body may then be given as a function, called on first use only: an adapter that
    forwards the native message never pays for the translation.
    """

    __slots__ = ("path", "_body", "stream", "native")

    def __init__(
        self, path: str, body: bytes | Callable[[], bytes], stream: bool, native: Any = None
    ) -> None:
        self.path, self._body, self.stream, self.native = path, body, stream, native

    @property
    def body(self) -> bytes:
        body = self._body
        if not isinstance(body, bytes):
            body = self._body = body()
        return body

    def __repr__(self) -> str:
        native = self.native is not None
        return f"BackendRequest({self.path!r}, stream={self.stream}, native={native})"


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """Per-replica settings and the shared client session, given to a backend factory."""

    url: str
    session: aiohttp.ClientSession
    connect_timeout: float
    first_byte_timeout: float
    read_timeout: float
    api_key: str | None = None
    max_chunk_bytes: int = 8 * 1024 * 1024


class Listener(Protocol):
    """Told what happens to one upstream request, from the adapter's callbacks."""

    def on_head(self, status: int, content_type: str) -> None:
        """A success status and the answer's content type arrived (no body yet)."""

    def on_data(self, data: bytes) -> bool:
        """Some of the answer (OpenAI wire bytes; framed messages for ``application/grpc``);
        False asks the adapter to stop reading until ``UpstreamCall.resume()``."""
        ...

    def on_end(self, last: bytes = b"") -> None:
        """The answer is complete; ``last`` is its final bytes when the read that ended it
        carried some (folded in, so that an ingress writes them and its own end at once)."""

    def on_error(self, exc: BackendError) -> None:
        """The request failed, before ``on_head`` or after it; nothing follows."""


class UpstreamCall(Protocol):
    """A request in flight, as its opener holds it."""

    def resume(self) -> None:
        """Read again after ``on_data`` returned False."""

    def cancel(self) -> None:
        """Abandon the request (the upstream sees it go); no callback follows."""


class Backend(Protocol):
    """One replica's protocol adapter."""

    def open(self, req: BackendRequest, listener: Listener) -> UpstreamCall:
        """Send ``req``; report to ``listener`` (never before returning). Raises
        ``RequestError`` when ``req`` cannot be put in the replica's protocol: the client's
        fault, answered 400 without blaming the replica (any other exception raised here is
        the gateway's own fault: 500, the replica not blamed either)."""
        ...

    async def probe(self, path: str, timeout_s: float) -> int:
        """GET ``path`` on the replica; returns the status, raises ``BackendError``."""
        ...

    async def aclose(self) -> None: ...
