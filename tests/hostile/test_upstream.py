"""A faulty upstream: broken chunk sizes (the ``-6`` that froze the gateway), oversized and
endless answers, connections closed mid-answer, garbage heads, informational 1xx heads before
the answer, error statuses, bytes on an idle pooled connection, silence. Both replicas are
ports of the same fake upstream; a fault marked ``once`` hits the first attempt only, so a
retry on the other replica shows.

What a client must get (issue 12, items 3 and 7): a failure before anything reached it is
retried on the other replica; a non-streaming failure after the upstream's head is a 502 with
an OpenAI-shaped JSON error; a stream that broke after its first event ends with one SSE error
event and the chunked end; an upstream 4xx passes through. Gateway-only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import AUTH, Case, Ctx, Report, chat, post, rid, run_case
from rawhttp import RawConn, Result
from targets import MAX_RESPONSE, Target, Upstream, poll
from wants import SERVED, Want

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
NGINX_APPLIES = False
BROKEN = Want(200, sse_error="upstream_interrupted")  # the stream ends with an error event


def bad(code: str) -> Want:
    return Want(502, code=code)


PROTOCOL = bad("upstream_protocol_error")
GONE = bad("upstream_unavailable")
TOO_LARGE = bad("upstream_response_too_large")


def fault_case(
    name: str,
    fault: str,
    stream: bool,
    want: Want,
    ref: str,
    *,
    once: bool = False,
    closes: bool = False,
    bounded: bool = False,
    follow: int = 0,
    leave_after: int = 0,
    deadline: float = 3.0,
) -> Case:
    """One request to a faulty upstream, and what must follow: ``once`` the retry on the other
    replica; ``closes`` the gateway closing the broken upstream connection; ``bounded`` the
    upstream having written little more than ``max_response_bytes`` before that; ``follow``
    requests afterwards that must get their own answers; ``leave_after`` the client leaving
    after that many body bytes."""
    shape = "stream" if stream else "plain"
    ident = rid()

    def script(ctx: Ctx) -> Result:
        assert ctx.upstream is not None
        up = ctx.upstream
        with ctx.conn() as conn:
            conn.send(post(chat(stream, fault, ident=ident, once=once), AUTH))
            result = read_some(conn, leave_after, deadline) if leave_after else conn.read(deadline)
        record = up.record(ident)
        if once:
            ports = [a["port"] for a in record["attempts"]]
            if len(ports) != 2 or ports[0] == ports[1]:
                ctx.problems.append(f"not retried on the other replica: attempts {ports}")
            elif result.finals and f"port:{ports[1]}".encode() not in result.finals[0].body:
                ctx.problems.append("the answer is not the second replica's")
        if closes and not poll(lambda: up.record(ident)["peer_closed"] >= 1, 2.0):
            ctx.problems.append("the gateway kept the broken upstream connection open")
        if bounded:
            written = up.record(ident)["written"]
            if written > 16 * MAX_RESPONSE:
                ctx.problems.append(f"the gateway read {written >> 20} MB of an endless answer")
        if fault == "idle_bytes":
            up.release(ident)  # the client has the answer: the connection is idle in the pool
            idle_checks(ctx, ident)
        for _ in range(follow):
            follow_up(ctx)
        return result

    return Case(
        f"{name}-{shape}" + ("-once" if once else ""),
        script,
        want,
        ref,
        shape=shape,
        deadline=deadline,
    )


def read_some(conn: RawConn, size: int, deadline: float) -> Result:
    """Read until the first response's body holds ``size`` bytes (or it ends, or time is up)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = conn.read(0.2)
        if result.closed or result.finals:
            break
        if result.responses and len(result.responses[0].body) >= size:
            break
    return conn.result


def idle_checks(ctx: Ctx, ident: str) -> None:
    """Bytes arrived on the pooled connection while idle: the gateway closes it."""
    up = ctx.upstream
    assert up is not None
    if not poll(lambda: up.record(ident)["junk_written"], 2.0):
        ctx.problems.append("the upstream never wrote its idle bytes")
    elif not poll(lambda: up.record(ident)["peer_closed"] >= 1, 2.0):
        ctx.problems.append("a pooled connection that received bytes while idle stayed open")


def follow_up(ctx: Ctx) -> None:
    """A later request gets its own healthy answer, never bytes left on a pooled connection."""
    with ctx.conn() as conn:
        conn.send(post(chat(False), AUTH))
        result = conn.read(3.0)
    if not result.finals or result.finals[0].status != 200:
        ctx.problems.append(f"a later request got {result.describe()}")
    elif b"smuggled" in result.finals[0].body or b"tok1" not in result.finals[0].body:
        ctx.problems.append(f"a later request got another answer: {result.finals[0].body[:80]!r}")


def both(name: str, fault: str, want: Want, ref: str, **kw: Any) -> list[Case]:
    return [fault_case(name, fault, s, want, ref, **kw) for s in (True, False)]


RETRY = "issue 12 item 7: retry while nothing reached the client"
CASES = [
    *both("healthy", "none", SERVED, "baseline"),
    # -- chunk sizes: -6 used to freeze the gateway --------------------------------------------
    fault_case("chunk-size-minus-6", "neg6", True, BROKEN, "rfc9112-7.1", closes=True),
    fault_case("chunk-size-minus-6", "neg6", False, PROTOCOL, "rfc9112-7.1", closes=True),
    fault_case("chunk-size-minus-6", "neg6", False, SERVED, RETRY, once=True),
    fault_case("chunk-size-minus-6-first", "neg6_early", True, PROTOCOL, "rfc9112-7.1"),
    fault_case("chunk-size-minus-6-first", "neg6_early", True, SERVED, RETRY, once=True),
    *(
        fault_case(f"chunk-size-{name}", fault, stream, BROKEN if stream else PROTOCOL,
                   "rfc9112-7.1 chunk-size = 1*HEXDIG", closes=True)
        for name, fault in (("0x91", "hex0x"), ("plus-5", "plus5"), ("1_0", "underscore"),
                            ("20-hex-digits", "hex20"))
        for stream in (True, False)
    ),
    *both("chunk-extension", "ext_small", SERVED, "rfc9112-7.1.1 MUST ignore"),
    *both("chunk-extension-97k", "ext_huge", SERVED, "rfc9112-7.1.1 MUST ignore; llhttp"),
    fault_case("chunk-over-max-chunk-bytes", "chunk_big", True, BROKEN,
               "config limits.max_chunk_bytes"),
    fault_case("chunk-over-max-chunk-bytes", "chunk_big", False, PROTOCOL,
               "config limits.max_chunk_bytes"),
    # -- endless answers -------------------------------------------------------------------------
    fault_case("endless-chunked", "endless_chunked", False, TOO_LARGE,
               "config limits.max_response_bytes", closes=True, bounded=True),
    fault_case("endless-length", "endless_length", False, TOO_LARGE,
               "config limits.max_response_bytes", closes=True, bounded=True),
    fault_case("endless-stream-client-leaves", "endless_chunked", True, Want(200, partial=True),
               "the client's leaving closes the upstream", closes=True, leave_after=MAX_RESPONSE),
    # -- connections that end early ----------------------------------------------------------
    *both("close-after-head", "close_after_head", GONE, "rfc9112-8"),
    *both("close-after-head", "close_after_head", SERVED, RETRY, once=True),
    *both("close-in-first-piece", "close_in_first", GONE, "rfc9112-8"),
    *both("close-in-first-piece", "close_in_first", SERVED, RETRY, once=True),
    fault_case("close-after-first-event", "close_after_first", True, BROKEN, "rfc9112-8"),
    fault_case("close-after-first-event", "close_after_first", False, GONE, "rfc9112-8"),
    fault_case("close-after-first-event", "close_after_first", False, SERVED, RETRY, once=True),
    # -- heads that do not parse -------------------------------------------------------------
    *both("status-line-garbage", "status_garbage", PROTOCOL, "rfc9112-4"),
    *both("status-line-garbage", "status_garbage", SERVED, RETRY, once=True),
    *both("response-head-100k", "huge_header", PROTOCOL, "nginx proxy_buffer_size: 502"),
    fault_case("response-head-100k", "huge_header", True, SERVED, RETRY, once=True),
    *both("content-length-shorter-than-sent", "cl_short", SERVED, "rfc9112-6.3: framing wins",
          follow=4),
    *both("interim-1xx-before-the-answer", "interim", SERVED,
          "rfc9110-15.2: MUST parse and ignore unexpected 1xx", follow=2),
    # -- error statuses ------------------------------------------------------------------------
    *both("status-400", "status_400", Want(400, code="fake_400"), "passed through"),
    *both("status-422", "status_422", Want(422, code="fake_422"), "passed through"),
    fault_case("status-500", "status_500", False, Want(500, code="fake_500"), "passed through"),
    fault_case("status-503", "status_503", False, Want(503, code="fake_503"),
               "retried, then passed through"),
    fault_case("status-503", "status_503", True, SERVED, RETRY, once=True),
    # -- idle pooled connections, silence -------------------------------------------------------
    fault_case("bytes-on-idle-connection", "idle_bytes", True, SERVED,
               "issue 12 item 3: not reused", follow=4),
    fault_case("silent", "silent", False, Want(504, code="upstream_timeout"),
               "config timeouts.first_byte", closes=True, deadline=4.0),
    fault_case("silent", "silent", True, SERVED, RETRY + " (nginx 1.22 retries no POST)",
               once=True, deadline=4.0),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_upstream(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
