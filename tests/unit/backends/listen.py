"""A ``Listener`` that records what a backend reports, for the backend tests."""

from __future__ import annotations

import asyncio

from expert_router.backends import Backend, BackendRequest, UpstreamCall
from expert_router.errors import BackendError


class Recorder:
    """Records one request's head, data, end or error; ``await outcome()`` waits for the end.

    ``refuse`` makes ``on_data`` ask for a pause (the backend must stop reading)."""

    def __init__(self, refuse: bool = False) -> None:
        self.status = 0
        self.content_type = ""
        self.chunks: list[bytes] = []
        self.error: BackendError | None = None
        self.ended = False
        self.last = b""  # what on_end carried
        self.refuse = refuse
        self.calls = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.got_data = asyncio.Event()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def on_head(self, status: int, content_type: str) -> None:
        assert not self.done.done(), "on_head after the end"
        self.calls += 1
        self.status, self.content_type = status, content_type

    def on_data(self, data: bytes) -> bool:
        assert not self.done.done(), "on_data after the end"
        self.chunks.append(data)
        self.got_data.set()
        return not self.refuse

    def on_end(self, last: bytes = b"") -> None:
        assert not self.done.done(), "two ends"
        self.last = last
        if last:
            self.chunks.append(last)
            self.got_data.set()
        self.ended = True
        self.done.set_result(None)

    def on_error(self, exc: BackendError) -> None:
        assert not self.done.done(), "two ends"
        self.error = exc
        self.done.set_result(None)

    async def outcome(self) -> Recorder:
        async with asyncio.timeout(5.0):
            await asyncio.shield(self.done)
        return self


async def fetch(b: Backend, req: BackendRequest) -> tuple[Recorder, UpstreamCall]:
    """Open ``req`` on ``b`` and wait (5 s at most) for its end; the recorder and the call."""
    rec = Recorder()
    call = b.open(req, rec)
    assert not rec.done.done() and rec.calls == 0, "a backend reported before open returned"
    await rec.outcome()
    return rec, call
