"""Servers for a study: emulated fleets and gateways in one background event loop.

``ServerStack`` owns a thread running one asyncio loop; ``fleet``/``gateway`` start servers in
it and return their URLs. ``close`` (or leaving the ``with`` block, also on Ctrl-C or an
error) stops every server it started and joins the thread, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from expert_router.emulator.presets import Preset

T = TypeVar("T")

STOP_TIMEOUT_S = 15.0


class ServerStack:
    """Servers in a background event loop; use as a context manager."""

    def __init__(self) -> None:
        self._exit = contextlib.AsyncExitStack()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="expert-router-servers", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(STOP_TIMEOUT_S):
            raise RuntimeError("the server loop did not start")
        self.closed = False

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._exit.aclose()
            await asyncio.sleep(0.05)  # let closed connections' transports finish closing

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def fleet(
        self, presets: Sequence[str | Preset], *, model_names: Sequence[str] | None = None
    ) -> list[str]:
        """Start one emulated expert per preset on free loopback ports; returns their URLs."""
        from expert_router.emulator import serve_fleet

        async def start() -> list[str]:
            fleet = await self._exit.enter_async_context(
                serve_fleet(list(presets), host="127.0.0.1", model_names=model_names)
            )
            return fleet.urls

        return self._call(start())

    def gateway(self, experts: dict[str, list[str]], *, model: str | None = None) -> str:
        """Start a gateway (bundled classifier unless ``model``) routing cluster -> URLs."""
        from expert_router.config import gateway_config_from_experts
        from expert_router.gateway import serve_gateway

        config = gateway_config_from_experts(experts, model=model)

        async def start() -> str:
            gw = await self._exit.enter_async_context(
                serve_gateway(config, host="127.0.0.1", port=0)
            )
            return gw.url

        return self._call(start())

    def close(self) -> None:
        """Stop every server (in reverse order of start), then the loop and its thread."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        """Whether the server thread still runs."""
        return self._thread.is_alive()

    def __enter__(self) -> ServerStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def per_cluster(urls: Sequence[str]) -> dict[str, list[str]]:
    """One expert per cluster: ``{"0": [urls[0]], "1": [urls[1]], ...}``."""
    return {str(i): [url] for i, url in enumerate(urls)}
