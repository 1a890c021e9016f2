"""Graceful shutdown of one emulated expert: refuse new work, let requests in flight finish
up to a deadline, then end the rest with an error (an SSE error event, a 503, or gRPC
UNAVAILABLE: each face turns ``Drained`` into its own form).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from expert_router.emulator.live import StreamSink
from expert_router.wire.sse import DONE, encode_event

REFUSED = "the server is shutting down and takes no new requests"
CUT = "the server shut down before the answer was complete (drain timeout)"


class Drained(Exception):
    """A request refused by a draining server, or cut once the drain deadline has passed (not
    a ``RequestError``: the request was valid, the server is going away; the gateway's own
    ``errors.ShuttingDown`` is a different thing, its answer to its clients)."""


def error_body(message: str) -> dict[str, Any]:
    """The OpenAI-shaped error of a request refused or cut by the shutdown."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": 503}}


def error_event(message: str = CUT) -> bytes:
    """The SSE events that end a stream cut by the shutdown: the error, then ``[DONE]``."""
    return encode_event(error_body(message)) + DONE


class Drain:
    """The shutdown state of one server and the requests it has in flight.

    ``begin`` flips readiness and refuses new work; ``wait_idle`` returns when nothing is in
    flight (or its limit passed); ``expire`` wakes every request still running so that its loop
    sees ``expired`` and ends it with an error.
    """

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._sinks: set[StreamSink] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._sinks)

    @contextlib.contextmanager
    def track(self, sink: StreamSink) -> Iterator[None]:
        """Count ``sink``'s request as in flight for the duration of the block."""
        self._sinks.add(sink)
        self._idle.clear()
        try:
            yield
        finally:
            self._sinks.discard(sink)
            if not self._sinks:
                self._idle.set()

    def check(self) -> None:
        """Raise ``Drained`` once the deadline has passed."""
        if self.expired:
            raise Drained(CUT)

    async def next(self, sink: StreamSink) -> None:
        """``sink.wait()`` (a token to send, or the answer is over) that raises
        ``Drained`` instead once the deadline has passed."""
        self.check()
        await sink.wait()
        self.check()

    def begin(self) -> None:
        """Readiness turns 503 and new requests are refused from now on."""
        self.draining = True

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until nothing is in flight, at most ``limit_s``; True when that happened."""
        try:
            async with asyncio.timeout(limit_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    def expire(self) -> int:
        """End every request still in flight (each writes its error); returns how many."""
        self.draining = self.expired = True
        for sink in list(self._sinks):
            sink.wake()
        return len(self._sinks)
