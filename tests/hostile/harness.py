"""The hostile suite's cases, the requests they are built from, and how one is run.

A ``Case`` is bytes to send (or a function driving a connection), the answer wanted from the
gateway (``wants.Want``), the reference it follows (RFC section or ``nginx``) and nginx 1.22's
own answer, as measured with ``HOSTILE_TARGET=nginx``. ``run_case`` sends it, checks the
answer, then checks that another client's streaming request is still served and that the
server's memory grew less than the case's bound; every problem found is reported at once.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from rawhttp import RawConn, Result
from targets import HOST, Gateway, Target, Upstream
from wants import CANARY_BODY, CANARY_HEAD, Want, check, served_problem

CHAT = b"/v1/chat/completions"
VALID_KEY = "sk-SECRET-VALID-KEY-51e0"  # the key of gateways with ``api_keys`` (never logged)
AUTH = b"Authorization: Bearer " + VALID_KEY.encode()
SENTINEL = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
SAME = Want(-1)  # ``Case.nginx``: nginx 1.22 gives the answer the gateway must give


def nginx_mode() -> bool:
    return os.environ.get("HOSTILE_TARGET", "gateway") == "nginx"


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
    """One row of a table: what is sent, what must come back, and why."""

    id: str
    send: bytes | Script
    want: Want
    ref: str  # e.g. "rfc9112-6.3", "nginx", "config"
    nginx: Want | None = SAME  # nginx 1.22's answer (SAME: the wanted one); None: not applicable
    shape: str | None = None  # "stream" / "plain": what a 200 must carry
    deadline: float = 1.5  # seconds to wait for the answer
    rss_mb: float = 16.0  # memory growth allowed (VmRSS and VmHWM)
    note: str = ""

    def expected(self) -> Want | None:
        if not nginx_mode():
            return self.want
        return self.want if self.nginx is SAME else self.nginx


def shaped(cases: list[Case], shape: str) -> list[Case]:
    """The cases sent with one kind of body (``stream`` or ``plain``): the id says which, and
    a 200 must carry that kind of answer."""
    return [replace(c, id=f"{c.id}-{shape}", shape=shape) for c in cases]


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


# -- running a case -------------------------------------------------------------------------
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
            result.responses = result.responses[:1]  # the case's answer, as checked
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


class Report:
    """Every case's expected and actual answer, for the failing-cases table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, float]] = []

    def add(self, case: Case, want: Want, got: str, problems: list[str], grew: float) -> None:
        verdict = "; ".join(problems) if problems else "ok"
        self.rows.append((case.id, str(want), got, verdict, grew))

    def write(self, path: Path) -> None:
        lines = ["| case | want | got | problems | memory MB |", "|---|---|---|---|---|"]
        for case_id, want, got, verdict, grew in self.rows:
            cells = [case_id, want, got, verdict.replace("|", "/"), f"{grew:+.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        path.write_text("\n".join(lines) + "\n")


def run_case(case: Case, target: Target, upstream: Upstream | None, report: Report) -> None:
    """Run one case and its two after-checks; fail with every problem found."""
    want = case.expected()
    if want is None:
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
