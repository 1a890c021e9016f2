"""Header fields: Host rules, forbidden bytes in names and values, count and size limits
(RFC 9112 3.2, RFC 9110 5, RFC 6585 5, nginx 1.22). Each case runs with a streaming and a
non-streaming body: the gateway's fast path must refuse what its other path refuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import Case, Ctx, Report, chat, post, raw, run_case, shaped
from rawhttp import Result
from targets import Target, Upstream
from wants import SERVED, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
START = b"POST /v1/chat/completions HTTP/1.1"
TYPE = b"Content-Type: application/json"


def unfinished(
    prefix: bytes, filler: Callable[[int], bytes], total: int
) -> Callable[[Ctx], Result]:
    """Send ``prefix`` and ``total`` bytes of ``filler`` pieces, never ending the head: a server
    that bounds what it buffers answers before the head ends (and before its head timeout)."""

    def script(ctx: Ctx) -> Result:
        with ctx.conn() as conn:
            conn.send(prefix)
            sent, i = 0, 0
            while sent < total and conn.send(filler(i)):
                sent += len(filler(i))
                i += 1
            return conn.read(1.5, until_close=True)

    return script


def cases(body: bytes, shape: str) -> list[Case]:
    n = len(body)
    cl = b"Content-Length: %d" % n
    out = [
        Case("host-missing", raw(START, TYPE, cl, body=body), err(400, "invalid_host"),
             "rfc9112-3.2 MUST 400"),
        Case("host-duplicate", post(body, b"Host: gw"), err(400, "invalid_host"),
             "rfc9112-3.2 MUST 400"),
        Case("host-two-values", post(body, b"Host: other"), err(400, "invalid_host"),
             "rfc9112-3.2 MUST 400"),
        Case("host-invalid-value", raw(START, b"Host: a b", TYPE, cl, body=body),
             err(400, "invalid_host"), "rfc9112-3.2 MUST 400"),
        Case("nul-in-value", post(body, b"X-A: a\x00b"), err(400, "invalid_header"),
             "rfc9110-5.5 MUST reject or replace; nginx"),
        Case("cr-in-value", post(body, b"X-A: a\rb"), err(400, "invalid_header"),
             "rfc9110-5.5 MUST reject or replace; nginx"),
        Case("lf-in-value", post(body, b"X-A: a\nb"), err(400, "invalid_header"),
             "rfc9112-2.2 SHOULD 400", nginx=SERVED),
        Case("name-invalid-char", post(body, b"X(A): 1"), err(400, "invalid_header"),
             "rfc9112-2.2 SHOULD 400; rfc9110-5.1 token", nginx=SERVED),
        Case("name-with-space", post(body, b"X A: 1"), err(400, "invalid_header"),
             "rfc9112-2.2 SHOULD 400; rfc9110-5.1 token"),
        Case("name-empty", post(body, b": 1"), err(400, "invalid_header"),
             "rfc9112-2.2 SHOULD 400; rfc9110-5.1 token"),
        Case("obs-text-in-value", post(body, b"X-A: caf\xe9"), SERVED,
             "rfc9110-5.5 obs-text allowed; nginx"),
        Case("headers-90", post(body, *(b"X-H%d: v" % i for i in range(90))), SERVED,
             "config server.max_headers=100"),
        Case("headers-5000", post(body, *(b"X: v",) * 5000), err(431, "too_many_headers"),
             "rfc6585-5; config server.max_headers=100", nginx=err(400)),
        Case("head-20k", post(body, *(b"X-H%d: " % i + b"v" * 3000 for i in range(6))),
             SERVED, "config server.max_head_bytes=32K; nginx 4x8K"),
    ]  # fmt: skip
    return shaped(out, shape)


UNFINISHED = [
    Case(
        "head-1mb-unfinished",
        unfinished(
            START + b"\r\nHost: gw\r\n", lambda i: b"X-H%d: " % i + b"v" * 4000 + b"\r\n", 1 << 20
        ),
        err(431, "headers_too_large"),
        "rfc6585-5; config server.max_head_bytes",
        nginx=err(400),
    ),
    Case(
        "url-1mb-unfinished",
        unfinished(b"GET /v1/models?q=", lambda i: b"a" * 65536, 1 << 20),
        err(414, "uri_too_long"),
        "rfc9112-3 MUST 414; nginx",
    ),
]
CASES = [
    *cases(chat(True, ident="headers"), "stream"),
    *cases(chat(False, ident="headers"), "plain"),
    *UNFINISHED,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_headers(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
