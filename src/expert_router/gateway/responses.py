"""The one table from error classes to HTTP status and OpenAI-shaped JSON error bodies.

Upstream error answers that already carry ``{"error": {...}}`` pass through with their
status; anything else an upstream says is wrapped in that shape.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from expert_router.errors import (
    BackendError,
    BackendProtocolError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    ExpertRouterError,
    NoCapacity,
    RequestError,
    RoutingError,
)
from expert_router.wire.openai import error_body

# error class -> (status, type, code); the first matching class (in order) wins.
ERROR_TABLE: tuple[tuple[type[ExpertRouterError], int, str, str], ...] = (
    (RequestError, 400, "invalid_request_error", "invalid_request"),
    (NoCapacity, 503, "server_error", "no_capacity"),
    (RoutingError, 503, "server_error", "no_healthy_replica"),
    (BackendTimeout, 504, "upstream_error", "upstream_timeout"),
    (BackendUnavailable, 502, "upstream_error", "upstream_unavailable"),
    (BackendProtocolError, 502, "upstream_error", "upstream_protocol_error"),
    (BackendError, 502, "upstream_error", "upstream_error"),
)

JSON = "application/json"


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type=JSON, headers=headers
    )


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(error_body(message, type=type, param=param, code=code), status, headers)


def _upstream_body(exc: BackendStatusError) -> bytes:
    try:
        data = json.loads(exc.body)
    except (ValueError, UnicodeDecodeError):
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
    body = error_body(message, type="upstream_error", code=f"upstream_{exc.status}")
    return json.dumps(body).encode()


def for_exception(exc: ExpertRouterError, headers: dict[str, str]) -> web.Response:
    """The response for an error raised while serving a request."""
    if isinstance(exc, BackendStatusError):
        return web.Response(
            body=_upstream_body(exc), status=exc.status, content_type=JSON, headers=headers
        )
    for cls, status, etype, code in ERROR_TABLE:
        if isinstance(exc, cls):
            param = exc.param if isinstance(exc, RequestError) else None
            if isinstance(exc, RoutingError):
                retry = exc.retry_after if isinstance(exc, NoCapacity) else 1.0
                headers = {**headers, "Retry-After": str(max(1, math.ceil(retry)))}
            return error_response(
                status, str(exc), type=etype, param=param, code=code, headers=headers
            )
    return error_response(500, str(exc), type="server_error", code="internal_error")


def stream_error_event(exc: BaseException) -> bytes:
    """The SSE event that ends a stream whose upstream failed mid-way."""
    body = error_body(
        f"upstream failed mid-stream: {exc}", type="upstream_error", code="upstream_interrupted"
    )
    return b"data: " + json.dumps(body).encode() + b"\n\n"
