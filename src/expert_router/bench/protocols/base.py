"""What a bench protocol client implements: stream one request and report what arrives.

A client sends a conversation asking for exactly ``max_tokens`` output tokens and calls the
``StreamSink`` with the response headers and with every piece of text at its receipt time
(``perf_counter_ns``); any failure raises (``StreamFailed`` when it knows the HTTP status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Endpoint = Literal["chat", "completions"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where and how to send requests."""

    target: str
    """Base URL of the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is fine)."""
    model: str = "default"
    """The ``model`` field sent with each request."""
    endpoint: Endpoint = "chat"
    api_key: str | None = None
    request_timeout: float = 900.0
    """Seconds a whole request may take."""
    connect_timeout: float = 60.0


class StreamFailed(Exception):
    """The server answered with an error (status or an in-stream error event)."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class StreamSink(Protocol):
    """Receives what one request's response delivers, as it arrives."""

    def headers(self, status: int, headers: Mapping[str, str]) -> None: ...

    def text(self, t_ns: int, text: str) -> None: ...


class ProtocolClient(Protocol):
    """One protocol's client; one instance serves every user of a worker process."""

    async def stream(self, messages: Sequence[Message], max_tokens: int, sink: StreamSink) -> None:
        """Send ``messages`` and feed the response to ``sink``; raise on any failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
