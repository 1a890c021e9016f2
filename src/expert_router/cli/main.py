"""The ``expert-router`` entry point: builds the argument parser from the command modules.

Each command lives in its own module under ``expert_router.cli`` and exposes
``add_parser(subparsers)``, which registers the command and sets ``func`` to a
``run(args) -> int``. Heavy imports happen inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from expert_router import __version__
from expert_router.errors import ExpertRouterError

# Order shown in --help. A module that is not present is skipped.
COMMANDS = (
    "train",
    "classify",
    "inspect",
    "evaluate",
    "serve",
    "nginx_config",
    "emulate",
    "simulate",
    "profile_gpu",
    "fit_gpu",
    "bench",
    "report",
    "experiment",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="expert-router",
        description="Route prompts to expert LLM servers by topic; emulate and benchmark fleets.",
    )
    parser.add_argument("--version", action="version", version=f"expert-router {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"expert_router.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"expert_router.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ExpertRouterError as exc:
        print(f"expert-router {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
