"""``expert-router experiment paper|paper-v2``: either version of the paper's study, live
(emulated fleets, gateway in front of the experts) or in virtual time, with per-configuration
sweeps, a comparison report and its description (``experiment.json``) per load mix."""

from __future__ import annotations

import argparse
from typing import Any

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.cli.args import (
    DefaultsFormatter,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    users,
)

_STUDIES = {
    "paper": (
        "A,B,C,D",
        "1,100,200,...,1000",
        "v1 of the paper (Llama 2): configurations A-D, users 1,100..1000",
        "A (70B FP16, tensor parallel over 8 GPUs) is sent directly, B-D (8 experts) through "
        "the gateway",
    ),
    "paper-v2": (
        "tp8-bf16,tp8-awq,experts-70b,experts-8b",
        "100,500,1000",
        "v2 of the paper (Llama 3): TP8 70B baselines vs 8x 70B INT4 and 8x 8B experts",
        "the tensor-parallel Llama 3 70B baselines (BF16 and INT4-AWQ, 8 GPUs) are sent "
        "directly, the 8-expert configurations (70B INT4-AWQ, 8B BF16) through the gateway",
    ),
}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="reproduce a study: 'paper' (v1, A-D) or 'paper-v2' (Llama 3)",
        description="Run a whole study and write its comparison report.",
    )
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, (configs, user_counts, short, served) in _STUDIES.items():
        q = sub.add_parser(
            name,
            help=f"{short}; 10 repetitions, 1200 tokens",
            description=f"The paper's protocol, {short}: 10 repetitions; base + continuation "
            f"prompts; 1200 output tokens. {served[0].upper()}{served[1:]} (live) or simulated "
            "(virtual time). Writes OUT/<distribution>/<config>/ sweeps, "
            "OUT/<distribution>/report.html, experiment.json and OUT/index.html.",
            formatter_class=DefaultsFormatter,
        )
        _add_flags(q, configs, user_counts)


def _add_flags(q: argparse.ArgumentParser, configs: str, user_counts: str) -> None:
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--simulate", dest="mode", action="store_const", const="simulate",
                      help="virtual time (the default): minutes for the whole study")  # fmt: skip
    mode.add_argument("--live", dest="mode", action="store_const", const="live",
                      help="emulated fleets and the gateway in real time (heavy)")  # fmt: skip
    q.set_defaults(mode="simulate")
    q.add_argument("--configs", default=configs, help="configurations to run")
    q.add_argument("--distribution", default="uniform,normal", help="cluster mixes to run")
    q.add_argument("--normal-sd", type=positive_float, default=2.0,
                   help="spread of the normal mix, in clusters (ids 0..7)")  # fmt: skip
    q.add_argument("--normal-mean", type=float, help="centre of the normal mix (default 3.5)")
    q.add_argument("--paper-gateway", action="store_true",
                   help="simulate: add the paper's gateway latency (log-normal, mean 442 ms, "
                   "sd 302 ms) to every routed request")  # fmt: skip
    q.add_argument("--users", type=users, default=user_counts, help="user counts")
    q.add_argument("--repeat", type=positive_int, default=10, help="repetitions per user count")
    q.add_argument(
        "--output-tokens", type=positive_int, default=OUTPUT_TOKENS, help="tokens per answer"
    )
    q.add_argument("--base-tokens", type=positive_int, default=BASE_TOKENS, help="base prompt")
    q.add_argument("--continuation-tokens", type=non_negative_int, default=CONTINUATION_TOKENS,
                   help="continuation prompt, tokens")  # fmt: skip
    q.add_argument("--jitter", type=non_negative_int, default=JITTER, help="± prompt tokens")
    q.add_argument("--window", type=positive_float, default=60.0, help="time-bucket width (s)")
    q.add_argument("--seed", type=non_negative_int, default=0, help="workload seed")
    q.add_argument(
        "--tpot-ms", type=positive_float, help="live: fixed TPOT for every expert (faster)"
    )
    q.add_argument("--ttft-ms", type=non_negative_float, help="live: fixed TTFT (with --tpot-ms)")
    q.add_argument("--out", required=True, help="output directory")
    q.set_defaults(func=run)


def protocol_from_args(args: argparse.Namespace) -> Any:
    """The ``Protocol`` the flags describe (user errors as ``ConfigError``)."""
    from expert_router.cli.args import parse_users
    from expert_router.experiment.paper import Protocol

    return Protocol(
        users=tuple(parse_users(args.users)),
        repeat=args.repeat,
        output_tokens=args.output_tokens,
        base_tokens=args.base_tokens,
        continuation_tokens=args.continuation_tokens,
        jitter=args.jitter,
        window_s=args.window,
        seed=args.seed,
        normal_sd=args.normal_sd,
        normal_mean=args.normal_mean,
        paper_gateway=args.paper_gateway,
    )


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from expert_router.console import make_console
    from expert_router.errors import ConfigError, UsageError
    from expert_router.experiment.paper import DISTRIBUTIONS, parse_list, run_paper
    from expert_router.experiment.studies import STUDIES

    study = STUDIES[args.study]
    try:
        configs = parse_list(args.configs, study.ids, "--configs")
        dists = parse_list(args.distribution, DISTRIBUTIONS, "--distribution")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    protocol = protocol_from_args(args)
    if args.ttft_ms is not None and args.tpot_ms is None:
        raise UsageError("--ttft-ms needs --tpot-ms")
    overrides = {k: v for k in ("tpot_ms", "ttft_ms") if (v := getattr(args, k)) is not None}
    if overrides and args.mode != "live":
        raise UsageError("--tpot-ms/--ttft-ms apply to --live runs only")
    if args.paper_gateway and args.mode != "simulate":
        raise UsageError("--paper-gateway applies to --simulate runs (virtual time) only")
    console = make_console(stderr=True)
    t0 = time.perf_counter()
    gw = "; paper gateway" if args.paper_gateway else ""
    console.print(
        f"[bold]{study.name} experiment[/bold] ({args.mode}): configs {','.join(configs)}; "
        f"load {','.join(dists)}; {len(protocol.users)} user counts x {protocol.repeat} reps{gw}"
    )
    reports = run_paper(
        Path(args.out), mode=args.mode, study=study, configs=configs, distributions=dists,
        protocol=protocol, preset_overrides=overrides,
        log=lambda m: console.print(f"  {m}"), progress=True,
    )  # fmt: skip
    for dist, path in reports.items():
        print(f"{dist}: {path / 'report.html'}")
    print(f"index: {write_study_index(Path(args.out), reports, args.mode, study.name)}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def write_study_index(out: Any, reports: dict[str, Any], mode: str, name: str) -> Any:
    """``OUT/index.html``: per cluster mix, its headline, what ran and the links."""
    from expert_router.bench.report import load_sweep
    from expert_router.experiment.index import Part, write_index

    parts = []
    for dist, path in reports.items():
        dirs = {p.name: p for p in sorted(path.iterdir()) if (p / "report.html").is_file()}
        series = {name: load_sweep(d) for name, d in dirs.items()}
        how = "modelled in virtual time" if mode == "simulate" else "measured live"
        parts.append(Part(f'The "{dist}" cluster mix, {how}', path / "report.html", series, dirs))
    return write_index(out, f"Expert Router: the {name} experiment", parts)
