"""The two servers the HTTP/2 transport tests run: the lean ``GrpcServer`` and grpc.aio's own
(a module of its own, so tests import it by a name no other test folder uses)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from h2_service import AIO_OPTIONS, Echo, aio_handler

from expert_router.h2.server import GrpcServer


@dataclass
class Lean:
    server: GrpcServer
    servicer: Echo

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@dataclass
class Aio:
    server: grpc.aio.Server
    servicer: Echo
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_aio(servicer: Echo, port: int = 0, options: Sequence[tuple[str, Any]] = ()) -> Aio:
    server = grpc.aio.server(options=[*AIO_OPTIONS, *options])
    server.add_generic_rpc_handlers((aio_handler(servicer),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return Aio(server, servicer, bound)
