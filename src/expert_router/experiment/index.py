"""The landing page of a demo or an experiment (``index.html``): per report, what was run,
its configurations and its headline, with links to every report and to the reproduction
discussion. Everything on it is computed from the runs (``bench.narrative``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from expert_router.bench.columns import HEADLINE_KEYS, Series, units
from expert_router.bench.html import configs_table, doc_link, headline_list, page
from expert_router.bench.narrative import describe_run

INDEX_FILE = "index.html"


@dataclass
class Part:
    """One report on the page: a heading, where its page is, its runs."""

    heading: str
    report: Path
    series: Series
    sources: dict[str, Path] = field(default_factory=dict)
    """Each configuration's own sweep directory (its report is linked)."""


def _rel(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


def write_index(out: Path, title: str, parts: Sequence[Part], intro: str = "") -> Path:
    """Write ``out/index.html``; returns its path."""
    out = Path(out)
    body = [f"<p>{html.escape(intro)}</p>"] if intro else []
    body.append("<ul>" + "".join(
        f'<li><a href="#part{i}">{html.escape(p.heading)}</a> — '
        f'<a href="{html.escape(_rel(p.report, out))}">full report</a></li>'
        for i, p in enumerate(parts)
    ) + "</ul>")  # fmt: skip
    for i, part in enumerate(parts):
        links = {n: _rel(Path(d) / "report.html", out) for n, d in part.sources.items()}
        body += [
            f'<h2 id="part{i}">{html.escape(part.heading)}</h2>',
            f'<p><a href="{html.escape(_rel(part.report, out))}">The full report</a>: every '
            "figure and table, with what each number means.</p>",
            *headline_list(part.series, units(part.series, HEADLINE_KEYS), level=3),
            "<h3>What was run</h3>",
            *(f"<p>{html.escape(p)}</p>" for p in describe_run(part.series)),
            configs_table(part.series, links),
        ]
    body += [
        "<h2>Compared with the paper</h2>",
        f"<p>{doc_link('reproduction.md', out, 'docs/reproduction.md')} sets the paper's "
        "figures beside this project's, claim by claim, and says where and why they differ. "
        f"{doc_link('metrics.md', out, 'docs/metrics.md')} defines every number.</p>",
    ]
    path = out / INDEX_FILE
    path.write_text(page(title, body), encoding="utf-8")
    return path
