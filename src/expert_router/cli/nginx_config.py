"""`expert-router nginx-config`: write an nginx config balancing over gateway instances.

Prints the config, or writes it to ``--out``; the config is rendered by
``expert_router.gateway.nginx_conf`` (SSE-safe proxying, round robin, upstream keep-alive;
``--grpc``: gRPC over HTTP/2 with ``grpc_pass`` to gateway or expert gRPC ports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from expert_router.cli.args import positive_int


def add_parser(subparsers: Any) -> None:
    """Register ``nginx-config``."""
    parser = subparsers.add_parser(
        "nginx-config",
        help="write an nginx config that round-robins over gateway instances",
        description=(
            "Render an nginx config that balances round-robin over gateway instances, with "
            "streaming-safe proxy settings. Run it with: nginx -p DIR -c FILE -e stderr"
        ),
    )
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a gateway instance (repeat the flag, or separate several with commas)",
    )
    parser.add_argument(
        "--listen", default="8080", metavar="[HOST:]PORT", help="where nginx listens (8080)"
    )
    parser.add_argument(
        "--worker-processes", default="auto", metavar="N", help="nginx workers (auto)"
    )
    parser.add_argument(
        "--worker-connections",
        type=positive_int,
        default=8192,
        metavar="N",
        help="per worker (8192)",
    )
    parser.add_argument(
        "--keepalive",
        type=positive_int,
        default=256,
        metavar="N",
        help="idle upstream connections kept",
    )
    parser.add_argument(
        "--read-timeout",
        type=positive_int,
        default=3600,
        metavar="SECONDS",
        help="longest pause between two streamed chunks (3600)",
    )
    parser.add_argument(
        "--max-body", default="8m", metavar="SIZE", help="largest request body (8m)"
    )
    parser.add_argument(
        "--access-log", default=None, metavar="FILE", help="access log path (default: off)"
    )
    parser.add_argument(
        "--daemon", action="store_true", help="let nginx daemonize (default: foreground)"
    )
    parser.add_argument(
        "--grpc",
        action="store_true",
        help="proxy gRPC (Triton's GRPCInferenceService): HTTP/2 listener, grpc_pass upstream",
    )
    parser.add_argument(
        "--max-streams",
        type=positive_int,
        default=4096,
        metavar="N",
        help="with --grpc: concurrent calls per client connection (4096)",
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="write here instead of standard output"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the config and print or write it."""
    from expert_router.errors import ConfigError, UsageError
    from expert_router.gateway.nginx_conf import NginxOptions, render_nginx_conf

    upstreams = [part.strip() for value in args.upstream for part in value.split(",")]
    options = NginxOptions(
        listen=args.listen,
        worker_processes=str(args.worker_processes),
        worker_connections=args.worker_connections,
        keepalive=args.keepalive,
        read_timeout_s=args.read_timeout,
        max_body=args.max_body,
        access_log=args.access_log,
        daemon=args.daemon,
        grpc=args.grpc,
        max_streams=args.max_streams,
    )
    try:  # every value comes from a flag: a bad one is a usage error
        text = render_nginx_conf([u for u in upstreams if u], options)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(
        f"wrote {out}; run it with: nginx -p {out.parent.resolve()} -c {out.name} -e stderr",
        file=sys.stderr,
    )
    return 0
