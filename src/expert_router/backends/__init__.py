"""Upstream protocol adapters, chosen by the replica URL's scheme.

A new protocol is one module with a ``make(settings) -> Backend`` factory plus one entry in
``REGISTRY``; the gateway never branches on the kind of backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from expert_router.backends import http1, openai
from expert_router.backends.base import (
    Backend,
    BackendRequest,
    BackendSettings,
    Listener,
    UpstreamCall,
)
from expert_router.errors import ConfigError


def _lazy(module: str) -> Callable[[BackendSettings], Backend]:
    """A factory that imports its module on first use (gRPC stubs stay out of plain set-ups)."""

    def make(settings: BackendSettings) -> Backend:
        factory: Callable[[BackendSettings], Backend] = importlib.import_module(
            f"expert_router.backends.{module}"
        ).make
        return factory(settings)

    return make


REGISTRY: dict[str, Callable[[BackendSettings], Backend]] = {
    "http": http1.make,  # lean pooled HTTP/1.1, de-chunks in the protocol callback
    "https": openai.make,  # aiohttp (TLS)
    "aiohttp+http": openai.make,  # aiohttp over plain HTTP, when wanted
    "grpc": _lazy("triton_grpc"),  # Triton / TensorRT-LLM, KServe v2 gRPC
    "triton-http": _lazy("triton_http"),  # Triton's HTTP generate_stream
}


def make_backend(protocol: str, settings: BackendSettings) -> Backend:
    """The adapter for ``protocol`` (a URL scheme); ``ConfigError`` for an unknown one."""
    try:
        factory = REGISTRY[protocol]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(
            f"{settings.url}: unknown protocol {protocol!r} (known: {known})"
        ) from None
    return factory(settings)


__all__ = [
    "REGISTRY",
    "Backend",
    "BackendRequest",
    "BackendSettings",
    "Listener",
    "UpstreamCall",
    "make_backend",
]
