"""``expert-router evaluate``: routing quality of a model against a labelled corpus."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare a model's clusters with the labels of a corpus (NMI, ARI, purity)",
        description="Classify every document of DATA and compare clusters with its labels.",
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="labelled corpus file(s)")
    p.add_argument("--model", help="model directory (default: the bundled model)")
    p.add_argument("--label-field", default="label", help="field holding the label")
    p.add_argument("--text-field", default="text", help="field holding the text")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    import sys

    from expert_router.classify import load
    from expert_router.classify.corpus import CorpusReader
    from expert_router.classify.evaluate import quality
    from expert_router.errors import CorpusError

    clf = load(args.model)
    reader = CorpusReader(args.data, text_field=args.text_field, strict=args.strict)
    texts: list[str] = []
    labels: list[Any] = []
    missing = 0
    for record in reader:
        label = record.fields.get(args.label_field)
        if label is None or isinstance(label, (dict, list)):
            missing += 1
            if args.strict:
                raise CorpusError(f"{record.source}:{record.line}: no label {args.label_field!r}")
            continue
        texts.append(record.text)
        labels.append(label)
    if not texts:
        raise CorpusError(f"no labelled documents in {', '.join(args.data)}")
    clusters = [p.cluster for p in clf.predict_many(texts)]
    result = quality(clusters, labels, clf.n_clusters).as_dict()
    result["skipped"] = reader.stats.skipped + missing
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    from rich.table import Table

    from expert_router.console import make_console

    console = make_console()
    console.print(
        f"{result['documents']} documents, {result['labels']} labels, "
        f"{clf.n_clusters} clusters ({result['skipped']} skipped)",
        highlight=False,
    )
    console.print(
        f"NMI {result['nmi']:.4f}   ARI {result['ari']:.4f}   purity {result['purity']:.4f}",
        highlight=False,
    )
    table = Table("cluster", "documents", "share")
    for k, size in enumerate(result["sizes"]):
        table.add_row(str(k), str(size), f"{size / result['documents']:.1%}")
    console.print(table)
    return 0
