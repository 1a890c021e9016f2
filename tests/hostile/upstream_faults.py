"""The faulty upstream's answers: one function per fault, chosen by name in ``FAULTS``.

Each gets the ``Exchange`` of one POST (its stream, whether the client asked for a stream, the
port, the ``Record`` of its request id) and answers it, well or badly; it returns whether the
connection may carry another request. ``fake_upstream.py`` serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

EVENTS = 4  # content events of a healthy stream, before ``data: [DONE]``
SMUGGLED = b'HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{"smuggled": true}\n'
MAX_CHUNK_TEST = 512 * 1024  # the oversized chunk (the gateway's limit in the tests: 256 KiB)
HOLD = 30.0  # seconds a fault keeps its connection open (until the peer closes) at most


@dataclass
class Record:
    """What happened to one request id."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0  # body bytes written by an endless fault
    peer_closed: int = 0  # connections of this id that the gateway closed
    junk_written: bool = False  # ``idle_bytes``: the bytes went out on the idle connection


@dataclass
class Exchange:
    """One POST being answered: its stream, shape and the id it carries."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    port: int
    path: str
    stream: bool
    record: Record
    released: asyncio.Event
    """Set by ``GET /release?rid=``: the client has the whole answer (``idle_bytes``)."""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def hold(self) -> None:
        """Keep the connection open, reading and dropping, until the peer closes it."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(HOLD):
                while await self.reader.read(65536):
                    pass
        self.record.peer_closed += 1

    # -- answers ---------------------------------------------------------------------------
    def events(self) -> list[bytes]:
        """The SSE events of a healthy stream, ``data: [DONE]`` last."""
        out = []
        for i in range(EVENTS):
            text = f"port:{self.port} " if i == 0 else f"tok{i} "
            out.append(b"data: " + json.dumps(self._chunk(text)).encode() + b"\n\n")
        return [*out, b"data: [DONE]\n\n"]

    def _chunk(self, text: str) -> dict[str, Any]:
        if self.path.endswith("/completions") and "chat" not in self.path:
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": None}
            return {"id": "cmpl-fake", "object": "text_completion", "choices": [choice]}
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [choice]}

    def json_body(self) -> bytes:
        text = f"port:{self.port} " + "".join(f"tok{i} " for i in range(1, EVENTS))
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        usage = {"prompt_tokens": 3, "completion_tokens": EVENTS, "total_tokens": 3 + EVENTS}
        body = {"id": "chatcmpl-fake", "object": "chat.completion", "choices": [choice]}
        return json.dumps({**body, "usage": usage}).encode()

    def head(self, status: int = 200, *, length: int | None = None, extra: bytes = b"") -> bytes:
        ctype = b"text/event-stream" if self.stream else b"application/json"
        framing = (
            b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
        )
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s\r\n\r\n" % (
            status,
            b"OK" if status == 200 else b"Error",
            ctype,
            extra,
            framing,
        )

    def body_parts(self) -> list[bytes]:
        """The healthy body in the pieces it is chunked into (events, or two JSON halves)."""
        if self.stream:
            return self.events()
        body = self.json_body()
        return [body[: len(body) // 2], body[len(body) // 2 :]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST = b"0\r\n\r\n"


# -- faults: each answers one request; True = the connection may serve another ---------------
async def healthy(ex: Exchange) -> bool:
    await ex.send(ex.head() + b"".join(chunk(p) for p in ex.body_parts()) + LAST)
    return True


def bad_size(size: bytes, *, early: bool = False) -> Callable[[Exchange], Awaitable[bool]]:
    """A chunk whose size line is ``size``: first (``early``) or after the first piece."""

    async def fault(ex: Exchange) -> bool:
        parts = ex.body_parts()
        lead = b"" if early else chunk(parts[0])
        rest = b"".join(parts if early else parts[1:])
        await ex.send(ex.head() + lead)
        await ex.send(size + b"\r\n" + rest + b"\r\n" + LAST)
        await ex.hold()
        return False

    return fault


async def chunk_ext(ex: Exchange, ext: bytes) -> bool:
    out = b"".join(b"%x%b\r\n%b\r\n" % (len(p), ext, p) for p in ex.body_parts())
    await ex.send(ex.head() + out + LAST)
    return True


async def chunk_big(ex: Exchange) -> bool:
    """A legal chunk larger than the gateway's ``limits.max_chunk_bytes``."""
    parts = ex.body_parts()
    if ex.stream:
        pad = "x" * MAX_CHUNK_TEST
        big = b"data: " + json.dumps(ex._chunk(pad)).encode() + b"\n\n"
    else:
        big = parts[1] + b" " * MAX_CHUNK_TEST
    await ex.send(ex.head() + chunk(parts[0]) + chunk(big) + LAST)
    await ex.hold()
    return False


async def endless(ex: Exchange, *, chunked: bool) -> bool:
    """A body that never ends (chunked, or with a Content-Length of a terabyte): well-formed
    events for a stream, JSON-ish filler otherwise."""
    head = ex.head() if chunked else ex.head(length=10**12)
    if ex.stream:
        piece = b"data: " + json.dumps(ex._chunk("x" * 65000)).encode() + b"\n\n"
    else:
        piece = b"[" + b" " * 65534 + b"]"
    first = ex.body_parts()[0]
    with contextlib.suppress(ConnectionError):
        await ex.send(head + (chunk(first) if chunked else first))
        data = chunk(piece) if chunked else piece
        while True:
            await ex.send(data)
            ex.record.written += len(piece)
    ex.record.peer_closed += 1
    return False


async def close_after_head(ex: Exchange) -> bool:
    await ex.send(ex.head())
    return False


async def close_mid_body(ex: Exchange, *, after_first: bool) -> bool:
    """Close inside the first piece (nothing whole sent) or right after the first piece."""
    first = ex.body_parts()[0]
    if ex.stream:
        sent = chunk(first) if after_first else chunk(first)[: len(first) // 2]
        await ex.send(ex.head() + sent)
    else:
        body = ex.json_body()
        cut = len(body) // 2 if after_first else 3
        await ex.send(ex.head(length=len(body)) + body[:cut])
    return False


async def status_garbage(ex: Exchange) -> bool:
    await ex.send(b"HTTX/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
    return False


async def huge_header(ex: Exchange) -> bool:
    extra = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    await ex.send(ex.head(extra=extra) + b"".join(chunk(p) for p in ex.body_parts()) + LAST)
    return True


async def cl_short(ex: Exchange) -> bool:
    """A whole answer with its Content-Length, then the bytes of a second, unasked answer."""
    body = b"".join(ex.body_parts())
    await ex.send(ex.head(length=len(body)) + body + SMUGGLED)
    return True


def error_status(status: int) -> Callable[[Exchange], Awaitable[bool]]:
    async def fault(ex: Exchange) -> bool:
        error = {
            "message": f"fake upstream refuses with {status}",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": f"fake_{status}",
        }
        body = json.dumps({"error": error}).encode()
        head = b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        await ex.send(head % (status, len(body)) + body)
        return True

    return fault


async def idle_bytes(ex: Exchange) -> bool:
    """A healthy answer; once the client has it, bytes on the connection, now idle in the
    gateway's pool (the gateway pools a connection before it relays the answer's end, so the
    test's ``release`` after reading the answer means idle; never released: nothing sent)."""
    await healthy(ex)
    try:
        async with asyncio.timeout(HOLD):
            await ex.released.wait()
    except TimeoutError:
        return False
    await ex.send(SMUGGLED)
    ex.record.junk_written = True
    return True


async def big(ex: Exchange) -> bool:
    """A healthy answer of about 512 KiB (32 events of 16 KiB, or one JSON body)."""
    pad = "x" * 16384
    if ex.stream:
        parts = [b"data: " + json.dumps(ex._chunk(pad)).encode() + b"\n\n" for _ in range(32)]
        parts = [*ex.events()[:-1], *parts, ex.events()[-1]]
        await ex.send(ex.head() + b"".join(chunk(p) for p in parts) + LAST)
    else:
        body = ex.json_body().replace(b"tok1 ", b"tok1 " + pad.encode() * 32)
        await ex.send(ex.head(length=len(body)) + body)
    return True


async def interim(ex: Exchange) -> bool:
    """Two informational answers (103 Early Hints, 100 Continue) before the real one, each in
    its own write: a client must parse and skip them (RFC 9110, 15.2)."""
    await ex.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    await ex.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    return await healthy(ex)


async def silent(ex: Exchange) -> bool:
    await ex.hold()
    return False


FAULTS: dict[str, Callable[[Exchange], Awaitable[bool]]] = {
    "none": healthy,
    "neg6": bad_size(b"-6"),
    "neg6_early": bad_size(b"-6", early=True),
    "hex0x": bad_size(b"0x91"),
    "plus5": bad_size(b"+5"),
    "underscore": bad_size(b"1_0"),
    "hex20": bad_size(b"1" + b"0" * 19),
    "ext_small": lambda ex: chunk_ext(ex, b";name=value"),
    "ext_huge": lambda ex: chunk_ext(ex, b"".join(b";x%d=1" % i for i in range(12_000))),
    "chunk_big": chunk_big,
    "endless_chunked": lambda ex: endless(ex, chunked=True),
    "endless_length": lambda ex: endless(ex, chunked=False),
    "close_after_head": close_after_head,
    "close_in_first": lambda ex: close_mid_body(ex, after_first=False),
    "close_after_first": lambda ex: close_mid_body(ex, after_first=True),
    "status_garbage": status_garbage,
    "huge_header": huge_header,
    "cl_short": cl_short,
    "status_400": error_status(400),
    "status_422": error_status(422),
    "status_500": error_status(500),
    "status_503": error_status(503),
    "idle_bytes": idle_bytes,
    "silent": silent,
    "interim": interim,
    "big": big,
}
