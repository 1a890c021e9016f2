"""Bench protocol clients, one module each, chosen by name (``--protocol``).

A new protocol (e.g. Triton gRPC) is one new module implementing ``ProtocolClient`` plus one
entry in ``PROTOCOLS``; the user simulator never branches on the protocol.
"""

from __future__ import annotations

import importlib

from expert_router.bench.protocols.base import (
    ClientSettings,
    Message,
    ProtocolClient,
    StreamFailed,
    StreamSink,
)
from expert_router.errors import ConfigError

# name -> "module:class"; the class is constructed with a ClientSettings.
PROTOCOLS = {
    "openai": "expert_router.bench.protocols.openai:OpenAIClient",
    "triton-grpc": "expert_router.bench.protocols.triton_grpc:TritonGrpcClient",
    "triton-http": "expert_router.bench.protocols.triton_http:TritonHttpClient",
}


def make_client(protocol: str, settings: ClientSettings) -> ProtocolClient:
    """A client of ``protocol`` for ``settings`` (create it inside the running event loop)."""
    try:
        module_name, cls_name = PROTOCOLS[protocol].split(":")
    except KeyError:
        raise ConfigError(
            f"protocol: unknown {protocol!r}, expected one of {', '.join(PROTOCOLS)}"
        ) from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    client: ProtocolClient = cls(settings)
    return client


__all__ = [
    "PROTOCOLS",
    "ClientSettings",
    "Message",
    "ProtocolClient",
    "StreamFailed",
    "StreamSink",
    "make_client",
]
