"""Request framing and smuggling: every way to make two parsers disagree on where a request
ends, request-line oddities, HTTP versions and expectations (RFC 9112, RFC 9110, nginx 1.22).

Each case runs with a streaming and a non-streaming body (``-stream`` / ``-plain``): the
gateway must give both the same answer. A smuggled ``GET /smuggled`` follows many bodies: a
server that misframes the request answers it as a second request.
"""

from __future__ import annotations

import time

import pytest
from harness import STD, Case, Ctx, Report, chat, chunked, post, raw, run_case, shaped
from rawhttp import Result
from targets import Target, Upstream
from wants import CLOSED, SERVED, Want, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"


def expect_continue(body: bytes) -> Case:
    """``Expect: 100-continue``: the head alone, a 100, then the body and the answer."""

    def script(ctx: Ctx) -> Result:
        with ctx.conn() as conn:
            conn.send(post(body, b"Expect: 100-continue")[: -len(body)])
            result = conn.read(1.5, interim=True)
            if not any(r.status == 100 for r in result.responses) or result.closed:
                return result  # no 100 (or an early final answer): checked as it is
            conn.send(body)
            return conn.read(2.5)

    return Case("expect-100-continue", script, Want(200, interim=100), "rfc9110-10.1.1")


def expect_continue_pipelined(body: bytes) -> Case:
    """A request, then in the same write the head of one with ``Expect: 100-continue``: its
    100 belongs after the first request's answer (responses go in request order), never
    inside or before it."""

    def script(ctx: Ctx) -> Result:
        with ctx.conn() as conn:
            conn.send(post(body) + post(body, b"Expect: 100-continue")[: -len(body)])
            result = conn.read(3.0, finals=1)
            end = time.monotonic() + 1.5
            while len(result.responses) < 2 and not result.closed and time.monotonic() < end:
                result = conn.read(0.1, finals=2)  # the 100 is no final: until it came
            statuses = [r.status for r in result.responses]
            if statuses[:2] != [200, 100]:
                ctx.problems.append(f"answers in this order: {statuses} (want 200, then 100)")
                return result
            conn.send(body)
            result = conn.read(3.0, finals=2)
            if [r.status for r in result.responses] != [200, 100, 200]:
                ctx.problems.append(f"then: {[r.status for r in result.responses]}")
            result.responses = result.responses[1:]  # the second request's, as checked
            return result

    return Case("expect-100-continue-pipelined", script, Want(200, interim=100),
                "rfc9112-9.3.2, rfc9110-10.1.1")  # fmt: skip


def cases(body: bytes, shape: str) -> list[Case]:
    n = len(body)
    te_body = chunked(body)
    te = b"Transfer-Encoding: chunked"
    out = [
        Case("baseline", post(body), SERVED, "rfc9112"),
        # -- Content-Length ----------------------------------------------------------------
        Case(
            "cl-space-before-colon",
            post(body, b"Content-Length : %d" % n, length=False),
            err(400, "invalid_header"),
            "rfc9112-5.1 MUST 400",
        ),
        Case(
            "cl-duplicate-equal",
            post(body, b"Content-Length: %d" % n),
            err(400, "invalid_framing"),
            "rfc9110-8.6 MAY; nginx",
        ),
        Case(
            "cl-duplicate-different",
            post(body + SMUGGLE, b"Content-Length: %d" % n),
            err(400, "invalid_framing"),
            "rfc9112-6.3(5) MUST 400+close",
        ),
        Case(
            "cl-list-equal",
            post(body, b"Content-Length: %d, %d" % (n, n), length=False),
            err(400, "invalid_framing"),
            "rfc9110-8.6 MAY; nginx",
        ),
        Case(
            "cl-negative",
            post(b"", b"Content-Length: -1", length=False),
            err(400, "invalid_framing"),
            "rfc9112-6.3(5) MUST 400+close",
        ),
        Case(
            "cl-non-digit",
            post(body, b"Content-Length: 1a", length=False),
            err(400, "invalid_framing"),
            "rfc9112-6.3(5) MUST 400+close",
        ),
        Case(
            "cl-plus-sign",
            post(body, b"Content-Length: +%d" % n, length=False),
            err(400, "invalid_framing"),
            "rfc9112-6.3(5) MUST 400+close",
        ),
        Case(
            "cl-overflow",
            post(body, b"Content-Length: 99999999999999999999999", length=False),
            err(400, "invalid_framing"),
            "rfc9112-6.3(5) MUST 400+close",
        ),
        Case(
            "cl-hidden-behind-bare-lf",
            post(
                body + SMUGGLE,
                b"X-Pad: a\nContent-Length: %d" % (n + len(SMUGGLE)),
                b"Content-Length: %d" % n,
                length=False,
            ),
            err(400),
            "rfc9112-2.2, 6.3(5)",
        ),
        # -- Transfer-Encoding -------------------------------------------------------------
        Case("te-chunked", post(te_body, te, length=False), SERVED, "rfc9112-7.1"),
        Case(
            "cl-and-te",
            post(te_body + SMUGGLE, te, b"Content-Length: %d" % len(te_body), length=False),
            err(400, "invalid_framing"),
            "rfc9112-6.1 MAY reject, MUST close; nginx",
        ),
        *(
            Case(
                f"te-{name}",
                post(te_body, b"Transfer-Encoding: " + value, length=False),
                err(400, "invalid_framing"),
                "rfc9112-6.3(4) MUST 400+close (chunked not final)",
                nginx=err(501),
            )
            for name, value in (
                ("chunked-identity", b"chunked, identity"),
                ("xchunked", b"xchunked"),
                ("identity", b"identity"),
            )
        ),
        Case(
            "te-gzip-chunked",
            post(te_body, b"Transfer-Encoding: gzip, chunked", length=False),
            err(501, "unsupported_transfer_encoding"),
            "rfc9112-6.1 SHOULD 501; nginx",
        ),
        Case(
            "te-twice",
            post(te_body, te, te, length=False),
            err(400, "invalid_framing"),
            "rfc9112-7 (chunked once); nginx",
        ),
        Case(
            "te-space-before-colon",
            post(te_body + SMUGGLE, b"Transfer-Encoding : chunked", length=False),
            err(400, "invalid_header"),
            "rfc9112-5.1 MUST 400",
        ),
        Case(
            "te-in-http10",
            post(te_body, te, length=False, version=b"HTTP/1.0"),
            err(400, "invalid_framing"),
            "rfc9112-6.1 MUST treat as faulty",
        ),
        Case(
            "chunk-size-negative",
            post(b"-1\r\n" + body + b"\r\n0\r\n\r\n", te, length=False),
            err(400, "invalid_framing"),
            "rfc9112-7.1",
        ),
        Case(
            "chunk-size-0x",
            post(b"0x%x\r\n" % n + body + b"\r\n0\r\n\r\n", te, length=False),
            err(400, "invalid_framing"),
            "rfc9112-7.1",
        ),
        Case(
            "chunk-size-overflow",
            post(b"f" * 20 + b"\r\n" + body, te, length=False),
            err(400, "invalid_framing"),
            "rfc9112-7.1",
        ),
        Case(
            "chunk-no-last-then-silence",
            post(b"%x\r\n%b\r\n" % (n, body), te, length=False),
            err(408, "request_timeout"),
            "rfc9110-15.5.9 MAY; config",
            nginx=CLOSED,
            deadline=3.0,
        ),
        Case(
            "cl-longer-than-body-then-silence",
            post(body, b"Content-Length: %d" % (n + 10), length=False),
            err(408, "request_timeout"),
            "rfc9110-15.5.9 MAY; config",
            nginx=CLOSED,
            deadline=3.0,
        ),
        # -- header syntax that changes framing ----------------------------------------------
        Case(
            "obs-fold",
            post(body, b"X-Folded: a", b" b"),
            err(400, "invalid_header"),
            "rfc9112-5.2 MUST 400 or unfold",
        ),
        Case(
            "bare-lf-everywhere",
            raw(
                b"POST /v1/chat/completions HTTP/1.1",
                *STD,
                b"Content-Length: %d" % n,
                body=body,
                eol=b"\n",
            ),
            err(400, "invalid_request_line"),
            "rfc9112-2.2 MAY accept; llhttp strict",
            nginx=SERVED,
        ),
        Case(
            "bare-lf-in-fields",
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            + raw(*STD, b"Content-Length: %d" % n, body=body, eol=b"\n"),
            err(400, "invalid_header"),
            "rfc9112-2.2 MAY accept; llhttp strict",
            nginx=SERVED,
        ),
        # -- request line --------------------------------------------------------------------
        Case(
            "request-line-garbage",
            b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
            err(400, "invalid_request_line"),
            "rfc9112-3 SHOULD 400; nginx",
        ),
        Case(
            "absolute-form",
            post(body, target=b"http://gw/v1/chat/completions"),
            SERVED,
            "rfc9112-3.2.2 MUST accept",
        ),
        Case(
            "unknown-method",
            raw(b"FOO /v1/chat/completions HTTP/1.1", *STD, b"Content-Length: %d" % n, body=body),
            err(501, "method_not_implemented", close=False),
            "rfc9110-9.1 SHOULD 501",
            nginx=SERVED,  # proxied: the upstream answers
        ),
        Case(
            "lowercase-method",
            raw(b"post /v1/chat/completions HTTP/1.1", *STD, b"Content-Length: %d" % n, body=body),
            err(400, "invalid_request_line"),
            "rfc9112-3; nginx",
        ),
        Case(
            "connect",
            raw(b"CONNECT api.openai.com:443 HTTP/1.1", b"Host: api.openai.com:443"),
            Want(400, close=True, ends=True, alt=(405,)),
            "rfc9110-9.3.6 (no tunnels here): nginx 400, 405 allowed",
        ),
        Case(
            "get-on-chat-route",
            raw(b"GET /v1/chat/completions HTTP/1.1", *STD),
            Want(405, code="method_not_allowed", header=("allow", "POST")),
            "rfc9110-15.5.6 MUST Allow",
            nginx=Want(404),  # proxied: the upstream answers
        ),
        Case(
            "http2-preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            err(400, "invalid_request_line"),
            "rfc9113-3.4; nginx",
        ),
        Case(
            "http2-version-request-line",
            raw(b"POST /v1/chat/completions HTTP/2.0", *STD, b"Content-Length: %d" % n, body=body),
            err(505, "http_version_not_supported"),
            "rfc9110-15.6.6",
        ),
        Case(
            "http09",
            b"GET /health\r\n",
            Want(400, close=True, ends=True, code="invalid_request_line", alt=(None, 408)),
            "rfc9112-2.3 (0.9 obsolete): refused, or the head times out",
            nginx=None,
            note="nginx answers in HTTP/0.9 form (body, no status line): not comparable",
        ),
        Case(
            "http10",
            post(body, version=b"HTTP/1.0"),
            Want(200, ends=True, no_chunked=True),
            "rfc9112-6.1 MUST NOT chunk to 1.0, 9.3 close",
        ),
        expect_continue(body),
        expect_continue_pipelined(body),
        Case(
            "expect-unknown",
            post(body, b"Expect: teapot"),
            Want(200, alt=(417,)),
            "rfc9110-10.1.1 MAY 417; nginx ignores it (200)",
        ),
    ]
    return shaped(out, shape)


CASES = cases(chat(True, ident="framing"), "stream") + cases(chat(False, ident="framing"), "plain")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_framing(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
