"""What a ``GrpcServer`` lets a client hold over time: a connection that never sends its preface
is closed after ``preface_timeout``; one with no call open, after ``idle_timeout`` (GOAWAY
NO_ERROR; grpc.aio and our own client reconnect for their next call); past
``max_connections`` the oldest idle connection makes room, and with none idle the newcomer is
refused (GOAWAY before any stream, and closed: its calls fail UNAVAILABLE, the others go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from h2_service import AIO_OPTIONS, LIMITS, SERVICE, AioStub, Echo, Msg, pb2
from h2_wire import UNARY, Answer, Raw, call
from polling import eventually

from expert_router.h2 import frames as f
from expert_router.h2.client import GrpcChannel
from expert_router.h2.server import GrpcServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PREFACE_TIMEOUT = 0.3
IDLE_TIMEOUT = 0.5


@contextlib.asynccontextmanager
async def serving(
    max_connections: int | None = None, idle_timeout: float | None = IDLE_TIMEOUT
) -> AsyncIterator[tuple[GrpcServer, Echo]]:
    servicer = Echo()
    limits = replace(LIMITS, preface_timeout=PREFACE_TIMEOUT, idle_timeout=idle_timeout)
    server = GrpcServer(
        servicer,
        pb2,
        SERVICE,
        limits=limits,
        max_connections=max_connections,
    )
    await server.start()
    try:
        yield server, servicer
    finally:
        await server.stop()


def ended(answer: Answer) -> bool:
    return answer.goaway is not None or answer.dropped


async def served(port: int, sid: int = 1) -> Raw:
    """A connection that made one call and got its status (OK)."""
    raw = await Raw.connect(port)
    raw.listen()
    await raw.send(call(sid))
    answer = await raw.until(lambda a: sid in a.statuses)
    assert answer.statuses[sid] == b"0" and answer.goaway is None, answer
    return raw


async def holding(port: int, servicer: Echo) -> Raw:
    """A connection with one call open (the servicer waits until it is cancelled)."""
    before = servicer.held
    raw = await Raw.connect(port)
    raw.listen()
    await raw.send(call(1, "hold"))
    await eventually(lambda: servicer.held == before + 1)
    return raw


async def test_a_connection_that_sends_no_preface_is_closed_after_preface_timeout() -> None:
    async with serving() as (server, _):
        raws = [
            await Raw.connect(server.port, preface=b""),  # silent
            await Raw.connect(server.port, preface=f.PREFACE[:10]),  # half a preface
        ]
        start = time.monotonic()
        for raw in raws:
            raw.listen()
        for raw in raws:
            await raw.until(ended, within=5)
            assert time.monotonic() - start >= PREFACE_TIMEOUT * 0.9
            await raw.close()
        await eventually(lambda: not server.connections)  # (after its lingering close)


async def test_a_connection_with_no_call_open_is_closed_after_idle_timeout() -> None:
    async with serving() as (server, servicer):
        busy = await holding(server.port, servicer)
        idle = await served(server.port)
        done = time.monotonic()
        answer = await idle.until(ended, within=5)
        assert answer.goaway == f.NO_ERROR, answer
        assert time.monotonic() - done >= IDLE_TIMEOUT * 0.9
        await asyncio.sleep(IDLE_TIMEOUT)  # the connection holding a call stays
        assert busy.answer.goaway is None and not busy.answer.dropped
        await busy.send(f.rst_stream(1, f.CANCEL))  # its call ends: idle from now
        cancelled = time.monotonic()
        answer = await busy.until(ended, within=5)
        assert answer.goaway == f.NO_ERROR, answer
        assert time.monotonic() - cancelled >= IDLE_TIMEOUT * 0.9
        for raw in (busy, idle):
            await raw.close()


async def test_pings_do_not_keep_an_idle_connection() -> None:
    async with serving() as (server, _):
        raw = await served(server.port)
        for _ in range(int(IDLE_TIMEOUT / 0.05) + 5):
            if not await raw.send(f.frame(f.PING, 0, 0, b"12345678")):
                break
            await asyncio.sleep(0.05)
        answer = await raw.until(ended, within=5)
        assert answer.goaway == f.NO_ERROR, answer
        await raw.close()


async def test_clients_reconnect_for_the_call_after_an_idle_close() -> None:
    async with serving(idle_timeout=0.2) as (server, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=AIO_OPTIONS) as ch:
            stub = AioStub(ch)
            ours = GrpcChannel(f"127.0.0.1:{server.port}", limits=LIMITS)
            try:
                async with asyncio.timeout(10):
                    for n in range(3):
                        assert (await stub.Unary(Msg(n=n))).n == n
                        assert (await ours.unary(UNARY, Msg(n=n), Msg)).n == n
                        await eventually(lambda: not server.connections)
            finally:
                await ours.close()


async def test_past_max_connections_the_oldest_idle_connection_makes_room() -> None:
    async with serving(max_connections=2, idle_timeout=None) as (server, servicer):
        oldest = await served(server.port)
        busy = await holding(server.port, servicer)  # a call open: never evicted
        newcomer = await served(server.port)  # served: the oldest idle one closed for it
        answer = await oldest.until(ended, within=5)
        assert answer.goaway == f.NO_ERROR, answer
        assert busy.answer.goaway is None and newcomer.answer.goaway is None
        assert len(server.connections) == 2
        for raw in (oldest, busy, newcomer):
            await raw.close()


async def test_past_max_connections_with_every_one_busy_the_newcomer_is_refused() -> None:
    async with serving(max_connections=2, idle_timeout=None) as (server, servicer):
        busy = [await holding(server.port, servicer) for _ in range(2)]
        refused = await Raw.connect(server.port)
        refused.listen()
        await refused.send(call(1))
        answer = await refused.until(ended, within=5)  # closed at once, its descriptor freed:
        assert answer.goaway in (None, f.NO_ERROR) and not answer.statuses, answer  # GOAWAY
        # or a reset, if the request arrived before the close
        ours = GrpcChannel(f"127.0.0.1:{server.port}", limits=LIMITS)
        try:
            with pytest.raises(Exception) as err:  # the GOAWAY or the close, whichever first
                await ours.unary(UNARY, Msg(n=1), Msg, deadline=5)
            assert getattr(err.value, "status", None) == grpc.StatusCode.UNAVAILABLE, err.value
            assert all(raw.answer.goaway is None and not raw.answer.dropped for raw in busy)
            await busy[0].send(f.rst_stream(1, f.CANCEL))  # one call ends: that one is idle
            await eventually(lambda: any(c.evictable() for c in server.connections))
            assert (await ours.unary(UNARY, Msg(n=2), Msg, deadline=5)).n == 2
            assert busy[1].answer.goaway is None
        finally:
            await ours.close()
        for raw in (*busy, refused):
            await raw.close()
