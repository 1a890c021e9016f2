"""``expert-router classify``: print where each prompt goes, one JSON line per prompt."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``classify``."""
    p = subparsers.add_parser(
        "classify",
        help="classify prompts with a trained (or the bundled) model",
        description="Classify TEXT, or every line of --file (or of stdin when neither is "
        "given); prints one JSON object per prompt: cluster, scores, ranked, reason.",
    )
    p.add_argument("text", nargs="?", metavar="TEXT", help="one prompt")
    p.add_argument("--model", help="model directory (default: the bundled model)")
    p.add_argument("--file", "-f", help="a file with one prompt per line ('-' for stdin)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify and print."""
    from expert_router.classify import load
    from expert_router.errors import ConfigError, UsageError

    if args.text is not None and args.file is not None:
        raise UsageError("give TEXT or --file, not both")
    clf = load(args.model)
    if args.text is not None:
        prompts = [args.text]
    elif args.file is not None and args.file != "-":
        try:
            with open(args.file, encoding="utf-8", errors="replace") as fh:
                prompts = [line.rstrip("\r\n") for line in fh]
        except OSError as exc:
            raise ConfigError(f"--file {args.file}: {exc.strerror}") from exc
    else:
        prompts = [line.rstrip("\r\n") for line in sys.stdin]
    out = sys.stdout
    for pred in clf.predict_many(prompts):
        out.write(
            json.dumps(
                {
                    "cluster": pred.cluster,
                    "scores": [round(float(s), 6) for s in pred.scores],
                    "ranked": list(pred.ranked),
                    "reason": pred.reason,
                }
            )
            + "\n"
        )
    return 0
