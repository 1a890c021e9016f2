"""Request bodies that are valid HTTP but hostile JSON: deep nesting, the non-standard NaN and
Infinity literals, invalid UTF-8 (RFC 8259), and a large valid body that must be served.
Gateway-only: nginx does not read bodies."""

from __future__ import annotations

import json

import pytest
from harness import Case, Report, chat, post, run_case, shaped
from targets import Target, Upstream
from wants import CANARY_BODY, SERVED, err

pytestmark = [pytest.mark.integration, pytest.mark.hostile]
NGINX_APPLIES = False
DEPTH = 100_000
USER = {"role": "user", "content": f"hello {CANARY_BODY} fault:none rid:json"}


def body_with(stream: bool, extra: bytes) -> bytes:
    """A valid request head-on, with ``extra`` spliced in as one more member."""
    start = json.dumps({"model": "m", "stream": stream, "messages": [USER]}).encode()[:-1]
    return start + b', "extra": ' + extra + b"}"


def seven_mb(stream: bool) -> bytes:
    """About 7 MB of earlier conversation before a short last user message."""
    history = [{"role": "assistant", "content": "lorem ipsum dolor " * 1024} for _ in range(380)]
    payload = {"model": "m", "stream": stream, "messages": [*history, USER], "max_tokens": 4}
    return json.dumps(payload).encode()


def cases(stream: bool, shape: str) -> list[Case]:
    bad = err(400, "invalid_json", close=False)
    out = [
        Case("json-deep-arrays", post(body_with(stream, b"[" * DEPTH + b"]" * DEPTH)), bad,
             "rfc8259-9 (limits on depth)"),
        Case("json-deep-objects", post(body_with(stream, b'{"a":' * DEPTH + b"1" + b"}" * DEPTH)),
             bad, "rfc8259-9 (limits on depth)"),
        Case("json-nan", post(body_with(stream, b"NaN")), bad, "rfc8259-6 (no NaN)"),
        Case("json-infinity", post(body_with(stream, b"Infinity")), bad, "rfc8259-6"),
        Case("json-minus-infinity", post(body_with(stream, b"-Infinity")), bad, "rfc8259-6"),
        Case("json-invalid-utf8", post(body_with(stream, b'"caf\xe9 \xff"')), bad, "rfc8259-8.1"),
        Case("json-trailing-bytes", post(chat(stream) + b" x"), bad, "rfc8259-2"),
        Case("json-7mb-served", post(seven_mb(stream)), SERVED, "config limits.max_body_bytes",
             rss_mb=96.0, deadline=5.0),
    ]  # fmt: skip
    return shaped(out, shape)


CASES = cases(True, "stream") + cases(False, "plain")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_json(case: Case, target: Target, upstream: Upstream, report: Report) -> None:
    run_case(case, target, upstream, report)
