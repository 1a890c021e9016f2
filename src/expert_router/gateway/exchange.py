"""The callback relay: one streaming request carried by callbacks, with no coroutine.

The lean ingress classifies a request and, when a replica is free with an idle pooled
HTTP/1.1 connection, writes it upstream from its own ``data_received``. An ``Exchange`` then
listens to that connection: the upstream's head prepares the client's response head, and
that head leaves with the first chunk, from the upstream's ``data_received``; the end
releases everything and logs. Whatever is unusual before the upstream's head (an error
status, a stale connection, a failure) goes back to the ingress's coroutine path, which
retries; a failure after it ends the stream with an error event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING

from expert_router.backends.http1_conn import Http1Connection
from expert_router.errors import BackendUnavailable
from expert_router.gateway.app import PredictionLike
from expert_router.gateway.pools import Replica
from expert_router.gateway.proxy import _SSE_HEADERS, _ClientSink
from expert_router.gateway.responses import stream_error_event
from expert_router.routing import RouteDecision
from expert_router.wire.openai import ParsedRequest

if TYPE_CHECKING:
    from expert_router.gateway.ingress import FastIngress

LAST = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


_REASONS = {s.value: s.phrase for s in HTTPStatus}


def response_head(status: int, headers: dict[str, str], close: bool, *, chunked: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(eq=False, slots=True)
class Job:
    """One proxied request: what the client sent and what was decided for it so far.

    ``decided`` holds the reserved replica's decision once there is one (``start_on``
    replaces it on retries); ``t1``/``t2`` bracket its classification.
    """

    path: str
    parsed: ParsedRequest
    body: bytes
    close: bool
    t0: float
    headers: dict[str, str]
    pred: PredictionLike
    t1: float
    t2: float
    decided: list[RouteDecision]


class Exchange:
    """A request written upstream on ``conn``, relayed to the ingress's client by callbacks.

    It is the connection's ``Listener`` and its sink at once; ``abort`` is the client leaving.
    """

    __slots__ = ("ingress", "job", "replica", "conn", "t", "head", "ended", "t_sent", "drainer")

    def __init__(self, ingress: FastIngress, job: Job, replica: Replica) -> None:
        self.ingress = ingress
        self.job = job
        self.replica = replica
        self.conn: Http1Connection | None = None
        self.t = ingress.t
        self.head: bytes | None = None  # the client's response head, until a chunk takes it
        self.ended = False
        self.t_sent = 0.0
        self.drainer: asyncio.Task[None] | None = None

    # -- the connection's listener ---------------------------------------------------------
    def on_head(self, conn: Http1Connection) -> None:
        if conn.status >= 400:  # the coroutine path reads the error and may retry
            conn.listener = None
            self.ingress.rescue(self.job, None, conn)
            return
        job = self.job
        headers = job.headers
        headers["Content-Type"] = conn.content_type
        if conn.content_type.startswith("text/event-stream"):
            headers.update(_SSE_HEADERS)
        self.head = response_head(conn.status, headers, job.close, chunked=True)
        conn.sink = self
        conn.framed = self.write_framed
        conn.framed_end = self.write_framed_end

    def on_pause(self, conn: Http1Connection) -> None:
        if self.drainer is None:
            self.drainer = asyncio.get_running_loop().create_task(self._drain(conn))

    def on_done(self, conn: Http1Connection) -> None:
        error = conn.error
        if error is not None and conn.status == 0:  # nothing came back: retry elsewhere
            # A kept-alive connection the upstream had closed: the same replica, afresh.
            stale = conn.reused and not conn.got_bytes and type(error) is BackendUnavailable
            conn.close_or_keep()
            self.ingress.rescue(self.job, None if stale else error, None)
            return
        fleet = self.ingress.gw.fleet
        assert fleet is not None
        head = self.head or b""
        self.head = None
        if error is not None:
            fleet.record_failure(self.replica, "stream_interrupted")
            self._write(head + chunk(stream_error_event(error)) + LAST)
            status = 502
        elif self.t.is_closing():
            status = 499
        else:
            if head or not self.ended:
                self._write(head + LAST)
            status = conn.status
            fleet.record_success(self.replica)
        conn.close_or_keep()
        self._end(status)

    # -- the sink (called from the connection's data_received) ------------------------------
    def write(self, data: bytes) -> bool:
        return self.write_framed(b"%x\r\n%b\r\n" % (len(data), data))

    def write_framed(self, data: bytes) -> bool:
        t = self.t
        if t.is_closing():
            return False
        head = self.head
        if head is None:
            t.write(data)
        else:
            self.head = None
            t.write(head + data)
            fleet = self.ingress.gw.fleet
            assert fleet is not None
            fleet.ttft[self.replica.name].observe(perf_counter() - self.t_sent)
        return bool(t.get_write_buffer_size() < _ClientSink.HIGH)

    def write_framed_end(self, data: bytes) -> bool:
        self.ended = True
        return self.write_framed(data)

    async def drain(self) -> None:
        await _ClientSink(self.t).drain()

    # -- ends ------------------------------------------------------------------------------
    def abort(self) -> None:
        """The client left: close the upstream request, free the replica, log a 499."""
        if self.conn is not None:
            self.conn.abandon()
        self._end(499)

    def _end(self, status: int) -> None:
        if self.drainer is not None:
            self.drainer.cancel()
            self.drainer = None
        fleet = self.ingress.gw.fleet
        assert fleet is not None
        fleet.release(self.replica)
        self.ingress.exchange_done(self.job, status)

    def _write(self, data: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(data)

    async def _drain(self, conn: Http1Connection) -> None:
        try:
            await self.drain()
        except ConnectionError:
            return  # the ingress's connection_lost aborts the exchange
        finally:
            self.drainer = None
        conn.resume()
