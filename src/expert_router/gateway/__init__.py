"""The routing gateway: OpenAI-compatible ingress, replica pools, health, relay, metrics.

``serve_gateway(config, port=0)`` runs one in the caller's event loop (tests, benchmarks);
``run_gateway`` blocks (the ``serve`` command).
"""

from expert_router.gateway.app import ClassifierLike, Gateway
from expert_router.gateway.server import RunningGateway, run_gateway, serve_gateway

__all__ = [
    "ClassifierLike",
    "Gateway",
    "RunningGateway",
    "run_gateway",
    "serve_gateway",
]
