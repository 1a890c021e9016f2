"""``expert-router train``: fit a classifier on one or more corpora and write its artifact."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from expert_router.cli.args import non_negative_int, positive_int


def add_parser(subparsers: Any) -> None:
    """Register ``train``."""
    p = subparsers.add_parser(
        "train",
        help="fit the prompt classifier (TF-IDF, SVD, balanced k-means) on a corpus",
        description="Fit c-BTM's clusterer on CORPUS files (JSONL[.gz], CSV, Parquet, text, "
        "or a directory of one-document files) and write a model directory.",
    )
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="corpus file(s) or directories")
    p.add_argument(
        "--clusters", "-k", type=positive_int, default=8, help="number of clusters (default 8)"
    )
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--text-field", default="text", help="field holding the text (default text)")
    p.add_argument(
        "--scaler",
        choices=("l2", "standard"),
        default="l2",
        help="l2 (c-BTM's code, default) or standard (the paper's text)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--dims", type=positive_int, default=100, help="SVD dimensions (default 100)")
    p.add_argument(
        "--min-df",
        type=positive_int,
        default=2,
        help="drop terms in fewer documents than this (default 2)",
    )
    p.add_argument("--max-iter", type=positive_int, default=20, help="k-means passes (default 20)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=50_000,
        help="k-means mini-batch size (default 50000)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="dtype of the folded weight matrix (default float32)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first bad corpus record instead of skipping it",
    )
    p.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The training command as a user would type it (recorded in the manifest)."""
    parts = ["expert-router", "train", *args.corpus, "--clusters", str(args.clusters)]
    parts += ["--seed", str(args.seed), "--out", args.out]
    defaults = {
        "text_field": "text",
        "scaler": "l2",
        "dims": 100,
        "min_df": 2,
        "max_iter": 20,
        "batch_size": 50_000,
        "dtype": "float32",
    }
    for key, default in defaults.items():
        if getattr(args, key) != default:
            parts += ["--" + key.replace("_", "-"), str(getattr(args, key))]
    if args.strict:
        parts.append("--strict")
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Train and report where the model went."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from expert_router.classify.corpus import CorpusReader
    from expert_router.classify.training import TooLittleData, TrainConfig, train
    from expert_router.console import make_console
    from expert_router.errors import ConfigError

    console = make_console(stderr=True)
    config = TrainConfig(
        clusters=args.clusters,
        scaler=args.scaler,
        seed=args.seed,
        dims=args.dims,
        min_df=args.min_df,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(path: str, done: int, total: int) -> None:
            if path not in tasks:
                tasks[path] = progress.add_task(f"reading {path}", total=total)
            progress.update(tasks[path], completed=done)

        said_what_was_read = False

        def log(message: str) -> None:  # the first log line comes once the corpus is read
            nonlocal said_what_was_read
            if not said_what_was_read:
                console.print(reader.stats.describe(args.text_field), highlight=False)
                said_what_was_read = True
            console.print(message, highlight=False)

        reader = CorpusReader(
            args.corpus,
            text_field=args.text_field,
            strict=args.strict,
            on_progress=on_progress,
        )
        try:
            out = train(
                reader.texts(),
                args.out,
                config,
                corpus=None,
                command=command_line(args),
                log=log,
            )
        except TooLittleData as exc:
            read = reader.stats.describe(args.text_field)
            raise ConfigError(f"{read}; {advice(exc, args)}") from None
    # The corpus summary is only complete once the texts are consumed: rewrite the manifest.
    _record_corpus(out, reader.stats.summary())
    console.print(f"trained {args.clusters} clusters -> {out}", highlight=False)
    return 0


def advice(exc: Any, args: argparse.Namespace) -> str:
    """What to change, for each setting the corpus falls short of (``TooLittleData.short``)."""
    docs, terms, d, k = exc.documents, exc.terms, args.dims, args.clusters
    if exc.short == ["documents"]:
        return "no documents to train on"
    fits = min(docs, terms - 1) if terms else docs
    say = {
        "terms": "no usable terms (only stop words, numbers or one-letter words)",
        "min_df": f"--min-df {args.min_df} keeps no term (no term is in that many documents): "
        "lower it",
        "clusters": f"--clusters {k} needs at least {k} documents: use {docs} or fewer",
        "dims": f"--dims {d} needs at least {d} documents and more than {d} distinct terms"
        + (f" (these give {terms})" if terms else "")
        + (f": lower it to {fits} or less" if fits >= 1 else ""),
    }
    return "; ".join(say[s] for s in exc.short) + "; or train on more documents"


def _record_corpus(out: Any, summary: dict[str, Any]) -> None:
    import json
    from pathlib import Path

    path = Path(out) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["corpus"] = summary
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
