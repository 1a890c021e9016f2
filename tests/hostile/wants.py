"""What a hostile case expects (``Want``) and the checks of an answer against it.

A ``Want`` is a status (or a silent close), whether the connection must end, the OpenAI error
code, and for streams an SSE error event; ``check`` lists every way a ``Result`` misses it,
including error bodies that are not OpenAI-shaped JSON or that quote the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rawhttp import Response, Result

CANARY_HEAD = "CANARY-HEAD-h7Q2"  # in every case's head: never to be quoted back
CANARY_BODY = "CANARY-BODY-b8W3"  # in every case's prompt


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
    """An error answer. By default it says ``Connection: close`` and the connection ends (after
    a framing or size error the request's end is unknown); ``close=False``: kept alive or not."""
    return Want(status, close=close, ends=close and ends, code=code)


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
