"""``expert-router serve``: run the routing gateway from a YAML config or ``--expert`` flags.

expert-router serve --config gateway.yaml [--host H] [--port P] [--workers N]
expert-router serve [--model DIR] --expert 0=http://a:8001 --expert '*=http://b:8002'
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

from expert_router.cli import args as types


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the routing gateway (OpenAI-compatible)",
        description="Classify each request and stream it to its cluster's expert servers.",
    )
    p.add_argument("--config", help="gateway YAML config (see docs/configuration.md)")
    p.add_argument("--model", help="classifier directory (default: the config's, else bundled)")
    p.add_argument(
        "--expert",
        action="append",
        default=[],
        type=types.expert,
        metavar="CLUSTER=URL",
        help="an expert replica for a cluster; repeatable; CLUSTER '*' = every other cluster",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        type=types.local_host,
        help="address of this machine to bind (default 127.0.0.1; 0.0.0.0 = every address)",
    )
    p.add_argument(
        "--port", type=types.listen_port, default=8000, help="port (default 8000; 0 = any free)"
    )
    p.add_argument(
        "--workers", type=types.positive_int, default=1, help="processes sharing the port"
    )
    p.add_argument(
        "--grpc-port",
        type=types.listen_port,
        default=None,
        help="also serve Triton's gRPC API on this port",
    )
    p.add_argument("--access-log", action="store_true", help="one JSON line per request on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from expert_router.config import (
        gateway_config_from_experts,
        load_gateway_config,
        parse_expert_flags,
    )
    from expert_router.errors import ConfigError, UsageError

    if not args.config and not args.expert:
        raise UsageError("give --config FILE or at least one --expert CLUSTER=URL")
    for port in (args.port, args.grpc_port):  # before anything heavy is imported
        if port is not None:
            _check_free(args.host, port)
    _check_protocols(args.expert)
    if args.config:
        config = load_gateway_config(args.config)
        updates: dict[str, Any] = {}
        if args.expert:
            experts = gateway_config_from_experts(parse_expert_flags(args.expert)).experts
            updates["experts"] = experts
        if args.model:
            updates["classifier"] = config.classifier.model_copy(update={"model": args.model})
        if updates:
            config = config.model_copy(update=updates)
    else:
        config = gateway_config_from_experts(parse_expert_flags(args.expert), model=args.model)
    if args.access_log:
        config = config.model_copy(update={"access_log": True})
    if config.access_log:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("expert_router.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def ready(url: str) -> None:
        print(f"expert-router gateway listening on {url} (workers={args.workers})", flush=True)
        if args.grpc_port is not None:
            print(f"gRPC ingress (Triton) on {args.host}:{args.grpc_port}", flush=True)

    from expert_router.gateway import run_gateway

    multiproc_dir = None
    if args.workers > 1:
        multiproc_dir = tempfile.mkdtemp(prefix="expert-router-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    try:
        run_gateway(
            config,
            host=args.host,
            port=args.port,
            workers=args.workers,
            multiproc_dir=multiproc_dir,
            on_ready=ready,
            grpc_port=args.grpc_port,
        )
    except OSError as exc:  # a port was taken between the check and the bind
        why = types.bind_error(args.host, args.port, exc) if exc.strerror else str(exc)
        raise ConfigError(why) from exc
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0


def _check_free(host: str, port: int) -> None:
    """One line, before anything starts, when ``host:port`` cannot be listened on."""
    from expert_router.errors import ConfigError

    try:
        types.check_listen(host, port)
    except OSError as exc:
        raise ConfigError(types.bind_error(host, port, exc)) from exc


def _check_protocols(experts: list[str]) -> None:
    """A usage error for an ``--expert`` URL whose scheme names no backend."""
    from expert_router.backends import REGISTRY
    from expert_router.errors import UsageError

    for flag in experts:
        scheme = flag.partition("=")[2].partition("://")[0].lower()
        if scheme not in REGISTRY:
            known = ", ".join(f"{k}://" for k in sorted(REGISTRY))
            raise UsageError(f"--expert {flag}: unknown protocol {scheme!r} (known: {known})")
