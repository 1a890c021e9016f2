"""``expert-router inspect``: each cluster's share and top terms, to name the experts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from expert_router.cli.args import positive_int


def add_parser(subparsers: Any) -> None:
    """Register ``inspect``."""
    p = subparsers.add_parser(
        "inspect",
        help="show a model's clusters: share of the training corpus and top terms",
        description="Print the model's parameters, training corpus and, per cluster, its "
        "share of the training documents and its highest-weighted terms.",
    )
    p.add_argument("--model", help="model directory (default: the bundled model)")
    p.add_argument(
        "--terms", type=positive_int, default=12, help="top terms per cluster (default 12)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Inspect and print."""
    import sys

    from expert_router.classify import default_model_dir, load

    clf = load(args.model)
    m = clf.manifest
    sizes = m.get("training", {}).get("cluster_sizes_nearest") or [0] * clf.n_clusters
    total = max(1, sum(sizes))
    terms = clf.top_terms(args.terms)
    clusters = [
        {"cluster": k, "documents": sizes[k], "share": sizes[k] / total, "top_terms": terms[k]}
        for k in range(clf.n_clusters)
    ]
    corpus = m.get("corpus", {})
    if args.json:
        out = {
            "model": str(args.model or default_model_dir()),
            "parameters": m["parameters"],
            "corpus": corpus,
            "clusters": clusters,
        }
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    from rich.table import Table

    from expert_router.console import make_console

    console = make_console()
    p = m["parameters"]
    console.print(
        f"model {args.model or default_model_dir()}: {clf.n_clusters} clusters, "
        f"scaler {p['scaler']}, {p['dims']} dims, {len(clf.vocabulary)} terms, seed {p['seed']}",
        highlight=False,
    )
    console.print(
        f"trained on {', '.join(corpus.get('files', [])) or '?'}: "
        f"{corpus.get('documents', '?')} documents ({corpus.get('skipped', 0)} skipped)",
        highlight=False,
    )
    table = Table("cluster", "share", "top terms")
    for c in clusters:
        table.add_row(str(c["cluster"]), f"{c['share']:.1%}", ", ".join(c["top_terms"]))
    console.print(table)
    return 0
