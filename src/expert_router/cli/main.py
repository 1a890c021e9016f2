"""The ``expert-router`` entry point: builds the argument parser from the command modules.

Each command lives in its own module under ``expert_router.cli`` and exposes
``add_parser(subparsers)``, which registers the command and sets ``func`` to a
``run(args) -> int``. Heavy imports happen inside ``run`` so that ``--help`` stays fast.
Every error a user can cause is one line on stderr, never a traceback: exit status 2 for a
bad argument (argparse's or ``UsageError``), 1 for a failure while running.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from expert_router import __version__
from expert_router.errors import ExpertRouterError, UsageError

PROG = "expert-router"

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
    "plan",
    "profile_gpu",
    "fit_gpu",
    "bench",
    "report",
    "experiment",
    "demo",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``expert-router CMD: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available command registered."""
    parser = Parser(
        prog=PROG,
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
    prog = f"{PROG} {args.command}"
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        return _fail(prog, f"{exc} (see {prog} --help)", 2)
    except ExpertRouterError as exc:
        return _fail(prog, str(exc), 1)
    except OSError as exc:  # a file or socket the user named: no traceback for it
        return _fail(prog, describe_os_error(exc), 1)


def describe_os_error(exc: OSError) -> str:
    """``[Errno 2] No such file or directory: 'x'`` -> ``x: No such file or directory``."""
    why = exc.strerror or str(exc)
    return f"{exc.filename}: {why}" if exc.filename else why


def _fail(prog: str, message: str, status: int) -> int:
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
