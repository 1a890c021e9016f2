"""The one table from error classes to HTTP status and OpenAI-shaped JSON error bodies, and
the bytes of the gateway's own HTTP/1.1 responses.

Upstream error answers that already carry ``{"error": {...}}`` pass through with their
status; anything else an upstream says is wrapped in that shape.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

from expert_router.errors import (
    BackendError,
    BackendProtocolError,
    BackendStatusError,
    BackendTimeout,
    BackendTooLarge,
    BackendUnavailable,
    ExpertRouterError,
    NoCapacity,
    RequestError,
    RoutingError,
    ShuttingDown,
)
from expert_router.wire.openai import error_body

# error class -> (status, type, code); the first matching class (in order) wins.
ERROR_TABLE: tuple[tuple[type[ExpertRouterError], int, str, str], ...] = (
    (RequestError, 400, "invalid_request_error", "invalid_request"),
    (NoCapacity, 503, "server_error", "no_capacity"),
    (ShuttingDown, 503, "server_error", "shutting_down"),
    (RoutingError, 503, "server_error", "no_healthy_replica"),
    (BackendTimeout, 504, "upstream_error", "upstream_timeout"),
    (BackendUnavailable, 502, "upstream_error", "upstream_unavailable"),
    (BackendTooLarge, 502, "upstream_error", "upstream_response_too_large"),
    (BackendProtocolError, 502, "upstream_error", "upstream_protocol_error"),
    (BackendError, 502, "upstream_error", "upstream_error"),
)

JSON = "application/json"
REASONS = {s.value: s.phrase for s in HTTPStatus}


def status_for(exc: ExpertRouterError) -> int:
    """The HTTP status a request that failed with ``exc`` is answered with."""
    if isinstance(exc, BackendStatusError):
        return exc.status
    for cls, status, _, _ in ERROR_TABLE:
        if isinstance(exc, cls):
            return status
    return 500


def error_for(exc: ExpertRouterError) -> tuple[int, bytes, dict[str, str]]:
    """Status, OpenAI-shaped JSON body and extra headers (``Retry-After``) for ``exc``."""
    if isinstance(exc, BackendStatusError):
        extra = {}
        if exc.retry_after is not None:
            extra["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return exc.status, _upstream_body(exc), extra
    for cls, status, etype, code in ERROR_TABLE:
        if isinstance(exc, cls):
            param = exc.param if isinstance(exc, RequestError) else None
            code = exc.code if isinstance(exc, RequestError) else code
            headers = {}
            if isinstance(exc, RoutingError):
                retry = exc.retry_after if isinstance(exc, NoCapacity) else 1.0
                headers["Retry-After"] = str(max(1, math.ceil(retry)))
            body = error_body(str(exc), type=etype, param=param, code=code)
            return status, json.dumps(body).encode(), headers
    body = error_body("internal error", type="server_error", code="internal_error")
    return 500, json.dumps(body).encode(), {}


def error_json(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str
) -> bytes:
    return json.dumps(error_body(message, type=type, param=param, code=code)).encode()


def _upstream_body(exc: BackendStatusError) -> bytes:
    try:
        data = json.loads(exc.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        shaped = {
            "message": str(err.get("message", "")),
            "type": err.get("type") or "upstream_error",
            "param": err.get("param"),
            "code": err.get("code"),
        }
        return json.dumps({"error": shaped}).encode()
    if isinstance(data, dict) and isinstance(data.get("detail") or data.get("error"), str):
        text = str(data.get("detail") or data.get("error"))
    else:
        text = exc.body[:500].decode("utf-8", errors="replace")
    message = f"upstream answered {exc.status}" + (f": {text}" if text else "")
    return error_json(message, type="upstream_error", code=f"upstream_{exc.status}")


def stream_error_event(exc: ExpertRouterError) -> bytes:
    """The SSE event that ends a stream cut short: by its upstream failing mid-way
    (``upstream_interrupted``), or by the gateway (``exc``'s own code)."""
    if isinstance(exc, BackendError):
        message = f"upstream failed mid-stream: {exc}"
        data = error_json(message, type="upstream_error", code="upstream_interrupted")
    else:
        data = error_for(exc)[1]
    return b"data: " + data + b"\n\n"


def head(
    status: int,
    headers: dict[str, str],
    *,
    length: int | None = None,
    close: bool = False,
    version: bytes = b"1.1",
) -> bytes:
    """An HTTP/1.x response head: ``length`` for a Content-Length, else chunked (HTTP/1.1)
    or delimited by the close (HTTP/1.0)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif version == b"1.1":
        lines.append("Transfer-Encoding: chunked")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()
