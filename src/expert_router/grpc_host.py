"""A gRPC server in the running event loop hosting one GRPCInferenceService servicer.

Shared by the emulator's Triton face and the gateway's gRPC ingress: listen, start, stop. It
runs on the lean HTTP/2 transport (``expert_router.h2``); servicers keep grpc.aio's calling
convention.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb2
from tritonclient.grpc import service_pb2_grpc as pb2_grpc

from expert_router.h2.limits import DEFAULT_LIMITS, H2Limits
from expert_router.h2.server import GrpcServer

SERVICE = "GRPCInferenceService"


class GrpcServiceHost:
    """Serves ``servicer`` on ``host:port`` (port 0 = any free port, known after ``start``)."""

    def __init__(
        self,
        servicer: pb2_grpc.GRPCInferenceServiceServicer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        limits: H2Limits = DEFAULT_LIMITS,
        max_connections: int | None = None,
    ) -> None:
        self.servicer = servicer
        self.max_connections = max_connections  # open client connections (None: no cap)
        self.host, self.port, self.reuse_port = host, port, reuse_port
        self.limits = limits  # HTTP/2 and gRPC message limits (h2/limits.py)
        self._server: GrpcServer | None = None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        # SO_REUSEPORT only for worker processes sharing the port, never by accident.
        server = GrpcServer(
            self.servicer,
            pb2,
            SERVICE,
            host=self.host,
            port=self.port,
            reuse_port=self.reuse_port,
            limits=self.limits,
            max_connections=self.max_connections,
        )
        try:
            await server.start()
        except OSError as exc:
            raise OSError(f"cannot listen for gRPC on {self.target}: {exc}") from exc
        self.port = server.port
        self._server = server

    async def drain(self, grace: float) -> None:
        """Let calls in flight finish for ``grace`` seconds, take no new ones, then stop."""
        if self._server is not None:
            await self._server.drain(grace)
            self._server = None

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
