"""API keys and secrets: the ``Authorization`` edge cases (RFC 9110 11), and malformed requests
carrying a key, a prompt and a header value that must never reach a log line or an error
body. This module's gateway requires ``VALID_KEY``, logs access lines and runs every logger at
DEBUG. Gateway-only: nginx checks no keys."""

from __future__ import annotations

import base64

import pytest
from harness import (
    AUTH,
    CHAT,
    STD,
    VALID_KEY,
    Case,
    Ctx,
    Report,
    chat,
    chunked,
    perform,
    post,
    raw,
    run_case,
    shaped,
)
from rawhttp import Result
from targets import Target, Upstream, poll
from wants import SERVED, Want, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
NGINX_APPLIES = False
GATEWAY_SECTIONS = {"api_keys": [VALID_KEY]}
GATEWAY_OPTIONS = {"debug": True}
KEY = VALID_KEY.encode()
UNAUTHORIZED = Want(401, code="invalid_api_key")


def bearer(value: bytes) -> bytes:
    return b"Authorization: " + value


def auth_cases(body: bytes, shape: str) -> list[Case]:
    basic = base64.b64encode(b"user:" + KEY)
    out = [
        Case("auth-valid", post(body, AUTH), SERVED, "rfc9110-11.6.2"),
        Case("auth-missing", post(body), UNAUTHORIZED, "rfc9110-15.5.2"),
        Case("auth-scheme-lowercase", post(body, bearer(b"bearer " + KEY)), SERVED,
             "rfc9110-11.1 scheme case-insensitive"),
        Case("auth-scheme-uppercase", post(body, bearer(b"BEARER " + KEY)), SERVED,
             "rfc9110-11.1 scheme case-insensitive"),
        Case("auth-extra-spaces", post(body, bearer(b"Bearer    " + KEY + b"   ")), SERVED,
             "rfc9110-11.4 1*SP; 5.5 OWS"),
        Case("auth-basic", post(body, bearer(b"Basic " + basic)), UNAUTHORIZED, "rfc9110-11.6.2"),
        Case("auth-wrong-key", post(body, bearer(b"Bearer sk-wrong")), UNAUTHORIZED,
             "rfc9110-15.5.2"),
        Case("auth-key-prefix", post(body, bearer(b"Bearer " + KEY[:-1])), UNAUTHORIZED,
             "rfc9110-15.5.2"),
        Case("auth-scheme-only", post(body, bearer(b"Bearer")), UNAUTHORIZED, "rfc9110-11.4"),
        Case("auth-duplicate", post(body, AUTH, bearer(b"Bearer sk-wrong")),
             err(400, "duplicate_header", close=False), "rfc9110-5.3 (not a list field)"),
        Case("auth-duplicate-same", post(body, AUTH, AUTH),
             err(400, "duplicate_header", close=False), "rfc9110-5.3 (not a list field)"),
        Case("auth-non-ascii", post(body, bearer(b"Bearer sk-\xe9\xff")), UNAUTHORIZED,
             "rfc9110-5.5 obs-text; never 500"),
        Case("auth-key-in-query", post(body, target=CHAT + b"?api_key=" + KEY), UNAUTHORIZED,
             "keys travel in the header only"),
    ]  # fmt: skip
    return shaped(out, shape)


AUTH_CASES = auth_cases(chat(True), "stream") + auth_cases(chat(False), "plain")


@pytest.mark.parametrize("case", AUTH_CASES, ids=lambda c: c.id)
def test_auth(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)


# -- secrets --------------------------------------------------------------------------------
SECRET_KEY = b"sk-SECRET-KEY-4fd1"
SECRET_PROMPT = "SECRET-PROMPT-9c2e"
SECRET_HEAD = b"SECRET-HEAD-77aa"
SECRETS = (SECRET_KEY, SECRET_PROMPT.encode(), SECRET_HEAD, b"SECRET-PATH", KEY)


def secret_body(stream: bool = True, fault: str = "none") -> bytes:
    return chat(stream, fault).replace(b"hello", SECRET_PROMPT.encode())


def leaks(text: bytes) -> list[str]:
    return [s.decode() for s in SECRETS if s in text]


MARKER_BODY = b'{"model": "m", "stream": true, "prompt": "marker", "max_tokens": 4}'
MARKER = post(MARKER_BODY, AUTH, target=b"/v1/completions")


def secret_case(name: str, request: bytes, want: Want, ref: str) -> Case:
    """``request`` carries secrets: neither its answer nor anything the gateway logs while it
    is served may contain one. A completion request follows it: once that request's access
    line is in the log, everything logged about the case is there too."""
    inner = Case(name, request, want, ref)

    def script(ctx: Ctx) -> Result:
        start = len(ctx.target.log_text())
        result = perform(inner, ctx, want)
        for resp in result.responses:
            if leaks(resp.body):
                ctx.problems.append(f"the {resp.status} body holds {leaks(resp.body)}")
        with ctx.conn() as conn:
            conn.send(MARKER)
            marker = conn.read(3.0)
        if not marker.finals or marker.finals[0].status != 200:
            ctx.problems.append(f"the marker request got {marker.describe()}")

        def logged() -> bool:
            return '"path": "/v1/completions"' in ctx.target.log_text()[start:]

        if not poll(logged, 2.0):
            ctx.problems.append("no access line for the marker request")
        found = leaks(ctx.target.log_text()[start:].encode())
        if found:
            ctx.problems.append(f"the gateway's log holds {found}")
        return result

    return Case(name, script, want, ref, shape="stream")


SECRET_AUTH = bearer(b"Bearer " + SECRET_KEY)
TRACE = b"X-Trace: " + SECRET_HEAD
SECRET_CASES = [
    secret_case("secret-valid-request", post(secret_body(), AUTH, TRACE), SERVED,
                "docs/operations.md: no keys or prompts logged"),
    secret_case("secret-wrong-key", post(secret_body(), SECRET_AUTH, TRACE), UNAUTHORIZED,
                "rfc9110-15.5.2"),
    secret_case("secret-nul-in-header", post(secret_body(), SECRET_AUTH, TRACE + b"\x00"),
                err(400, "invalid_header"), "rfc9110-5.5"),
    secret_case("secret-duplicate-length", post(secret_body(), SECRET_AUTH, TRACE,
                                                b"Content-Length: 1"),
                err(400, "invalid_framing"), "rfc9112-6.3"),
    secret_case("secret-bad-chunk", post(b"-5\r\n" + secret_body(), AUTH, TRACE,
                                         b"Transfer-Encoding: chunked", length=False),
                err(400, "invalid_framing"), "rfc9112-7.1"),
    secret_case("secret-obs-fold",
                post(secret_body(), SECRET_AUTH, b"X-Trace: a", b" " + SECRET_HEAD),
                err(400, "invalid_header"), "rfc9112-5.2"),
    secret_case("secret-bad-json", post(secret_body()[:-3], AUTH, TRACE),
                err(400, "invalid_json", close=False), "rfc8259"),
    secret_case("secret-invalid-utf8",
                post(secret_body().replace(b"SECRET-PROMPT", b"SECRET-PROMPT\xff"), AUTH, TRACE),
                err(400, "invalid_json", close=False), "rfc8259-8.1"),
    secret_case("secret-unknown-route", raw(b"POST /v1/SECRET-PATH-0b1d HTTP/1.1", *STD, AUTH,
                                            b"Content-Length: 0"),
                Want(404, code="unknown_url"), "rfc9110-15.5.5"),
    secret_case("secret-head-too-large", post(secret_body(), SECRET_AUTH, TRACE,
                                              *(b"X-H%d: " % i + b"v" * 4000 for i in range(16))),
                err(431, "headers_too_large"), "rfc6585-5"),
    secret_case("secret-upstream-400", post(secret_body(False, "status_400"), AUTH, TRACE),
                Want(400, code="fake_400"), "upstream error passed through"),
    secret_case("secret-chunked-valid", post(chunked(secret_body()), AUTH, TRACE,
                                             b"Transfer-Encoding: chunked", length=False),
                SERVED, "rfc9112-7.1"),
]  # fmt: skip


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda c: c.id)
def test_secrets(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
