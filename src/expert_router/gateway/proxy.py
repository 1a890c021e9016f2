"""The hot path: POST /v1/chat/completions and /v1/completions.

Read and check the body once, classify inline, reserve a replica, forward the original
bytes, relay the answer chunk by chunk. Failures before the first byte retry elsewhere;
failures after it end the stream with an SSE error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from time import perf_counter
from typing import Any

from aiohttp import web

from expert_router.backends import UpstreamResponse
from expert_router.errors import BackendError, RequestError, RoutingError
from expert_router.gateway.app import Gateway, PredictionLike
from expert_router.gateway.pools import Replica
from expert_router.gateway.responses import error_response, for_exception, stream_error_event
from expert_router.routing import RouteDecision
from expert_router.wire.openai import Kind, ParsedRequest, parse_body

access_log = logging.getLogger("expert_router.access")
NONE = "none"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _Stream(web.StreamResponse):
    """A stream response whose headers leave with its first chunk (one write, not two)."""

    _send_headers_immediately = False


class _ClientSink:
    """Writes de-chunked upstream bytes to the client as HTTP chunks, straight to the socket.

    Called from the upstream protocol's callback: no coroutine per event. The response's
    headers and first chunk went through aiohttp's writer; its ``write_eof`` ends it.
    """

    __slots__ = ("_t",)
    HIGH = 256 * 1024
    LOW = 64 * 1024

    def __init__(self, transport: asyncio.Transport | Any) -> None:
        self._t = transport

    def write(self, data: bytes) -> bool:
        t = self._t
        if t.is_closing():
            return False
        t.write(b"%x\r\n%b\r\n" % (len(data), data))
        return bool(t.get_write_buffer_size() < self.HIGH)

    def write_framed(self, data: bytes) -> bool:
        """``data`` is whole HTTP/1.1 chunks, framing included: relayed byte for byte."""
        t = self._t
        if t.is_closing():
            return False
        t.write(data)
        return bool(t.get_write_buffer_size() < self.HIGH)

    async def drain(self) -> None:
        t = self._t
        while not t.is_closing():
            if t.get_write_buffer_size() <= self.LOW:
                return
            await asyncio.sleep(0.005)
        raise ConnectionResetError("client went away")


class Proxy:
    """The two proxy handlers of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat", "/v1/chat/completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completion", "/v1/completions")

    async def _handle(self, request: web.Request, kind: Kind, path: str) -> web.StreamResponse:
        t0 = perf_counter()
        gw = self.gw
        headers = {"x-expert-router-cluster": NONE}
        if not gw.authorized(request):
            return self._done(request, gw.unauthorized(headers), headers, t0)
        length = request.content_length
        if length is not None and length > gw.max_body:
            return self._done(request, _too_large(gw.max_body, headers), headers, t0)
        try:
            if length is not None:  # one read, no intermediate buffer
                body = await request.content.readexactly(length)
            else:  # chunked upload: aiohttp enforces client_max_size while reading
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._done(request, _too_large(gw.max_body, headers), headers, t0)
        except asyncio.IncompleteReadError:
            exc = RequestError("request body is shorter than its Content-Length")
            return self._done(request, for_exception(exc, headers), headers, t0)
        try:
            parsed = parse_body(body, kind)
        except RequestError as exc:
            return self._done(request, for_exception(exc, headers), headers, t0)
        try:
            pred, decision = await gw.classify_and_acquire(parsed, headers)
        except RoutingError as exc:
            return self._done(request, for_exception(exc, headers), headers, t0)
        return await self._forward(request, path, parsed, body, pred, decision, headers, t0)

    async def _forward(
        self,
        request: web.Request,
        path: str,
        parsed: ParsedRequest,
        body: bytes,
        pred: PredictionLike,
        decision: RouteDecision,
        headers: dict[str, str],
        t0: float,
    ) -> web.StreamResponse:
        gw = self.gw
        fleet = gw.fleet
        assert fleet is not None
        decided = [decision]
        try:
            replica, up, t_sent = await gw.start_upstream(
                path, parsed, body, pred, decided, headers, t0
            )
        except BackendError as exc:
            return self._done(request, for_exception(exc, headers), headers, t0, decided[0])
        try:
            return await self._relay(request, up, replica, parsed, headers, t_sent, t0, decided[0])
        finally:
            up.close()
            fleet.release(replica)

    async def _relay(
        self,
        request: web.Request,
        up: UpstreamResponse,
        replica: Replica,
        parsed: ParsedRequest,
        headers: dict[str, str],
        t_sent: float,
        t0: float,
        decision: RouteDecision,
    ) -> web.StreamResponse:
        gw = self.gw
        fleet = gw.fleet
        assert fleet is not None
        headers["Content-Type"] = up.content_type
        if not parsed.stream:
            try:
                data = await up.read()
            except BackendError as exc:
                fleet.record_failure(replica, type(exc).__name__)
                return self._done(request, for_exception(exc, headers), headers, t0, decision)
            fleet.ttft[replica.name].observe(perf_counter() - t_sent)
            fleet.record_success(replica)
            resp = web.Response(body=data, status=up.status, headers=headers)
            return self._done(request, resp, headers, t0, decision)
        if up.content_type.startswith("text/event-stream"):
            headers.update(_SSE_HEADERS)
        stream = _Stream(status=up.status, headers=headers)
        await stream.prepare(request)  # headers leave with the first chunk
        status = up.status
        try:
            try:
                first = await up.readany()
            except Exception as exc:
                first = b""
                status = await self._interrupted(stream, replica, exc)
            if first:
                fleet.ttft[replica.name].observe(perf_counter() - t_sent)
                if up.at_eof():  # one chunk only: headers, body and end in one write
                    await stream.write_eof(first)
                else:
                    await stream.write(first)  # headers leave with it
                    transport = request.transport
                    if transport is None:
                        raise ConnectionResetError("client went away")
                    try:
                        await up.pipe(_ClientSink(transport))
                    except ConnectionError:
                        raise
                    except Exception as exc:
                        status = await self._interrupted(stream, replica, exc)
            await stream.write_eof()
        except ConnectionError:
            # The client went away; closing `up` (in the caller) cancels the upstream request.
            return self._done(request, stream, headers, t0, decision, 499)
        except asyncio.CancelledError:
            self._done(request, stream, headers, t0, decision, 499)
            raise
        if status < 400:
            fleet.record_success(replica)
        return self._done(request, stream, headers, t0, decision, status)

    async def _interrupted(
        self, stream: web.StreamResponse, replica: Replica, exc: BaseException
    ) -> int:
        """The upstream failed mid-stream: end the client's stream with an error event."""
        assert self.gw.fleet is not None
        self.gw.fleet.record_failure(replica, "stream_interrupted")
        await stream.write(stream_error_event(exc))
        return 502

    def _done(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        headers: dict[str, str],
        t0: float,
        decision: RouteDecision | None = None,
        status: int | None = None,
    ) -> web.StreamResponse:
        code = status or resp.status
        cluster = headers.get("x-expert-router-cluster", NONE)
        replica = headers.get("x-expert-router-replica", NONE)
        self.gw.metrics.count_request(cluster, replica, code)
        if self.gw.config.access_log:
            entry: dict[str, Any] = {
                "method": request.method,
                "path": request.path,
                "status": code,
                "cluster": cluster,
                "replica": replica,
                "reason": decision.reason if decision else None,
                "duration_ms": round((perf_counter() - t0) * 1000, 3),
                "remote": request.remote,
            }
            access_log.info(json.dumps(entry))
        return resp


def _too_large(limit: int, headers: dict[str, str]) -> web.Response:
    return error_response(
        413,
        f"request body exceeds {limit} bytes",
        param=None,
        code="request_too_large",
        headers=headers,
    )
