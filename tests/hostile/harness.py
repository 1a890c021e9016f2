"""The hostile suite's case model and the checks every case runs.

A ``Case`` is bytes to send (or a function driving a connection), the answer wanted from the
gateway (``Want``), the reference it follows (RFC section or ``nginx``) and nginx 1.22's own
answer, as measured with ``HOSTILE_TARGET=nginx``. ``run_case`` sends it, checks the answer,
then checks that another client's streaming request is still served and that the server's
memory grew less than the case's bound; every problem found is reported at once.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rawhttp import RawConn, Response, Result
from targets import HOST, Gateway, Target, Upstream

CANARY_HEAD = "CANARY-HEAD-h7Q2"  # in every case's head: never to be quoted back
CANARY_BODY = "CANARY-BODY-b8W3"  # in every case's prompt
CHAT = b"/v1/chat/completions"
VALID_KEY = "sk-SECRET-VALID-KEY-51e0"  # the key of gateways with ``api_keys`` (never logged)
AUTH = b"Authorization: Bearer " + VALID_KEY.encode()
SENTINEL = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"


def nginx_mode() -> bool:
    return os.environ.get("HOSTILE_TARGET", "gateway") == "nginx"


# -- what a case wants ----------------------------------------------------------------------
@dataclass(frozen=True)
class Want:
    """An expected answer: a status (None = the connection closes without any response)."""

    status: int | None
    close: bool = False  # the response says ``Connection: close``
    ends: bool = False  # the connection ends after the response
    code: str | None = None  # ``error.code`` of the OpenAI-shaped JSON body
    alt: tuple[int | None, ...] = ()  # also accepted (e.g. a 408 beside a silent close)
    interim: int | None = None  # a 1xx expected before the final response
    no_chunked: bool = False  # the response must not use chunked framing (HTTP/1.0)
    header: tuple[str, str] | None = None  # a field the response must carry, and its value
    sse_error: str | None = None  # a 200 stream ending in one SSE error event with this code
    partial: bool = False  # the client leaves before the response ends

    def __str__(self) -> str:
        text = "closed" if self.status is None else str(self.status)
        if self.interim:
            text = f"{self.interim} then {text}"
        if self.alt:
            text += " (or " + ", ".join("closed" if a is None else str(a) for a in self.alt) + ")"
        if self.close and self.ends:
            text += " + close"
        elif self.close:
            text += " + Connection: close"
        elif self.ends:
            text += " + connection ends"
        if self.code:
            text += f" [{self.code}]"
        if self.no_chunked:
            text += " without chunked"
        if self.header:
            text += f" with {self.header[0]}: {self.header[1]}"
        if self.sse_error:
            text += f" ending in an SSE error [{self.sse_error}]"
        return text


CLOSED = Want(None)
SERVED = Want(200)


def err(status: int, code: str | None = None, *, close: bool = True, ends: bool = True) -> Want:
    """An error answer with ``Connection: close``, the connection ended (``ends``) too."""
    return Want(status, close=close, ends=close and ends, code=code)


@dataclass
class Ctx:
    """What a scripted case gets: the target, the upstream, a place for extra problems."""

    target: Target
    upstream: Upstream | None
    problems: list[str] = field(default_factory=list)

    def conn(self) -> RawConn:
        return RawConn(HOST, self.target.port)


Script = Callable[[Ctx], Result]


@dataclass(frozen=True)
class Case:
    id: str
    send: bytes | Script
    want: Want
    ref: str  # e.g. "rfc9112-6.3", "nginx", "config"
    nginx: Want | None = None  # nginx 1.22's answer; None: not applicable to nginx
    shape: str | None = None  # "stream" / "plain": what a 200 must carry
    deadline: float = 1.5  # seconds to wait for the answer
    rss_mb: float = 16.0  # memory growth allowed (VmRSS and VmHWM)
    note: str = ""

    def expected(self) -> Want | None:
        return self.nginx if nginx_mode() else self.want


# -- requests -------------------------------------------------------------------------------
def rid() -> str:
    return uuid.uuid4().hex[:12]


def chat(
    stream: bool, fault: str = "none", *, ident: str = "", once: bool = False, **kw: Any
) -> bytes:
    """A chat request body; ``fault`` and ``ident`` steer the fake upstream."""
    text = f"hello {CANARY_BODY} fault:{fault} rid:{ident or rid()}" + (" once" if once else "")
    payload = {
        "model": "m",
        "stream": stream,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": text}],
        **kw,
    }
    return json.dumps(payload).encode()


STD = (b"Host: gw", b"Content-Type: application/json", b"X-Canary: " + CANARY_HEAD.encode())


def raw(start: bytes, *fields: bytes, body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    """A request from its start line and field lines, each ended by ``eol``."""
    return b"".join(line + eol for line in (start, *fields)) + eol + body


def post(body: bytes, *fields: bytes, std: tuple[bytes, ...] = STD, target: bytes = CHAT,
         version: bytes = b"HTTP/1.1", length: bool = True) -> bytes:  # fmt: skip
    """A POST of ``body`` with the standard fields, ``fields`` and (``length``) its length."""
    cl = (b"Content-Length: %d" % len(body),) if length else ()
    return raw(b"POST " + target + b" " + version, *std, *fields, *cl, body=body)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# -- checks ---------------------------------------------------------------------------------
def served_problem(resp: Response, shape: str) -> str | None:
    """Why a 200 does not carry the healthy answer of the fake upstream, or None."""
    if not resp.complete:
        return "the 200 response is incomplete"
    if shape == "stream":
        events = resp.events()
        if not events or events[-1] != "[DONE]" or "tok1" not in resp.body.decode(errors="replace"):
            return f"the stream is not the upstream's events: {resp.body[:120]!r}"
        if b"smuggled" in resp.body:
            return "the stream carries a smuggled answer"
        return None
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"the body is not the upstream's answer: {resp.body[:120]!r}"
    return None if "tok1" in content else f"unexpected content {content!r}"


def sse_error_problem(resp: Response, code: str) -> str | None:
    """Why a stream does not end as a broken upstream's must: its events so far, then one
    ``data: {"error": ...}`` event, then the chunked end (no ``[DONE]``)."""
    if not resp.complete or not resp.chunked:
        return "the stream does not end with the chunked end"
    events = resp.events()
    if not events or "[DONE]" in events:
        return f"the stream ends normally, no error event: {resp.body[-120:]!r}"
    try:
        error = json.loads(events[-1])["error"]
    except (ValueError, KeyError, TypeError):
        return f"the last event is not an error: {events[-1][:120]!r}"
    if error.get("code") != code:
        return f"the error event's code is {error.get('code')!r}, want {code!r}"
    if sum('"error"' in e for e in events) != 1:
        return "more than one error event"
    return None


def error_shape_problem(resp: Response, want: Want) -> str | None:
    """Why an error response is not OpenAI-shaped (or quotes the request), or None."""
    ctype = resp.header("content-type") or ""
    if not ctype.startswith("application/json"):
        return f"{resp.status} has Content-Type {ctype!r}, not JSON: {resp.body[:80]!r}"
    try:
        error = resp.json()["error"]
        missing = {"message", "type", "param", "code"} - set(error)
    except (ValueError, KeyError, TypeError):
        return f"{resp.status} body is not {{'error': {{...}}}}: {resp.body[:80]!r}"
    if missing:
        return f"error object lacks {sorted(missing)}"
    if want.code and error["code"] != want.code and resp.status == want.status:
        return f"error code {error['code']!r}, want {want.code!r}"
    if CANARY_HEAD.encode() in resp.body or CANARY_BODY.encode() in resp.body:
        return "the error body quotes the request"
    return None


def check(result: Result, want: Want, shape: str | None, *, strict: bool) -> list[str]:
    """Problems of ``result`` against ``want``; ``strict``: also the JSON shape and code."""
    problems: list[str] = []
    allowed = (want.status, *want.alt)
    finals = result.finals
    if want.partial:
        finals = [r for r in result.responses if r.status >= 200]
    if result.error:
        problems.append(f"unparsable response: {result.error}")
    if not finals:
        if not (None in allowed and result.closed):
            problems.append(f"want {want}; got {result.describe()}")
        return problems
    first = finals[0]
    if first.status not in allowed:
        problems.append(f"want {want}; got {result.describe()}")
        return problems
    if len(finals) > 1:
        problems.append(f"more than one response (desync): {result.describe()}")
    if want.interim and not any(r.status == want.interim for r in result.responses):
        problems.append(f"no {want.interim} interim response: {result.describe()}")
    if want.close and first.status == want.status and not first.closes:
        problems.append(f"{first.status} without Connection: close")
    if want.ends and not result.closed:
        problems.append(f"connection left open after {first.status}")
    if want.header and first.status == want.status:
        name, value = want.header
        if value not in (first.header(name) or ""):
            problems.append(f"{first.status} without {name}: {value}")
    if want.no_chunked and first.chunked:
        problems.append("chunked framing in a response to HTTP/1.0")
    if strict and first.status >= 400:
        problem = error_shape_problem(first, want)
        if problem:
            problems.append(problem)
    if want.sse_error:
        problem = sse_error_problem(first, want.sse_error)
        if problem:
            problems.append(problem)
    elif first.status == 200 and shape and not want.partial:
        problem = served_problem(first, shape)
        if problem:
            problems.append(problem)
    return problems


def perform(case: Case, ctx: Ctx, want: Want) -> Result:
    """Send a bytes case and read its answer; on a kept-alive answer, check that the
    connection's next request (``GET /health``) is answered next (no smuggled request)."""
    if not isinstance(case.send, bytes):
        return case.send(ctx)
    with ctx.conn() as conn:
        conn.send(case.send)
        ends = want.ends or want.status is None
        result = conn.read(case.deadline, until_close=ends)
        if not result.closed and result.finals and not result.finals[0].closes:
            conn.send(SENTINEL)
            after = conn.read(2.0, finals=2)
            if len(after.finals) < 2 or after.finals[1].status != 200:
                ctx.problems.append(f"the next request on the connection got: {after.describe()}")
            elif b'"ok"' not in after.finals[1].body:
                ctx.problems.append(
                    f"the next request got another answer: {after.finals[1].body!r}"
                )
            result.responses = result.responses[:1]
        return result


def keeps_serving(target: Target) -> str | None:
    """Another client's well-formed streaming request is served; else why not."""
    try:
        with RawConn(HOST, target.port) as conn:
            conn.send(post(chat(True), AUTH))
            result = conn.read(5.0)
    except OSError as exc:
        return f"another client cannot connect: {exc}"
    if not result.finals or result.finals[0].status != 200:
        return f"another client's stream got {result.describe()}"
    return served_problem(result.finals[0], "stream")


def run_case(case: Case, target: Target, upstream: Upstream | None, report: Any) -> None:
    """Run one case and its two after-checks; fail with every problem found."""
    want = case.expected()
    if want is None:
        import pytest

        pytest.skip(f"not applicable to {target.kind}")
    target.ensure()
    rss0, hwm0 = target.memory()
    ctx = Ctx(target, upstream)
    result = perform(case, ctx, want)
    problems = check(result, want, case.shape, strict=isinstance(target, Gateway))
    problems += ctx.problems
    serving = keeps_serving(target)
    if serving:
        problems.append(f"keeps serving: {serving}")
    rss1, hwm1 = target.memory()
    grew = max(rss1 - rss0, hwm1 - hwm0) / 1024
    if rss1 and grew > case.rss_mb:
        problems.append(f"memory grew {grew:.1f} MB (bound {case.rss_mb:g} MB)")
    report.add(case, want, result.describe(), problems, grew)
    assert not problems, "; ".join(problems)
