"""What every connection of one HTTP/1.1 listening socket shares: the gateway, the limits,
the open connections (oldest first), the drain and the eviction of idle connections when
``server.max_connections`` and its probe reserve are full.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from expert_router.config import ServerConfig
from expert_router.errors import ExpertRouterError

if TYPE_CHECKING:
    from expert_router.gateway.app import Gateway
    from expert_router.gateway.http_ingress import HttpConnection


class HttpFrontend:
    """What every connection of one listening socket shares: the gateway, the limits, the
    open connections and whether the gateway is draining."""

    def __init__(self, gw: Gateway, limits: ServerConfig) -> None:
        self.gw = gw
        self.limits = limits
        self.conns: dict[HttpConnection, None] = {}  # oldest first
        self.draining = False
        self.quiet = asyncio.Event()  # set once draining and no connection is busy

    # -- a graceful stop -------------------------------------------------------------------
    def drain(self) -> asyncio.Event:
        """Wind down: every answer closes its connection, ``/ready`` answers 503, and idle
        connections close after ``DRAIN_IDLE`` seconds (a request already on its way on one
        is still served). The event is set once every connection is closed."""
        self.draining = True
        for conn in list(self.conns):
            conn.drain()
        self.check_quiet()
        return self.quiet

    def check_quiet(self) -> None:
        if self.draining and not self.conns:
            self.quiet.set()

    def stop(self, exc: ExpertRouterError) -> None:
        """End every answer still in progress with ``exc`` (an error event mid-stream)."""
        for conn in list(self.conns):
            conn.stop(exc)

    def evict(self) -> bool:
        """Close the oldest connection that is idle or still sending its head; False when
        every one is answering or reading a body."""
        for conn in self.conns:
            if conn.evictable():
                conn.closing = True
                conn.t.close()
                return True
        return False
