"""Clients that hold connections: more than ``server.max_connections`` at once (and more than
the process's file descriptors), a client that pipelines requests and never reads, and ones
that pipeline hundreds of requests in one write.

This module's gateway allows 32 connections, holds silent ones for 5 s (head timeout) and
runs with 400 file descriptors (room for any sane reserve for probes and upstreams), so a
flood of 500 idle connections starves its upstream connections and health probes unless the
excess is refused at once.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from harness import Case, Ctx, Report, chat, post, run_case
from rawhttp import RawConn, Result
from targets import HOST, Gateway, Target, Upstream, http_get, poll
from wants import Want, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
MAX_CONNECTIONS = 32
NOFILE = 400
GATEWAY_SECTIONS = {
    "server": {"max_connections": MAX_CONNECTIONS, "head_timeout": 5, "idle_timeout": 10}
}
GATEWAY_OPTIONS = {"nofile": NOFILE}


def _answer(ctx: Ctx, request: bytes, *, until_close: bool = False) -> Result:
    with ctx.conn() as conn:
        conn.send(request)
        return conn.read(2.0, until_close=until_close)


def _get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


def over_max_connections(ctx: Ctx) -> Result:
    """Hold ``max_connections`` idle connections: a chat request on one more gets 503 while
    ``/health``, ``/ready`` and ``/metrics`` answer; then a flood beyond the file descriptors:
    probes keep passing (no replica ejected) and new probes of the gateway still answer."""
    gw = ctx.target
    assert isinstance(gw, Gateway) and ctx.upstream is not None
    ejections = gw.metric("expert_router_ejections_total")
    held: list[RawConn] = []
    try:
        held += [ctx.conn() for _ in range(MAX_CONNECTIONS)]
        chat_result = _answer(ctx, post(chat(True)), until_close=True)
        for path in (b"/health", b"/ready", b"/metrics"):
            got = _answer(ctx, _get(path))
            if not got.finals or got.finals[0].status != 200:
                ctx.problems.append(f"{path.decode()} beyond max_connections: {got.describe()}")
        before = ctx.upstream.probes()
        held += [ctx.conn() for _ in range(NOFILE + 100)]

        def probed() -> bool:
            now = ctx.upstream.probes()  # type: ignore[union-attr]
            return all(now.get(p, 0) >= before.get(p, 0) + 2 for p in now)

        if not poll(probed, 3.0):
            ctx.problems.append("health probes to the upstream stopped during the flood")
        status, body = http_get(f"http://{HOST}:{gw.port}/metrics", timeout=2.0)
        healthy = re.findall(rb"^expert_router_replica_healthy\{[^}]*\} (\S+)$", body, re.M)
        if status != 200 or not healthy or any(float(v) != 1.0 for v in healthy):
            ctx.problems.append(f"during the flood /metrics: {status}, healthy={healthy}")
        if http_get(f"http://{HOST}:{gw.port}/ready", timeout=2.0)[0] != 200:
            ctx.problems.append("during the flood /ready is not 200")
    finally:
        for conn in held:
            conn.close()
    if gw.metric("expert_router_ejections_total") != ejections:
        ctx.problems.append("a replica was ejected during the flood")
    return chat_result


def pipeline_never_read(ctx: Ctx) -> Result:
    """Pipeline 32 MB of streaming requests with 512 KB answers and never read: the gateway
    must stop reading (the sender stalls) with its memory bounded while the client sits."""
    request = post(chat(True, "big", user="p" * 16384))
    total = 2048 * len(request)
    stop = threading.Event()
    rss0, hwm0 = ctx.target.memory()
    with ctx.conn() as conn:

        def sender() -> None:
            sent = 0
            while sent < total and not stop.is_set():
                if conn.send(request, timeout=0.2):
                    sent += len(request)
                elif conn.send_error != "TimeoutError":
                    return

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        last = [conn.sent, time.monotonic()]

        def settled() -> bool:
            """The sender finished, or made no progress for half a second."""
            if not thread.is_alive():
                return True
            if conn.sent != last[0]:
                last[:] = [conn.sent, time.monotonic()]
                return False
            return time.monotonic() - last[1] >= 0.5

        poll(settled, 8.0)
        rss1, hwm1 = ctx.target.memory()
        stop.set()
        thread.join(2.0)
        if conn.sent >= total:
            ctx.problems.append("the gateway read 32 MB of pipelined requests (no pause)")
        grew = max(rss1 - rss0, hwm1 - hwm0) / 1024
        if grew > 32:
            ctx.problems.append(f"memory grew {grew:.0f} MB while the client did not read")
        result = conn.read(1.0)
        return result


HEALTH = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
BAD_JSON = post(b"x")
MAX_PIPELINED = 16  # the gateway's gateway.http_ingress.MAX_PIPELINED


def pipelined(ctx: Ctx, first: bytes, then: bytes, n: int) -> Result:
    """``first``, then ``n`` times ``then``, in one write. The gateway answers the first
    ``MAX_PIPELINED`` in order (the last with ``Connection: close``), then closes: the rest of
    that read is not parsed, and the client sends it again (RFC 9112, 9.3.2). Each answer given
    at once used to be written one call deeper than the one before: past ~300 of them
    ``RecursionError`` dropped the connection, or, behind a proxied request, left it hanging;
    and every request of a 256 KiB read waited as an object, ~10 times its bytes."""
    with ctx.conn() as conn:
        conn.send(first + then * n)
        result = conn.read(15.0, finals=n + 1, until_close=True)
        statuses = [r.status for r in result.finals]
        if len(statuses) != MAX_PIPELINED:
            ctx.problems.append(f"{len(statuses)} answers, want {MAX_PIPELINED}")
        elif statuses[1:] != [statuses[1]] * (MAX_PIPELINED - 1):
            ctx.problems.append(f"the pipelined answers differ: {sorted(set(statuses))}")
        elif not result.finals[-1].closes or not result.closed or result.reset:
            ctx.problems.append("the last answer is not followed by a clean close")
        result.responses = result.responses[:1]  # the first answer, as checked
        return result


CASES = [
    Case("pipeline-600-in-one-read", lambda ctx: pipelined(ctx, HEALTH, HEALTH, 599),
         Want(200), "rfc9112-9.3.2; MAX_PIPELINED", nginx=None, deadline=15.0),
    Case("pipeline-300-refusals-behind-a-stream",
         lambda ctx: pipelined(ctx, post(chat(True)), BAD_JSON, 300), Want(200),
         "rfc9112-9.3.2; MAX_PIPELINED", nginx=None, deadline=15.0),
    Case("over-max-connections", over_max_connections, err(503, "too_many_connections"),
         "config server.max_connections", nginx=None),
    Case("pipeline-never-read", pipeline_never_read, Want(200), "config server.write_buffer_bytes",
         deadline=10.0),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_connections(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
