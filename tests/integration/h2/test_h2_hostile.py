"""Hostile HTTP/2 clients against the lean gRPC server, one table row each: the answer RFC 9113
(or nginx, where the RFC leaves it open) gives, read back from the wire; another client served
while the attack runs; and the server's peak memory (its process's high-water RSS, reset before
each row) growing by less than ``MEMORY_BOUND``.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from h2_service import Msg
from h2_wire import BIDI, UNARY, Answer, Raw, call, request

from expert_router.h2 import frames as f
from expert_router.h2.client import GrpcChannel
from expert_router.h2.grpc import message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The connection window (16 MiB) plus the cap on messages still arriving (16 MiB): what one
# connection may make the server hold, doubled for the allocator's slack.
MEMORY_BOUND = 64 << 20
HERE = Path(__file__).parent


def _socket_buffers() -> int:
    """The most two loopback sockets may hold between the ends: the sender's and the
    receiver's largest buffers, which Linux autotunes up to. A flood writes this much beyond
    what the server took when the server (another process, on a busy machine) reads late."""
    try:
        return sum(
            int(Path(f"/proc/sys/net/ipv4/tcp_{side}").read_text().split()[2])
            for side in ("wmem", "rmem")
        )
    except (OSError, ValueError, IndexError):
        return 8 << 20


IN_FLIGHT = _socket_buffers()
"""Added to what a case lets the server take, to bound what its flood may write; the flood
goes on to twice that bound, so a flood that stays under it was cut off by the server."""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    def rss(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field}")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc to measure the server's memory")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "h2_hostile_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        assert proc.stdout is not None
        yield Server(proc, int(proc.stdout.readline()))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


Attack = Callable[[int], Awaitable[tuple[Raw, Answer]]]


@dataclass(frozen=True)
class Case:
    name: str
    attack: Attack
    expect: str  # the answer, in words


async def _one(port: int, data: bytes, check: Callable[[Answer], object]) -> tuple[Raw, Answer]:
    """Open a connection, send ``data``, wait until ``check`` holds for the answer."""
    raw = await Raw.connect(port)
    raw.listen()
    await raw.send(data)
    return raw, await raw.until(check)


def goaway(code: int, *frames: bytes) -> Attack:
    """An attack that sends ``frames`` and expects GOAWAY ``code``."""

    async def attack(port: int) -> tuple[Raw, Answer]:
        raw, answer = await _one(port, b"".join(frames), lambda a: a.goaway is not None)
        assert answer.goaway == code, answer
        return raw, answer

    return attack


def reset(sid: int, code: int, *frames: bytes) -> Attack:
    """An attack that sends ``frames`` and expects RST_STREAM ``code`` on ``sid`` only."""

    async def attack(port: int) -> tuple[Raw, Answer]:
        raw, answer = await _one(port, b"".join(frames), lambda a: sid in a.resets)
        assert answer.resets == {sid: code} and answer.goaway is None, answer
        return raw, answer

    return attack


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


async def flood(raw: Raw, piece: bytes, limit: int) -> int:
    """Send ``piece`` again and again until the server ends the connection (or ``limit``
    bytes went); the bytes sent."""
    sent = 0
    while sent < limit and await raw.send(piece):
        sent += len(piece)
        await asyncio.sleep(0)  # let the reader see a GOAWAY
    return sent


async def continuation_flood(port: int) -> tuple[Raw, Answer]:
    raw = await Raw.connect(port)
    raw.listen()
    await raw.send(f.frame(f.HEADERS, 0, 1, request()))
    fragment = f.header_block([(b"x-flood", b"v" * 16_000)])
    bound = (1 << 20) + IN_FLIGHT  # a header list's limit is far below 1 MiB
    sent = await flood(raw, f.frame(f.CONTINUATION, 0, 1, fragment), 2 * bound)
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.ENHANCE_YOUR_CALM and sent < bound, (answer, sent)
    return raw, answer


async def empty_continuations(port: int) -> tuple[Raw, Answer]:
    raw = await Raw.connect(port)
    raw.listen()
    await raw.send(f.frame(f.HEADERS, 0, 1, request()))
    await flood(raw, f.frame(f.CONTINUATION, 0, 1, b"") * 100, 1 << 20)
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.ENHANCE_YOUR_CALM, answer
    return raw, answer


async def held(port: int) -> int:
    """How many "hold" calls the server's servicer has started."""
    channel = GrpcChannel(f"127.0.0.1:{port}")
    try:
        return int((await channel.unary(UNARY, Msg(op="held"), Msg, deadline=5)).n)
    finally:
        await channel.close()


async def many_streams(port: int) -> tuple[Raw, Answer]:
    before = await held(port)
    raw = await Raw.connect(port)
    raw.listen()
    for first in range(1, 20_000, 200):  # 10,000 calls, 100 at a time
        if not await raw.send(b"".join(call(sid, "hold") for sid in range(first, first + 200, 2))):
            break
        await asyncio.sleep(0)
    answer = await raw.until(lambda a: 19_999 in a.resets)
    assert answer.goaway is None, answer
    assert sorted(answer.resets) == list(range(201, 20_000, 2))  # all but the first 100
    assert set(answer.resets.values()) == {f.REFUSED_STREAM}
    assert await held(port) - before == 100  # no servicer ran for a refused stream
    return raw, answer


async def window_parking(port: int) -> tuple[Raw, Answer]:
    raw = await Raw.connect(port)
    raw.listen()
    sids = range(1, 13, 2)  # six calls whose servicer reads one message, then sleeps
    await raw.send(b"".join(call(sid, "sleep", BIDI, end=False) for sid in sids))
    parked = message(b"p" * (16_384 - 5))  # whole messages the servicers never read
    chunk = b"".join(f.frame(f.DATA, 0, sid, parked) for sid in sids)
    bound = (16 << 20) + len(chunk) + IN_FLIGHT  # the connection window, the chunk past it
    sent = await flood(raw, chunk, 2 * bound)  # windows ignored
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.FLOW_CONTROL_ERROR and sent < bound, (answer, sent)
    return raw, answer


async def unread_flood(port: int, frame: bytes) -> tuple[Raw, Answer]:
    """``frame`` again and again, never reading the acknowledgements."""
    raw = await Raw.connect(port)
    bound = (8 << 20) + IN_FLIGHT  # read until the acknowledgements filled the server's buffers
    sent = await flood(raw, frame * 10_000, 2 * bound)
    assert raw.answer.dropped and sent < bound, sent
    return raw, raw.answer


async def rapid_reset(port: int) -> tuple[Raw, Answer]:
    raw = await Raw.connect(port)
    raw.listen()
    pairs = b"".join(f.frame(f.HEADERS, f.END_HEADERS, sid, request())
                     + f.rst_stream(sid, f.CANCEL) for sid in range(1, 40_000, 2))  # fmt: skip
    for i in range(0, len(pairs), 50_000):
        if not await raw.send(pairs[i : i + 50_000]):
            break
        await asyncio.sleep(0)
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.ENHANCE_YOUR_CALM, answer
    return raw, answer


async def oversized_message(port: int) -> tuple[Raw, Answer]:
    head = b"\x00" + (5 << 20).to_bytes(4, "big")  # 5 MiB declared, 4 MiB allowed
    data = f.frame(f.HEADERS, f.END_HEADERS, 1, request()) + f.frame(f.DATA, 0, 1, head)
    raw, answer = await _one(port, data, lambda a: 1 in a.statuses)
    assert answer.statuses[1] == b"8" and answer.goaway is None, answer  # RESOURCE_EXHAUSTED
    await raw.send(call(3))  # the connection still serves
    answer = await raw.until(lambda a: 3 in a.statuses)
    assert answer.statuses[3] == b"0", answer
    return raw, answer


def status_of_call(status: bytes, body: bytes, path: bytes = BIDI) -> Attack:
    """A call whose one DATA frame (END_STREAM) carries ``body``: the call ends with
    grpc-status ``status``, the connection serves on (as grpc's servers answer)."""

    async def attack(port: int) -> tuple[Raw, Answer]:
        data = f.frame(f.HEADERS, f.END_HEADERS, 1, request(path)) + f.frame(
            f.DATA, f.END_STREAM, 1, body
        )
        raw, answer = await _one(port, data, lambda a: 1 in a.statuses)
        assert answer.statuses[1] == status and answer.goaway is None, answer
        await raw.send(call(3))  # the connection still serves
        answer = await raw.until(lambda a: 3 in a.statuses)
        assert answer.statuses[3] == b"0", answer
        return raw, answer

    return attack


async def assembling(port: int) -> tuple[Raw, Answer]:
    """Five calls each sending all but the end of a 4 MiB message: 20 MiB still arriving."""
    raw = await Raw.connect(port)
    raw.listen()
    size = 4 << 20  # the largest message allowed
    for sid in range(1, 11, 2):
        await raw.send(f.frame(f.HEADERS, f.END_HEADERS, sid, request()))
        body = b"\x00" + size.to_bytes(4, "big") + b"a" * (size - 16_384 * 4)
        for i in range(0, len(body), 16_384):
            await raw.send(f.frame(f.DATA, 0, sid, body[i : i + 16_384]))
    answer = await raw.until(lambda a: a.statuses)
    assert list(answer.statuses.values()) == [b"8"] and answer.goaway is None, answer
    return raw, answer


def _opened(sid: int, op: str = "hold") -> bytes:
    return call(sid, op)


async def data_on_closed(port: int) -> tuple[Raw, Answer]:
    raw, _ = await _one(port, call(1), lambda a: 1 in a.statuses)  # a whole call, both ends
    await raw.send(f.frame(f.DATA, 0, 1, b"late"))
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.STREAM_CLOSED, answer
    return raw, answer


S = f.settings
CASES = [
    Case("continuation-flood", continuation_flood, "GOAWAY ENHANCE_YOUR_CALM past 64 KiB"),
    Case("empty-continuations", empty_continuations, "GOAWAY ENHANCE_YOUR_CALM past 64 frames"),
    Case(
        "oversized-frame",
        goaway(f.FRAME_SIZE_ERROR, _opened(1), f.HEAD.pack(16, 0, 0, 0, 1)),
        "GOAWAY FRAME_SIZE_ERROR from the head",
    ),
    Case("10000-streams", many_streams, "RST_STREAM REFUSED_STREAM past 100"),
    Case("window-parking", window_parking, "GOAWAY FLOW_CONTROL_ERROR past the windows"),
    Case(
        "ping-flood-unread",
        lambda p: unread_flood(p, f.frame(f.PING, 0, 0, b"12345678")),
        "connection dropped after 1,000 unsent acknowledgements",
    ),
    Case(
        "settings-flood-unread",
        lambda p: unread_flood(p, S([(f.ENABLE_PUSH, 0)])),
        "connection dropped after 1,000 unsent acknowledgements",
    ),
    Case("rapid-reset", rapid_reset, "GOAWAY ENHANCE_YOUR_CALM"),
    Case(
        "window-update-0-connection",
        goaway(f.PROTOCOL_ERROR, f.window_update(0, 0)),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "window-update-0-stream",
        reset(1, f.PROTOCOL_ERROR, _opened(1), f.window_update(1, 0)),
        "RST_STREAM PROTOCOL_ERROR",
    ),
    Case(
        "window-update-overflow-connection",
        goaway(f.FLOW_CONTROL_ERROR, f.window_update(0, 2**31 - 1)),
        "GOAWAY FLOW_CONTROL_ERROR",
    ),
    Case(
        "window-update-overflow-stream",
        reset(1, f.FLOW_CONTROL_ERROR, _opened(1), f.window_update(1, 2**31 - 1)),
        "RST_STREAM FLOW_CONTROL_ERROR",
    ),
    Case(
        "settings-length",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.SETTINGS, 0, 0, b"\0" * 7)),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "settings-ack-payload",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.SETTINGS, f.ACK, 0, S([])[9:] + b"\0" * 6)),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "settings-enable-push-2",
        goaway(f.PROTOCOL_ERROR, S([(f.ENABLE_PUSH, 2)])),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "settings-window-2^31",
        goaway(f.FLOW_CONTROL_ERROR, S([(f.INITIAL_WINDOW_SIZE, 2**31)])),
        "GOAWAY FLOW_CONTROL_ERROR",
    ),
    Case(
        "settings-frame-size-100",
        goaway(f.PROTOCOL_ERROR, S([(f.MAX_FRAME_SIZE, 100)])),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "ping-length",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.PING, 0, 0, b"1234567")),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "data-stream-0",
        goaway(f.PROTOCOL_ERROR, f.frame(f.DATA, 0, 0, b"x")),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case("data-closed-stream", data_on_closed, "GOAWAY STREAM_CLOSED"),
    Case(
        "data-half-closed-stream",
        reset(1, f.STREAM_CLOSED, _opened(1), f.frame(f.DATA, 0, 1, b"x")),
        "RST_STREAM STREAM_CLOSED",
    ),
    Case(
        "headers-half-closed-stream",
        reset(1, f.STREAM_CLOSED, _opened(1), f.frame(f.HEADERS, 5, 1, request())),
        "RST_STREAM STREAM_CLOSED",
    ),
    Case(
        "trailers-without-end-stream",
        reset(1, f.PROTOCOL_ERROR, call(1, "hold", end=False), f.frame(f.HEADERS, 4, 1, request())),
        "RST_STREAM PROTOCOL_ERROR",
    ),
    Case(
        "data-idle-stream",
        goaway(f.PROTOCOL_ERROR, f.frame(f.DATA, 0, 5, b"x")),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "stream-ids-backwards",
        goaway(f.PROTOCOL_ERROR, _opened(5), _opened(3)),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "short-rst-stream",
        goaway(f.FRAME_SIZE_ERROR, _opened(1), f.frame(f.RST_STREAM, 0, 1, b"\0\0")),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "short-window-update",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.WINDOW_UPDATE, 0, 0, b"\0" * 3)),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "short-goaway",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.GOAWAY, 0, 0, b"\0" * 4)),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "short-priority",
        goaway(f.FRAME_SIZE_ERROR, f.frame(f.PRIORITY, 0, 1, b"\0" * 3)),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case(
        "padding-past-the-frame",
        goaway(f.PROTOCOL_ERROR, _opened(1), f.frame(f.DATA, f.PADDED, 1, b"\x09abc")),
        "GOAWAY PROTOCOL_ERROR",
    ),
    Case(
        "garbage-after-preface",
        goaway(f.FRAME_SIZE_ERROR, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "GOAWAY FRAME_SIZE_ERROR",
    ),
    Case("oversized-grpc-message", oversized_message, "grpc-status RESOURCE_EXHAUSTED"),
    Case("messages-assembling", assembling, "grpc-status RESOURCE_EXHAUSTED on one call"),
    Case(
        "message-cut-by-end-stream",
        status_of_call(b"13", message(b"\x08\x01\x10\x02")[:7]),
        "grpc-status INTERNAL (grpc: end-of-stream mid-frame)",
    ),
    Case("message-prefix-alone", status_of_call(b"13", b"\x00\x00\x00"), "grpc-status INTERNAL"),
    Case(
        "message-not-protobuf",
        status_of_call(b"13", message(b"\xff\xff\xff\xff")),
        "grpc-status INTERNAL (grpc: Exception deserializing request)",
    ),
]


async def bystander(port: int) -> None:
    """Another client's call, made while the attack runs."""
    channel = GrpcChannel(f"127.0.0.1:{port}")
    try:
        assert (await channel.unary(UNARY, Msg(n=7), Msg, deadline=10)).n == 7
    finally:
        await channel.close()


@pytest.fixture
async def port(server: Server) -> AsyncIterator[int]:
    server.reset_peak()
    base = server.rss()
    yield server.port
    assert server.proc.poll() is None, "the server died"
    grown = server.rss("VmHWM") - base
    assert grown < MEMORY_BOUND, f"peak memory grew by {grown >> 20} MiB"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_client(case: Case, port: int) -> None:
    async with asyncio.timeout(60):
        (raw, _), _ = await asyncio.gather(case.attack(port), bystander(port))
        await raw.close()
        await bystander(port)  # and after it


async def test_not_http2_at_all(port: int) -> None:
    raw = await Raw.connect(port, preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw.listen()
    answer = await raw.until(lambda a: a.goaway is not None)
    assert answer.goaway == f.PROTOCOL_ERROR
    await raw.close()
