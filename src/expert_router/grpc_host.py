"""A grpc.aio server in the running event loop hosting one GRPCInferenceService servicer.

Shared by the emulator's Triton face and the gateway's gRPC ingress: listen, start, stop.
"""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2_grpc as pb2_grpc


class GrpcServiceHost:
    """Serves ``servicer`` on ``host:port`` (port 0 = any free port, known after ``start``)."""

    def __init__(
        self,
        servicer: pb2_grpc.GRPCInferenceServiceServicer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self.servicer = servicer
        self.host, self.port, self.reuse_port = host, port, reuse_port
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        # SO_REUSEPORT only for worker processes sharing the port, never by accident.
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(self.reuse_port))])
        pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(self.target)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {self.target}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
