"""A user sweep in virtual time, written as the live bench writes it.

For each user count: simulate the repetitions, summarise them (with where the step times come
from: ``timing``), write the records and ``summary.json`` under ``users-<N>/``; then the
sweep's CSV, plots and HTML report. Used by ``expert-router simulate`` and by the paper
experiment, so both produce the same outputs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from expert_router.bench.report import users_dir, write_sweep
from expert_router.bench.store import write_run
from expert_router.bench.summary import summarize
from expert_router.emulator.presets import Preset
from expert_router.emulator.virtual import SimWorkload, simulate_repetitions


def simulate_sweep(
    preset: Preset,
    workload: SimWorkload,
    users: Sequence[int],
    out: Path,
    *,
    experts: int,
    repetitions: int,
    window_s: float = 60.0,
    name: str | None = None,
    on_step: Callable[[int], None] = lambda _n: None,
) -> list[dict[str, Any]]:
    """Simulate ``workload`` at each user count of ``users``; write and return the summaries.

    ``workload.users`` is replaced by each count in turn; ``on_step(n)`` is called after each.
    """
    summaries: list[dict[str, Any]] = []
    timing = timing_source(preset)
    for n in users:
        step = dataclasses.replace(workload, users=n)
        t0 = time.perf_counter()
        records = simulate_repetitions(preset, step, n_engines=experts, repetitions=repetitions)
        summary = summarize(records, users=n, window_s=window_s)
        summary["simulation"] = {
            "preset": preset.model_dump(mode="json"),
            "experts": experts,
            "timing": timing,
            "workload": dataclasses.asdict(step),
            "wall_s": time.perf_counter() - t0,
            "virtual_s": max((r.end for r in records), default=0.0),
        }
        write_run(users_dir(out, n), records, summary)
        summaries.append(summary)
        on_step(n)
    write_sweep(out, summaries, name=name or preset.name)
    return summaries


def timing_source(preset: Preset) -> dict[str, Any]:
    """Where the run's step times come from, for its report: fixed, or a GPU spec's model."""
    if preset.tpot_ms is not None:
        return {"kind": "fixed", "tpot_ms": preset.tpot_ms, "ttft_ms": preset.ttft_ms}
    spec = preset.gpu_spec
    fit = spec.provenance.fit
    return {
        "kind": "step model",
        "gpu": spec.name,
        "source": spec.provenance.source,
        "method": spec.provenance.method,
        "median_abs_err_pct": fit.get("median_abs_err_pct"),
        "worst_abs_err_pct": fit.get("worst_abs_err_pct"),
    }
