"""A bench sweep: for each user count, ``repeat`` runs of the workload, summarised and plotted.

Writes ``DIR/users-<N>/records-rep<K>.parquet`` after each repetition (only one repetition's
records are held in memory), ``DIR/users-<N>/summary.json`` after each user count, and refreshes
``DIR/sweep.csv``, the PNGs and ``DIR/report.html``, so an interrupted sweep keeps its results.
A user count whose every request failed ends the sweep (larger counts would fail the same).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from expert_router import __version__
from expert_router.bench.client import Counters, run_users
from expert_router.bench.columns import METRICS, fmt, unit_for
from expert_router.bench.progress import Progress
from expert_router.bench.protocols import ClientSettings
from expert_router.bench.records import RequestRecord
from expert_router.bench.report import users_dir, write_sweep
from expert_router.bench.store import (
    SUMMARY_FILE,
    rep_records_file,
    write_records,
    write_summary,
)
from expert_router.bench.summary import combine, get_path, summarize_run
from expert_router.bench.workers import START_DELAY_S, run_loop, run_sharded
from expert_router.bench.workload import UserPlan, Workload


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """How to drive the target: user counts, repetitions, protocol, processes."""

    settings: ClientSettings
    users: Sequence[int] = (1,)
    repeat: int = 1
    protocol: str = "openai"
    workers: int | None = None
    """Worker processes; ``None`` = one per ``users_per_worker`` users, at most the CPU count."""
    users_per_worker: int = 500
    ramp_s: float = 0.0
    window_s: float = 60.0
    name: str = "run"
    meta: dict[str, Any] = field(default_factory=dict)

    def workers_for(self, users: int) -> int:
        if self.workers is not None:
            return max(1, min(self.workers, users))
        want = math.ceil(users / max(1, self.users_per_worker))
        return max(1, min(want, os.cpu_count() or 1, users))


def run_once(
    workload: Workload,
    plans: Sequence[UserPlan],
    config: SweepConfig,
    *,
    users: int,
    repetition: int,
    counters: Counters,
    on_progress: Callable[[Counters], None] | None = None,
) -> tuple[list[RequestRecord], int]:
    """One run of ``plans`` (all users concurrently); returns its records and its start
    (``perf_counter_ns``) that their times are relative to."""
    workers = config.workers_for(users)
    if workers <= 1:
        t0_ns = time.perf_counter_ns()
        records: list[RequestRecord] = run_loop(
            run_users(
                plans,
                workload.config,
                protocol=config.protocol,
                settings=config.settings,
                users=users,
                repetition=repetition,
                t0_ns=t0_ns,
                ramp_s=config.ramp_s,
                counters=counters,
            )
        )
        return records, t0_ns
    t0_ns = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
    records = run_sharded(
        plans,
        workload.config,
        workers=workers,
        protocol=config.protocol,
        settings=config.settings,
        users=users,
        repetition=repetition,
        ramp_s=config.ramp_s,
        on_progress=on_progress,
        t0_ns=t0_ns,
    )
    return records, t0_ns


def run_sweep(
    workload: Workload,
    config: SweepConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    on_run: Callable[[list[RequestRecord], int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every user count ``repeat`` times; write and return one summary per user count.

    ``on_run(records, t0_ns)`` sees each run's records before they are summarised.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(
        json.dumps(
            {
                "version": __version__,
                "protocol": config.protocol,
                "settings": {**asdict(config.settings), "api_key": None},
                "users": list(config.users),
                "repeat": config.repeat,
                "workload": asdict(workload.config),
                "cluster_weights": workload.weights.tolist(),
                "cluster_prompts": workload.cluster_sizes(),
                **config.meta,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    progress = progress or Progress(enabled=False)
    about = {  # what reports say about this run (bench.narrative)
        "target": config.settings.target,
        "protocol": config.protocol,
        "workload": asdict(workload.config),
        "clusters": len(workload.weights),
        **config.meta,
    }
    summaries: list[dict[str, Any]] = []
    for users in config.users:
        per_rep: dict[int, dict[str, Any]] = {}
        for rep in range(config.repeat):
            plans = workload.plan(users, seed=users * 1000 + rep)
            label = f"{users} users, rep {rep + 1}/{config.repeat}"
            counters = progress.show(label, 2 * users)
            try:
                run, t0_ns = run_once(
                    workload, plans, config, users=users, repetition=rep,
                    counters=counters, on_progress=progress.set,
                )  # fmt: skip
            finally:
                progress.close()
            if on_run is not None:
                on_run(run, t0_ns)
            # one repetition at a time: summarise, write, let its records go
            per_rep[rep] = summarize_run(run, window_s=config.window_s)
            write_records(users_dir(out_dir, users) / rep_records_file(rep), run)
            errors = sum(r.status == "error" for r in run)
            log(f"{label}: {len(run)} requests, {errors} errors")
            del run
        summary = {**combine(per_rep, users=users, window_s=config.window_s), "bench": about}
        write_summary(users_dir(out_dir, users) / SUMMARY_FILE, summary)
        summaries.append(summary)
        write_sweep(out_dir, summaries, name=config.name)
        log(_headline(summary))
        totals = summary["totals"]
        if totals["requests"] and totals["errors"] == totals["requests"]:
            log(f"every request of {users} users failed: the sweep stops here")
            break
    return summaries


def _headline(s: dict[str, Any]) -> str:
    """One log line per user count, with the report's labels and units."""
    keys = ("ttft.base.mean", "ttft.continuation.mean", "tpot.mean", "session_throughput")
    parts = []
    for key in keys:
        value, short = get_path(s, key), METRICS[key].short
        unit = unit_for(METRICS[key], [value])
        parts.append(f"{short} {fmt(value, unit, with_unit=unit.name not in short.split())}")
    return f"users={s['users']}: {'; '.join(parts)}; errors {s['errors']}"
