"""The plan's HTML page: the headline, the allocation per cluster beside the uniform one, the
baselines, the frontier (GPUs -> tails, throughput, attainment) and the per-cluster load.

Numbers go through ``bench.columns`` (labels, units, fixed precision) and the page through
``bench.html`` (``page``, links to the docs), as every report of the project does.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from expert_router.bench.columns import METRICS, Unit, fmt, header, unit_for  # noqa: E402
from expert_router.bench.html import doc_link, page  # noqa: E402
from expert_router.bench.summary import get_path  # noqa: E402
from expert_router.planner.document import APPROXIMATIONS  # noqa: E402
from expert_router.planner.plan import Plan  # noqa: E402
from expert_router.planner.search import Point  # noqa: E402

HTML_FILE = "report.html"
FRONTIER_FILE = "frontier.png"
LOAD_FILE = "cluster_load.png"
KEYS = ("p99_response_time", "ttft.base.mean", "ttft.continuation.mean", "tpot.mean",
        "session_throughput", "session.n99")  # fmt: skip
PERCENT = Unit("%", 100.0, 1)


def _unit(key: str, points: Sequence[Point]) -> Unit:
    return unit_for(METRICS[key], [get_path(p.prediction.metrics, key) for p in points])


def _frontier_series(plan: Plan) -> dict[str, list[Point]]:
    out = {"plan": plan.frontier, "uniform": [plan.uniform[p.gpus] for p in plan.frontier]}
    if plan.tensor_parallel:
        out["tensor parallel"] = [plan.tensor_parallel[g] for g in sorted(plan.tensor_parallel)]
    return out


def plot_frontier(path: Path, plan: Plan) -> None:
    """GPUs -> p99 response time and session throughput (and attainment with targets)."""
    series = _frontier_series(plan)
    panels: list[tuple[str, Unit | None]] = [
        ("p99_response_time", None),
        ("session_throughput", None),
    ]
    if plan.inputs.targets:
        panels.append(("attainment", PERCENT))
    f, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, unit) in zip(axes.flat, panels, strict=True):
        every = [p for pts in series.values() for p in pts]
        u = unit or _unit(key, every)
        for ci, (name, pts) in enumerate(series.items()):
            xs, ys = [], []
            for p in pts:
                v = p.prediction.attainment if key == "attainment" else get_path(
                    p.prediction.metrics, key)  # fmt: skip
                if isinstance(v, int | float):
                    xs.append(p.gpus)
                    ys.append(v * u.scale)
            ax.plot(xs, ys, marker="o", markersize=3, color=f"C{ci}", label=name)
        label = "attainment" if key == "attainment" else METRICS[key].short
        ax.set_title(label if key == "attainment" else METRICS[key].label)
        ax.set_xlabel("GPUs")
        ax.set_ylabel(f"{label} ({u.name})" if u.name not in label.split() else label)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def plot_load(path: Path, plan: Plan) -> None:
    """Per cluster: users per replica and p99 response time, the plan beside uniform."""
    best, uniform = plan.best, plan.uniform[plan.best.gpus]
    k = plan.space.clusters
    xs = list(range(k))
    f, axes = plt.subplots(1, 2, figsize=(10.4, 3.6))
    for ax, key, title in ((axes[0], "users_per_replica", "Users per replica"),
                           (axes[1], "p99_response_time", "p99 response time (s)")):  # fmt: skip
        for off, (name, point) in ((-0.2, ("plan", best)), (0.2, ("uniform", uniform))):
            ys = [float(r[key] or 0.0) for r in point.prediction.clusters]
            ax.bar([x + off for x in xs], ys, width=0.4, label=name)
        ax.set_xticks(xs)
        ax.set_xlabel("cluster")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>\n{body}</table>"


def baselines(plan: Plan) -> list[tuple[str, Point]]:
    """The plan, the uniform allocation and tensor parallelism on (up to) the same GPUs."""
    best = plan.best
    cols: list[tuple[str, Point]] = [("plan", best), ("uniform", plan.uniform[best.gpus])]
    tp_g = max((g for g in plan.tensor_parallel if g <= best.gpus), default=None)
    if tp_g is not None:
        cols.append((f"tensor parallel ({tp_g} GPUs)", plan.tensor_parallel[tp_g]))
    return cols


def _compare_table(plan: Plan) -> str:
    cols = baselines(plan)
    rows = []
    for key in KEYS:
        u = _unit(key, [p for _, p in cols])
        rows.append(
            [html.escape(header(key, u))]
            + [fmt(get_path(p.prediction.metrics, key), u) for _, p in cols]
        )
    if plan.inputs.targets:
        rows.append(["attainment (%)"] + [fmt(p.prediction.attainment, PERCENT) for _, p in cols])
        rows.append(["meets every target"] + ["yes" if plan.meets(p) else "no" for _, p in cols])
    return _table(["predicted"] + [n for n, _ in cols], rows)


def _cluster_table(plan: Plan) -> str:
    best, uniform = plan.best, plan.uniform[plan.best.gpus]
    t = Unit("s", 1.0, 2)
    rows = []
    for c, (r, ur) in enumerate(zip(best.prediction.clusters, uniform.prediction.clusters,
                                    strict=True)):  # fmt: skip
        rows.append([
            str(c), fmt(plan.inputs.weights[c], PERCENT), f"{r['users']:,}",
            html.escape(best.alloc[c][0]), str(r["replicas"]), str(ur["replicas"]),
            fmt(r["users_per_replica"], Unit("", 1.0, 1)), fmt(r["p99_response_time"], t),
            fmt(ur["p99_response_time"], t), fmt(r["ttft_p99"], t),
            fmt(r["tokens_per_s_per_replica"], Unit("tok/s")),
        ])  # fmt: skip
    head = ["cluster", "share (%)", "users", "preset", "replicas", "uniform replicas",
            "users per replica", "p99 resp. (s)", "uniform p99 resp. (s)", "TTFT p99 (s)",
            "tok/s per replica"]  # fmt: skip
    return _table(head, rows)


def _headline(plan: Plan) -> list[str]:
    best = plan.best
    reps = ", ".join(f"{c}: {n}" for c, (_, n) in enumerate(best.alloc))
    key = "p99_response_time"
    pts = [best, plan.uniform[best.gpus]]
    u = _unit(key, pts)
    ours, even = (fmt(get_path(p.prediction.metrics, key), u, with_unit=True) for p in pts)
    said = [
        f"{best.gpus} GPUs as replicas per cluster ({reps}).",
        f"Predicted p99 response time {ours} against {even} for the same GPUs spread evenly "
        "over the clusters.",
    ]
    if plan.inputs.targets:
        smallest = plan.smallest_meeting()
        said.append(
            f"The smallest GPU count meeting every target is {smallest.gpus}." if smallest
            else f"No GPU count up to {plan.inputs.gpus} meets every target."
        )  # fmt: skip
    return said


def _about(plan: Plan, out_dir: Path) -> list[str]:
    inputs = plan.inputs
    w = inputs.workload
    presets = "; ".join(f"{pid}: {p.description or p.model_name} ({p.tp} GPU per replica)"
                        for pid, p in plan.presets.items())  # fmt: skip
    targets = ", ".join(t.text() for t in inputs.targets) or "none (the best balance of tails)"
    facts = [
        f"{w.users:,} users over {plan.space.clusters} clusters, mix {inputs.mix}.",
        f"Each user sends {w.turns} requests: a {w.base_tokens} ± {w.jitter}-token prompt, then "
        f"the conversation padded to {w.continuation_tokens} ± {w.jitter} tokens; "
        f"{w.output_tokens} tokens per answer"
        + (f"; users start over {w.ramp_s:g} s." if w.ramp_s else "; all users start at once."),
        f"Presets: {presets}.",
        f"Targets: {targets}.",
        f"Search: {plan.timing.get('pools_simulated', 0)} pools simulated, "
        f"{plan.timing.get('allocations_priced', 0):,} allocations priced, "
        f"{plan.timing.get('wall_s', 0.0):.1f} s wall ({plan.timing.get('jobs', 1)} processes).",
    ]
    return [f"<p>{html.escape(s)}</p>" for s in facts] + [
        f"<p>How the plan is made and what it approximates: "
        f"{doc_link('planning.md', out_dir, 'docs/planning.md')}.</p>"
    ]


def write_report(out_dir: Path, plan: Plan, extra_files: Sequence[tuple[str, str]] = ()) -> Path:
    """``out_dir/report.html`` with its two figures; ``extra_files``: (file, what it is)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_frontier(out_dir / FRONTIER_FILE, plan)
    plot_load(out_dir / LOAD_FILE, plan)
    body: list[str] = ["<h2>Headline</h2>", '<ul class="headline">']
    body += [f"<li>{html.escape(s)}</li>" for s in _headline(plan)] + ["</ul>"]
    body += ["<h2>What was planned</h2>", *_about(plan, out_dir)]
    body += ["<h2>The plan beside its baselines</h2>", '<p class="about">Predicted in virtual '
             "time on the same GPUs: the plan; the uniform allocation (the same replicas per "
             "cluster, whatever the mix); tensor parallelism (every user on engines spanning "
             "several GPUs, no routing).</p>", _compare_table(plan)]  # fmt: skip
    body += ["<h2>Per cluster</h2>", f'<img class="wide" src="{LOAD_FILE}" alt="per-cluster '
             f'load">', _cluster_table(plan)]  # fmt: skip
    body += [
        "<h2>Frontier</h2>",
        '<p class="about">The best allocation the search found at '
        "each GPU count it visited, beside the uniform allocation and tensor parallelism "
        "on the same GPUs.</p>",
        f'<img class="wide" src="{FRONTIER_FILE}" alt="frontier">',
    ]
    body += ["<h2>Approximations</h2>", "<ul>"]
    body += [f"<li>{html.escape(a)}</li>" for a in APPROXIMATIONS] + ["</ul>"]
    if extra_files:
        body += ["<h2>Files</h2>", "<ul>"]
        body += [f'<li><a href="{html.escape(f)}">{html.escape(f)}</a>: {html.escape(what)}'
                 "</li>" for f, what in extra_files] + ["</ul>"]  # fmt: skip
    path = out_dir / HTML_FILE
    path.write_text(page(f"Fleet plan: {plan.best.gpus} GPUs", body), encoding="utf-8")
    return path
