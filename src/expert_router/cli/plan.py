"""``expert-router plan``: how many replicas of which expert per cluster, for a topic mix.

Searches the allocation of ``--gpus`` GPUs in virtual time (``planner``) and writes
``DIR/gateway.yaml`` (for ``serve --config``), ``DIR/plan.json``, ``DIR/kubernetes/`` and
``DIR/report.html``; prints the plan beside the uniform and tensor-parallel baselines.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expert_router.cli import args as types
from expert_router.cli.emulate import add_overrides, overrides
from expert_router.errors import UsageError

if TYPE_CHECKING:
    from expert_router.emulator.presets import Preset
    from expert_router.emulator.virtual import SimWorkload
    from expert_router.planner.plan import Plan, PlanInputs

DEFAULT_CLUSTERS = 8


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan",
        help="plan a fleet: replicas per cluster for a topic mix and latency targets",
        description="Search how many replicas of which expert each cluster gets on --gpus "
        "GPUs, for a topic mix (given or measured at a gateway) and a workload, priced in "
        "virtual time on the calibrated emulator; writes the gateway config, Kubernetes "
        "replica counts, plan.json and an HTML report (docs/planning.md).",
        formatter_class=types.DefaultsFormatter,
    )
    p.add_argument("--gpus", type=types.positive_int, required=True, help="GPUs available")
    p.add_argument(
        "--preset", type=types.preset_spec, action="append", required=True,
        metavar="[CLUSTERS=]NAME[|NAME...]",
        help="expert preset of every cluster (NAME), or of some (e.g. 0,3=v2-8b); "
        "NAME|NAME lets the plan choose; repeatable",
    )  # fmt: skip
    mix = p.add_mutually_exclusive_group()
    mix.add_argument("--mix", default="uniform",
                     help="topic mix: uniform | normal[:MEAN,SD] | weights:w0,w1,...")  # fmt: skip
    mix.add_argument(
        "--mix-from", action="append", metavar="URL|FILE",
        help="measured mix: a gateway's /metrics URL (or a saved copy) or its JSON access "
        "log; repeatable (summed)",
    )  # fmt: skip
    p.add_argument("--clusters", type=types.positive_int,
                   help="topic clusters (default: 8, or the largest id measured + 1)")  # fmt: skip
    p.add_argument("--users", type=types.positive_int, default=1000, help="concurrent users")
    p.add_argument("--rate", type=types.positive_float,
                   help="users starting per second (default: all at once)")  # fmt: skip
    types.add_token_flags(p)
    p.add_argument("--turns", type=types.positive_int, default=2, help="requests per user")
    p.add_argument(
        "--slo",
        metavar="TARGETS",
        help='targets, e.g. "p99_response<=20s,ttft_p99<=2s" (docs/planning.md)',
    )
    p.add_argument("--baseline", type=_baseline, default="auto",
                   help="tensor-parallel baseline preset, 'auto' or 'none'")  # fmt: skip
    p.add_argument("--draws", type=types.non_negative_int, default=2,
                   help="spreads of users over clusters priced per allocation, in pairs "
                   "around the mix (averaged); 0: users split in exact proportion")  # fmt: skip
    p.add_argument("--jobs", type=types.positive_int, default=os.cpu_count() or 1,
                   help="processes simulating pools")  # fmt: skip
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="workload seed")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    g = p.add_argument_group("deployment")
    g.add_argument("--replica-url", default=None, metavar="TEMPLATE",
                   help="replica URLs in gateway.yaml: {cluster} {index} {n} {port} "
                   "(default: the Kubernetes pods of DIR/kubernetes)")  # fmt: skip
    g.add_argument("--first-port", type=types.port, default=8001,
                   help="{port} of the first replica (then one up per replica)")  # fmt: skip
    g.add_argument("--model", metavar="DIR", help="router model the gateway loads")
    g.add_argument(
        "--k8s-base",
        metavar="DIR",
        help="the gateway's kustomization (deploy/kubernetes/base) to include",
    )
    g.add_argument("--k8s-image", default=None, metavar="IMAGE", help="expert server image")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_overrides(p)
    p.set_defaults(func=run)


def _baseline(text: str) -> str:
    return text if text in ("auto", "none") else types.preset(text)


def run(args: argparse.Namespace) -> int:
    from expert_router.planner.outputs import write_outputs

    inputs = _inputs(args)
    plan = _search(inputs, quiet=args.quiet)
    files = write_outputs(
        Path(args.out), plan,
        replica_url=args.replica_url, first_port=args.first_port, model_dir=args.model,
        k8s_base=Path(args.k8s_base) if args.k8s_base else None, k8s_image=args.k8s_image,
    )  # fmt: skip
    _print(plan, files)
    return 0


def _inputs(args: argparse.Namespace) -> PlanInputs:
    """The planning inputs from the flags; usage errors before anything is simulated."""
    from expert_router.bench.mix import cluster_weights, describe_mix
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.virtual import SimWorkload
    from expert_router.planner.measured import read_mix
    from expert_router.planner.plan import PlanInputs, tp_baseline
    from expert_router.planner.slo import parse_slo

    targets = tuple(parse_slo(args.slo)) if args.slo is not None else ()
    if args.mix_from:
        measured = read_mix(args.mix_from)
        weights = measured.weights(args.clusters)
        mix = "; ".join([measured.describe(), *measured.notes])
    else:
        k = args.clusters or DEFAULT_CLUSTERS
        types.check_distribution(args.mix, k)
        weights = cluster_weights(args.mix, k).tolist()
        mix = describe_mix(args.mix, k)
    over = overrides(args)
    options = _options(args.preset, len(weights), over)
    needed = sum(min(p.tp for p in opts) for opts in options)
    if needed > args.gpus:
        raise UsageError(f"--gpus: {args.gpus} GPUs cannot hold one replica for each of the "
                         f"{len(weights)} clusters (that needs {needed})")  # fmt: skip
    workload = SimWorkload(
        users=args.users, output_tokens=args.output_tokens, base_tokens=args.base_tokens,
        continuation_tokens=args.continuation_tokens, jitter=args.jitter, turns=args.turns,
        clusters=len(weights), ramp_s=args.users / args.rate if args.rate else 0.0,
        seed=args.seed,
    )  # fmt: skip
    _check_context(workload, [p for opts in options for p in opts])
    if args.baseline == "none":
        baseline = None
    elif args.baseline == "auto":
        baseline = tp_baseline(options[0][0], args.gpus)
    else:
        baseline = get_preset(args.baseline, **over)
    return PlanInputs(
        gpus=args.gpus, options=options, weights=tuple(weights), workload=workload,
        targets=targets, baseline=baseline, draws=args.draws, jobs=args.jobs, mix=mix,
    )  # fmt: skip


def _check_context(w: SimWorkload, presets: list[Preset]) -> None:
    """A usage error when the longest request (the last turn: the history before it, padded,
    plus its answer) would not fit a preset's context: every request would fail."""
    prompt = w.base_tokens + w.jitter
    for _ in range(w.turns - 1):
        prompt = max(
            w.continuation_tokens + w.jitter, prompt + w.output_tokens + w.followup_min_tokens
        )
    longest = prompt + w.output_tokens
    for preset in presets:
        if longest > preset.context:
            raise UsageError(
                f"--output-tokens: prompts and answers of up to {longest} tokens "
                f"exceed preset {preset.name}'s context of {preset.context}"
            )


def _options(
    specs: list[str], clusters: int, over: dict[str, Any]
) -> tuple[tuple[Preset, ...], ...]:
    """Per cluster, the presets it may run: ``NAME`` sets every cluster, ``IDS=NAME|...`` some;
    later flags win."""
    from expert_router.emulator.presets import get_preset

    chosen: dict[int, tuple[Preset, ...]] = {}
    for spec in specs:
        ids, sep, names = spec.rpartition("=")
        presets = tuple(get_preset(n.strip(), **over) for n in names.split("|"))
        targets = [int(c) for c in ids.split(",")] if sep else list(range(clusters))
        for c in targets:
            if c >= clusters:
                raise UsageError(f"--preset {spec}: cluster {c} is beyond the {clusters} clusters")
            chosen[c] = presets
    missing = [c for c in range(clusters) if c not in chosen]
    if missing:
        raise UsageError(f"--preset: cluster {missing[0]} has no preset (give NAME for all)")
    return tuple(chosen[c] for c in range(clusters))


def _search(inputs: PlanInputs, *, quiet: bool) -> Plan:
    """``make_plan`` with a progress bar on stderr: pools simulated, GPUs placed."""
    from rich.progress import Progress

    from expert_router.console import make_console
    from expert_router.planner.plan import make_plan

    console = make_console(stderr=True)
    with Progress(console=console, transient=True, disable=quiet) as progress:
        pools = progress.add_task("simulating pools", total=None)
        placed = progress.add_task("placing GPUs", total=inputs.gpus)
        plan = make_plan(
            inputs,
            on_pools=lambda n: progress.advance(pools, n),
            on_placed=lambda g: progress.update(placed, completed=g),
        )
    if not quiet:
        t = plan.timing
        console.print(
            f"planned in {t['wall_s']:.1f} s: {t['pools_simulated']} pools simulated, "
            f"{t['allocations_priced']:,} allocations priced, {t['jobs']} processes"
        )
    return plan


def _print(plan: Plan, files: list[Path]) -> None:
    """The plan per cluster and beside its baselines, on stdout (the report's units)."""
    from rich.table import Table

    from expert_router.bench.columns import METRICS, fmt, header, unit_for
    from expert_router.bench.summary import get_path
    from expert_router.console import make_console
    from expert_router.planner.report import KEYS, PERCENT, baselines

    console = make_console()
    best = plan.best
    uniform = plan.uniform[best.gpus]
    table = Table("cluster", "share %", "users", "preset", "replicas", "uniform",
                  "p99 resp. (s)", "uniform p99 (s)", title=f"plan: {best.gpus} GPUs",
                  title_justify="left")  # fmt: skip
    for c, (r, ur) in enumerate(zip(best.prediction.clusters, uniform.prediction.clusters,
                                    strict=True)):  # fmt: skip
        table.add_row(
            str(c),
            f"{plan.inputs.weights[c] * 100:.1f}",
            str(r["users"]),
            best.alloc[c][0],
            str(r["replicas"]),
            str(ur["replicas"]),
            f"{r['p99_response_time'] or 0:.2f}",
            f"{ur['p99_response_time'] or 0:.2f}",
        )
    console.print(table)
    cols = baselines(plan)
    compare = Table("predicted", *(name for name, _ in cols), title_justify="left")
    for key in KEYS:
        unit = unit_for(METRICS[key], [get_path(p.prediction.metrics, key) for _, p in cols])
        compare.add_row(
            header(key, unit), *(fmt(get_path(p.prediction.metrics, key), unit) for _, p in cols)
        )
    if plan.inputs.targets:
        compare.add_row("attainment (%)", *(fmt(p.prediction.attainment, PERCENT) for _, p in cols))
        compare.add_row("meets targets", *("yes" if plan.meets(p) else "no" for _, p in cols))
    console.print(compare)
    if plan.inputs.targets:
        smallest = plan.smallest_meeting()
        console.print(
            f"smallest GPU count meeting every target: {smallest.gpus}"
            if smallest
            else f"no GPU count up to {plan.inputs.gpus} meets every target"
        )
    console.print("wrote " + ", ".join(str(f) for f in files))
