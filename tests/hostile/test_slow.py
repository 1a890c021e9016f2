"""Slow and oversized clients: a head or body that never completes, an idle kept-alive
connection, bodies beyond ``limits.max_body_bytes`` (RFC 9110 15.5.9/15.5.14, nginx's
``client_header_timeout``, ``client_body_timeout``, ``keepalive_timeout``,
``client_max_body_size``). The suite's gateway has 1 s head/body timeouts, 2 s idle."""

from __future__ import annotations

import time

import pytest
from harness import SENTINEL, Case, Ctx, Report, chat, post, run_case, shaped
from rawhttp import Result
from targets import Target, Upstream
from wants import Want, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
TE = b"Transfer-Encoding: chunked"
OVER = 9 * 1024 * 1024  # beyond the default limits.max_body_bytes (8 MiB)
IDLE = 2.0  # server.idle_timeout of the suite's gateway
TIMED_OUT = Want(None, alt=(408,), ends=True)  # closed, a 408 allowed


def trickle(data: bytes, every: float, within: float) -> Case:
    """One byte of ``data`` per ``every`` s: the head timeout counts the whole head, so the
    server must end the connection ``within`` s whatever the pace."""

    def script(ctx: Ctx) -> Result:
        with ctx.conn() as conn:
            end = time.monotonic() + within
            for i in range(len(data)):
                if not conn.send(data[i : i + 1]):
                    break
                result = conn.read(every)  # returns early when the server answers or closes
                if result.closed or result.finals or time.monotonic() > end:
                    break
            return conn.read(0.5, until_close=True)

    return Case(
        "head-one-byte-per-100ms",
        script,
        TIMED_OUT,
        "nginx client_header_timeout",
        deadline=within,
    )


def head_begun_during_an_answer(ctx: Ctx) -> Result:
    """A request, and in the same write the start of another's head that never completes:
    once the answer is out, the head has ``head_timeout`` (1 s), not the idle timeout (2 s)."""
    with ctx.conn() as conn:
        conn.send(SENTINEL + b"POST /v1/chat/completions HTTP/1.1\r\nHo")
        sent = time.monotonic()
        result = conn.read(IDLE + 1.5, finals=2, until_close=True)
        took = time.monotonic() - sent
        if took > 1.75:
            ctx.problems.append(f"the unfinished head was given {took:.2f} s, not head_timeout")
        result.responses = result.responses[1:]  # the unfinished request's, as checked
        return result


def idle_keepalive(ctx: Ctx) -> Result:
    """One request, then nothing: the connection ends after the idle timeout, not before."""
    with ctx.conn() as conn:
        conn.send(SENTINEL)
        result = conn.read(1.5)
        answered = time.monotonic()
        if result.finals and conn.wait_closed(IDLE + 1.5):
            quiet = time.monotonic() - answered
            if quiet < IDLE / 2:
                ctx.problems.append(f"closed {quiet:.2f} s after the answer, before idle_timeout")
        return result


def chunks_over_limit(ctx: Ctx) -> Result:
    """A chunked body of 64 KiB chunks past the limit: 413 once the limit is crossed."""
    piece = b"%x\r\n%b\r\n" % (65536, b" " * 65536)
    with ctx.conn() as conn:
        conn.send(post(b"", TE, length=False))
        sent = 0
        while sent < OVER and conn.send(piece):
            sent += 65536
        return conn.read(1.5, until_close=True)


def cases(body: bytes, shape: str) -> list[Case]:
    half = post(body)[: -len(body) // 2]
    out = [
        Case("body-stall", half, err(408, "request_timeout"), "rfc9110-15.5.9 MAY; config",
             nginx=Want(None), deadline=3.0),
        Case("body-over-limit-length", post(b"", b"Content-Length: %d" % OVER, length=False),
             err(413, "request_too_large", ends=False),
             "rfc9110-15.5.14; nginx client_max_body_size (lingering close)"),
        # llhttp does not tell a chunk's declared size: a chunk that only claims more than
        # the limit is refused when the limit's worth has arrived, or at the body timeout
        # (408) when the client stalls first; memory stays bounded either way.
        Case("body-over-limit-one-chunk", post(b"%x\r\n" % OVER + b" " * 65536, TE, length=False),
             Want(413, close=True, ends=True, alt=(408,)),
             "rfc9110-15.5.14; nginx 413 (declared size); llhttp hides it: 408 at the stall",
             nginx=err(413, "request_too_large")),
    ]  # fmt: skip
    return shaped(out, shape)


CASES = [
    Case("post-then-silence", b"POST ", TIMED_OUT, "nginx client_header_timeout",
         deadline=3.0),
    trickle(post(chat(True)), every=0.1, within=3.0),
    Case("idle-keepalive", idle_keepalive, Want(200, ends=True), "nginx keepalive_timeout"),
    Case("head-begun-during-an-answer", head_begun_during_an_answer, TIMED_OUT,
         "nginx client_header_timeout", deadline=4.0),
    Case("body-over-limit-chunks", chunks_over_limit, err(413, "request_too_large"),
         "rfc9110-15.5.14; nginx client_max_body_size"),
    *cases(chat(True), "stream"),
    *cases(chat(False), "plain"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_slow(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
