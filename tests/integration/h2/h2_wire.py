"""A raw HTTP/2 client for the hostile-input tests: writes whatever frames it is given (no
flow control, no checks), reads the server's frames in the background and tells what the
server answered: its GOAWAY code, the streams it reset, gRPC statuses, or that it dropped
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import hpack
from h2_service import PATH, Msg

from expert_router.h2 import frames as f
from expert_router.h2.grpc import message

UNARY, BIDI = (PATH + "Unary").encode(), (PATH + "Bidi").encode()


def request(path: bytes = UNARY) -> bytes:
    """A header block for a gRPC call on ``path`` (literals: no HPACK state)."""
    return f.header_block([(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                           (b":authority", b"hostile"), (b"content-type", b"application/grpc"),
                           (b"te", b"trailers")])  # fmt: skip


def call(sid: int, op: str = "echo", path: bytes = UNARY, end: bool = True) -> bytes:
    """HEADERS and one DATA frame with a request message for stream ``sid``."""
    body = message(Msg(op=op, n=sid).SerializeToString())
    return f.frame(f.HEADERS, f.END_HEADERS, sid, request(path)) + f.frame(
        f.DATA, f.END_STREAM if end else 0, sid, body
    )


@dataclass
class Answer:
    """What the server sent back so far."""

    goaway: int | None = None
    resets: dict[int, int] = field(default_factory=dict)
    statuses: dict[int, bytes] = field(default_factory=dict)  # grpc-status by stream
    updates: int = 0  # WINDOW_UPDATE frames
    dropped: bool = False  # the connection ended without (a readable) GOAWAY
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Raw:
    """One connection to the server that sends anything; ``listen`` reads its answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answer = Answer()
        self._task: asyncio.Task[None] | None = None
        self._decoder = hpack.Decoder()

    @classmethod
    async def connect(cls, port: int, preface: bytes | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        writer.write(f.PREFACE + f.settings([]) if preface is None else preface)
        return raw

    def listen(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False once the server has closed or reset the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.answer.dropped = True
            return False
        return self.answer.goaway is None

    async def until(self, check: object, within: float = 10.0) -> Answer:
        """Wait until ``check(answer)`` holds (or the connection ended)."""
        answer = self.answer
        async with asyncio.timeout(within):
            while not check(answer) and not answer.dropped:  # type: ignore[operator]
                answer.changed.clear()
                await answer.changed.wait()
        return answer

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def _read(self) -> None:
        buf, answer = b"", self.answer
        try:
            while chunk := await self.reader.read(1 << 16):
                buf += chunk
                while len(buf) >= 9:
                    hi, lo, kind, flags, sid = f.HEAD.unpack_from(buf)
                    end = 9 + (hi << 16 | lo)
                    if len(buf) < end:
                        break
                    self._frame(kind, sid, buf[9:end])
                    buf = buf[end:]
                answer.changed.set()
        except (ConnectionError, OSError):
            pass
        answer.dropped = answer.goaway is None
        answer.changed.set()

    def _frame(self, kind: int, sid: int, payload: bytes) -> None:
        answer = self.answer
        if kind == f.GOAWAY:
            answer.goaway = f.u32(payload, 4)
        elif kind == f.RST_STREAM:
            answer.resets.setdefault(sid, f.u32(payload))
        elif kind == f.WINDOW_UPDATE:
            answer.updates += 1
        elif kind == f.HEADERS:  # whole blocks: the server's are below its frame size
            for name, value in self._decoder.decode(payload, raw=True):
                if bytes(name) == b"grpc-status":
                    answer.statuses[sid] = bytes(value)
