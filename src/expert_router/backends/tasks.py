"""The shim that gives coroutine-based adapters the callback contract of ``backends/base.py``.

An adapter whose client library is coroutine-based (aiohttp, the Triton adapters' text path)
writes ``async def start(req) -> UpstreamResponse``; ``TaskCall`` runs it in one task per
request and reports to the listener: the head, every read, the end or the error. Pausing is
a future the task waits on until ``resume``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

from expert_router.backends.base import Listener
from expert_router.errors import BackendError, BackendProtocolError

log = logging.getLogger("expert_router.backends")


class UpstreamResponse(Protocol):
    """A coroutine-based adapter's answer in progress (a success status)."""

    status: int
    content_type: str

    def readany(self) -> Awaitable[bytes]:
        """The next bytes as soon as some arrive, ``b""`` at the end; raises
        ``BackendError`` when the upstream fails."""
        ...

    def close(self) -> None:
        """Drop the upstream connection unless the answer was read to its end."""


class TaskCall:
    """One request of a coroutine-based adapter, reported to a listener from a task."""

    __slots__ = ("_listener", "_resumed", "_task")

    def __init__(self, start: Coroutine[Any, Any, UpstreamResponse], listener: Listener) -> None:
        self._listener: Listener | None = listener
        self._resumed: asyncio.Future[None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(start))

    async def _run(self, start: Coroutine[Any, Any, UpstreamResponse]) -> None:
        up: UpstreamResponse | None = None
        try:
            up = await start
            if self._listener is None:
                return
            self._listener.on_head(up.status, up.content_type)
            read = up.readany
            while chunk := await read():
                listener = self._listener
                if listener is None:
                    return
                if not listener.on_data(chunk):
                    self._resumed = asyncio.get_running_loop().create_future()
                    await self._resumed
            if self._listener is not None:
                self._listener.on_end()
        except BackendError as exc:
            self._fail(exc)
        except Exception as exc:  # a library's own error: still one on_error, never a crash
            log.debug("upstream adapter failed: %s", type(exc).__name__)
            self._fail(BackendProtocolError(f"upstream adapter failed: {type(exc).__name__}"))
        finally:
            if up is not None:
                up.close()

    def _fail(self, exc: BackendError) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.on_error(exc)

    def resume(self) -> None:
        fut, self._resumed = self._resumed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def cancel(self) -> None:
        self._listener = None
        self._task.cancel()
