"""The HTML of a sweep report: what was run, the headline, one section per figure (its
meaning, its sentence, the figure beside its table), failures by reason, and links.

Every number goes through ``bench.columns`` (fixed precision, units) and every sentence
through ``bench.narrative``; this module only lays them out. ``doc_href`` links the
project's docs from wherever the report is written.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import expert_router
from expert_router.bench import narrative
from expert_router.bench.columns import (
    HEADLINE_KEYS,
    METRICS,
    Series,
    Unit,
    fmt,
    header,
    short_name,
    units,
    values,
)
from expert_router.bench.plots import FIGURES, TIME_BUCKETS_FILE
from expert_router.bench.summary import get_path

CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1180px;padding:0 1.2em;color:#222;line-height:1.45}
h1{font-size:1.55em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em;
border-bottom:1px solid #ddd;padding-bottom:.2em}p,li{max-width:62em}
.about{color:#555;font-size:.95em}.headline li{margin:.35em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.88em;margin:.4em 0}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f3f3f3}
.text{text-align:left}.pair{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.pair img,img.one{width:600px;max-width:100%}img.wide{width:100%;max-width:1180px}
a{color:#0550ae}"""

DOCS = Path(expert_router.__file__).resolve().parents[2] / "docs"


def doc_href(name: str, from_dir: Path) -> str | None:
    """A relative link from ``from_dir`` to the project's ``docs/<name>``, or None when the
    package runs without its docs (installed from a wheel).

    Relative, not copied: the page opens the living document (with its figures) from the
    checkout, and no stale copy is left in every output folder.
    """
    target = DOCS / name
    if not target.is_file():
        return None
    return Path(os.path.relpath(target, Path(from_dir).resolve())).as_posix()


def doc_link(name: str, from_dir: Path, text: str) -> str:
    href = doc_href(name, from_dir)
    label = html.escape(text)
    if href is None:
        return f"{label} (docs/{html.escape(name)} in the project)"
    return f'<a href="{html.escape(href)}">{label}</a>'


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained page."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _reps(series: Series) -> int:
    return max((int(s.get("repetitions", 1)) for ss in series.values() for s in ss), default=1)


def _cell(summary: dict[str, Any], key: str, unit: Unit, reps: int) -> str:
    text = fmt(get_path(summary, key), unit)
    iv = (summary.get("across_repetitions") or {}).get(key)
    sd = iv.get("sd") if isinstance(iv, dict) else None
    if reps > 1 and isinstance(sd, int | float) and float(f"{sd * unit.scale:.{unit.digits}f}"):
        text += f" ± {fmt(sd, unit)}"  # left out where it rounds to zero
    return text


def metric_table(series: Series, keys: Sequence[str], units_: Mapping[str, Unit]) -> str:
    """Users down, configurations across (each with a column per metric when several)."""
    reps = _reps(series)
    names = list(series)
    head1 = '<th class="text" rowspan="2">users</th>'
    if len(keys) > 1:  # a column group per configuration, a column per metric
        head1 += "".join(
            f'<th colspan="{len(keys)}">{html.escape(short_name(n))}</th>' for n in names
        )
        cols = [html.escape(header(k, units_[k])) for _ in names for k in keys]
    else:  # the metric over a column per configuration
        head1 += f'<th colspan="{len(names)}">{html.escape(header(keys[0], units_[keys[0]]))}</th>'
        cols = [html.escape(short_name(n)) for n in names]
    head = f"<tr>{head1}</tr><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>"
    by_users: dict[int, dict[str, dict[str, Any]]] = {}
    for name, summaries in series.items():
        for s in summaries:
            by_users.setdefault(int(s["users"]), {})[name] = s
    rows = []
    for u in sorted(by_users):
        cells = [
            _cell(by_users[u][n], k, units_[k], reps) if n in by_users[u] else "–"
            for n in names
            for k in keys
        ]
        rows.append(f"<tr><td>{u}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}\n" + "\n".join(rows) + "</table>"


def configs_table(series: Series, sources: Mapping[str, str]) -> str:
    rows = []
    for name, summaries in series.items():
        label = html.escape(name)
        if name in sources:
            label = f'<a href="{html.escape(sources[name])}">{label}</a>'
        rows.append(
            f'<tr><td class="text">{label}</td>'
            f'<td class="text">{html.escape(narrative.describe_config(summaries))}</td>'
            f'<td class="text">{narrative.how(summaries)}</td></tr>'
        )
    head = '<tr><th class="text">configuration</th><th class="text">what it is</th>'
    head += '<th class="text">how the numbers were obtained</th></tr>'
    return f"<table>{head}\n" + "\n".join(rows) + "</table>"


def _section(title: str, keys: Sequence[str], series: Series, units_: Mapping[str, Unit],
             image: str | None) -> str:  # fmt: skip
    about = " ".join(METRICS[k].about for k in keys)
    parts = [f"<h2>{html.escape(title)}</h2>", f'<p class="about">{html.escape(about)}</p>']
    img = f'<img src="{html.escape(image)}" alt="{html.escape(title)}">' if image else ""
    parts.append(f'<div class="pair">{img}{metric_table(series, keys, units_)}</div>')
    return "\n".join(parts)


def _errors(series: Series) -> str:
    rows = []
    for name, summaries in series.items():
        for s in summaries:
            for reason, n in ((s.get("totals") or {}).get("errors_by_reason") or {}).items():
                rows.append(
                    f'<tr><td class="text">{html.escape(short_name(name))}</td>'
                    f"<td>{s['users']}</td><td>{n}</td>"
                    f'<td class="text">{html.escape(reason)}</td></tr>'
                )
    if not rows:
        return ""
    head = '<tr><th class="text">configuration</th><th>users</th><th>failed</th>'
    head += '<th class="text">reason</th></tr>'
    return (
        '<h2>Failed requests by reason</h2>\n<p class="about">Every failed request of every '
        "repetition, grouped by the error it ended with.</p>\n"
        f"<table>{head}\n" + "\n".join(rows) + "</table>"
    )


def headline_list(series: Series, units_: Mapping[str, Unit], level: int = 2) -> list[str]:
    """The headline: one sentence per metric (nothing when there is no data)."""
    said = narrative.headlines(series, HEADLINE_KEYS, units_)
    if not said:
        return []
    items = "".join(f"<li>{html.escape(s)}</li>" for s in said)
    return [f"<h{level}>Headline</h{level}>", f'<ul class="headline">{items}</ul>']


def report_page(title: str, series: Series, out_dir: Path, *, csv_file: str,
                sources: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """The whole report: facts, configurations, headline, sections, failures, links."""
    sources = dict(sources or {})
    keys = [k for f in FIGURES for k in f.table_keys] + ["error_rate", "gateway_overhead.mean"]
    units_ = units(series, keys)
    body = headline_list(series, units_)
    body.append("<h2>What was run</h2>")
    body += [f"<p>{html.escape(p)}</p>" for p in narrative.describe_run(series)]
    body.append(configs_table(series, sources))
    for fig in FIGURES:
        body.append(_section(fig.title, fig.table_keys, series, units_, fig.file))
    if any(isinstance(v, int | float) and v > 0 for v in values(series, "error_rate")):
        body.append(_section("Error rate", ["error_rate"], series, units_, None))
    if any(isinstance(v, int | float) for v in values(series, "gateway_overhead.mean")):
        body.append(_section("Gateway overhead", ["gateway_overhead.mean"], series, units_, None))
    window = next((s.get("window_s") for ss in series.values() for s in ss), None)
    each = f"{window:g}-second" if isinstance(window, int | float) else "time"
    over = "averaged over its repetitions" if _reps(series) > 1 else "of its one repetition"
    body += [
        "<h2>Throughput over time</h2>",
        f'<p class="about">Tokens per second delivered in each {each} window of a run (the '
        f"last window is shorter), {over}; one line per user count"
        + ("; one panel per configuration.</p>" if len(series) > 1 else ".</p>"),
        f'<img class="{"wide" if len(series) > 1 else "one"}" src="{TIME_BUCKETS_FILE}" '
        'alt="throughput over time">',
        _errors(series),
        "<h2>Files and definitions</h2>",
        "<ul>",
        f'<li><a href="{csv_file}">{csv_file}</a>: every headline metric with its sample sd '
        "and 95 % interval, one row per configuration and user count.</li>",
    ]
    body += [
        f'<li><a href="{html.escape(href)}">{html.escape(name)}</a>: its own report.</li>'
        for name, href in sources.items()
    ]
    body.append(f"<li>{doc_link('metrics.md', out_dir, 'docs/metrics.md')}: the exact "
                "definition of every number.</li>")  # fmt: skip
    body.append(f"<li>{doc_link('reproduction.md', out_dir, 'docs/reproduction.md')}: the "
                "paper's experiment reproduced, claim by claim.</li></ul>")  # fmt: skip
    return page(title, body)
