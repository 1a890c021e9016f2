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
        self._loop = asyncio.new_event_loop()
        self._exit = contextlib.AsyncExitStack()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="expert-router-servers", daemon=True
        )
        self._thread.start()
        self.closed = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
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
        """Stop every server, then the loop and its thread (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._loop.is_running():
                self._call(self._exit.aclose(), timeout=STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

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
