"""``expert-router bench``: drive a server with N concurrent users and characterise it.

For each user count, ``--repeat`` runs of the paper's workload (base + continuation prompts,
exactly ``--output-tokens`` each); writes records, summary.json, sweep.csv, PNGs and an HTML
report under ``--out``. ``--calibrate`` measures the client's own timing error instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from expert_router.bench.protocols import PROTOCOLS
from expert_router.cli import args as types
from expert_router.errors import UsageError

DEFAULT_USERS = "1,100,200,...,1000"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark a server with N concurrent users (the paper's workload and metrics)",
        description=(
            "For each user count, --repeat runs of the paper's workload (base + continuation "
            "prompts, exactly --output-tokens each); writes records, summary.json, sweep.csv, "
            "PNG figures and report.html under --out. --calibrate measures the client's own "
            "timing error against a paced reference server instead."
        ),
        formatter_class=types.DefaultsFormatter,
    )
    need = p.add_mutually_exclusive_group(required=True)
    need.add_argument(
        "--target",
        metavar="URL",
        help="base URL of the server to drive: the gateway or an OpenAI-compatible server "
        "(triton-grpc: HOST:PORT)",
    )
    need.add_argument(
        "--calibrate",
        action="store_true",
        help="instead of a target: measure the client's timing error against a paced "
        "reference server",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--protocol", default="openai", choices=sorted(PROTOCOLS), help="client protocol"
    )
    p.add_argument(
        "--endpoint", choices=("chat", "completions"), default="chat", help="OpenAI endpoint"
    )
    p.add_argument("--served-model", default="default", help="the 'model' field sent")
    p.add_argument("--api-key", help="bearer token sent to the target")
    p.add_argument(
        "--users", type=types.users, default=DEFAULT_USERS, help="user counts, e.g. 1,8,64"
    )
    p.add_argument(
        "--repeat", type=types.positive_int, default=1, help="runs per user count (paper: 10)"
    )
    p.add_argument(
        "--dataset",
        type=Path,
        metavar="FILE",
        help="prompt source: JSONL(.gz) with 'text', or text (default: the built-in C4 sample)",
    )
    types.add_workload_flags(p)
    p.add_argument(
        "--tokenizer",
        metavar="FILE",
        help="HF tokenizer.json to count tokens with (default: the built-in tokenizer)",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="router model labelling prompts (default: the bundled one)",
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="client processes, or 'auto' (one per --users-per-worker users)",
    )
    p.add_argument(
        "--users-per-worker", type=types.positive_int, default=500, help="users per client process"
    )
    p.add_argument(
        "--ramp", type=types.non_negative_float, default=0.0, help="seconds over which users start"
    )
    p.add_argument("--window", type=types.positive_float, default=60.0, help="time-bucket width, s")
    p.add_argument(
        "--request-timeout", type=types.positive_float, default=900.0, help="per request, s"
    )
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="workload seed")
    p.add_argument("--name", help="configuration name in reports (default: the --out folder)")
    p.add_argument(
        "--calib-ttft-ms", type=types.positive_float, default=100.0, help="--calibrate: TTFT, ms"
    )
    p.add_argument(
        "--calib-tpot-ms", type=types.positive_float, default=100.0, help="--calibrate: TPOT, ms"
    )
    p.add_argument("--quiet", action="store_true", help="no live progress display")
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from expert_router.bench.probe import check_target, describe_failures, probe

    # the arguments and the target first, before the heavy imports
    workers = None if args.workers == "auto" else _int(args.workers, "--workers")
    users = types.parse_users(args.users)
    if args.target:
        check_target(args.target, args.protocol)
        probe(args.target, args.protocol)

    from expert_router.bench.progress import Progress
    from expert_router.bench.protocols import ClientSettings
    from expert_router.bench.runner import SweepConfig, run_sweep
    from expert_router.bench.workload import (
        ClassifierLabeller,
        Workload,
        WorkloadConfig,
        load_documents,
    )

    log = _log(args.quiet)
    cfg = WorkloadConfig(
        base_tokens=args.base_tokens,
        continuation_tokens=args.continuation_tokens,
        output_tokens=args.output_tokens,
        jitter=args.jitter,
        distribution=args.distribution,
        seed=args.seed,
        tokenizer=args.tokenizer,
    )
    workload = Workload(load_documents(args.dataset), ClassifierLabeller(args.model), cfg)
    log(f"{len(workload.prompts)} base prompts; per cluster: {workload.cluster_sizes()}")

    def sweep(target: str, on_run: Any = None) -> list[dict[str, Any]]:
        config = SweepConfig(
            settings=ClientSettings(
                target=target,
                model=args.served_model,
                endpoint=args.endpoint,
                api_key=args.api_key,
                request_timeout=args.request_timeout,
            ),
            users=users,
            repeat=args.repeat,
            protocol=args.protocol,
            workers=workers,
            users_per_worker=args.users_per_worker,
            ramp_s=args.ramp,
            window_s=args.window,
            name=args.name or args.out.name,
            meta={"calibrate": args.calibrate},
        )
        with Progress(enabled=not args.quiet) as progress:
            return run_sweep(workload, config, args.out, progress=progress, log=log, on_run=on_run)

    if not args.calibrate:
        summaries = sweep(args.target)
        log(f"wrote {args.out}/report.html")
        failed = describe_failures(summaries)
        if failed:
            print(f"expert-router bench: error: {failed}", file=sys.stderr)
            return 1
        return 0
    return _calibrate(args, sweep, log)


def _calibrate(args: argparse.Namespace, sweep: Any, log: Any) -> int:
    import json

    from expert_router.bench.calibrate import RECV, reference_server, relative_recv, timing_errors

    results: dict[int, list[dict[str, Any]]] = {}

    def on_run(records: list[Any], t0_ns: int) -> None:
        relative_recv(records, t0_ns)
        errs = timing_errors(records, ttft_ms=args.calib_ttft_ms, tpot_ms=args.calib_tpot_ms)
        results.setdefault(records[0].users if records else 0, []).append(errs)
        for r in records:
            r.server_timing.pop(RECV, None)

    with reference_server(args.calib_ttft_ms, args.calib_tpot_ms) as srv:
        sweep(srv.url, on_run)
    report = {
        "ttft_ms": args.calib_ttft_ms,
        "tpot_ms": args.calib_tpot_ms,
        "server_lag_ms": srv.server_lag,
        "runs": {str(u): runs for u, runs in results.items()},
    }
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    print("users  TTFT err mean/p99 (ms)  TPOT err mean/p99 (ms)  token lag p50/p99 (ms)  events/s")
    for u, runs in results.items():
        for e in runs:
            t, p, g = e["ttft_error_ms"], e["tpot_error_ms"], e["token_lag_ms"]
            print(
                f"{u:>5}  {_f(t['mean'])} / {_f(t['p99'])}      {_f(p['mean'])} / {_f(p['p99'])}"
                f"      {_f(g['p50'])} / {_f(g['p99'])}      {_f(e['events_per_s'], 0)}"
            )
    log(f"reference server lag: {srv.server_lag}; wrote {args.out}/calibration.json")
    return 0


def _f(x: Any, digits: int = 3) -> str:
    return f"{x:8.{digits}f}" if isinstance(x, int | float) else "       -"


def _int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: expected an integer or 'auto', got {text!r}") from exc
    if value < 1:
        raise UsageError(f"{flag}: must be >= 1")
    return value


def _log(quiet: bool) -> Any:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log
