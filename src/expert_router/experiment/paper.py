"""The paper's protocol (Pichlmeier et al. 2024) and its runs, live or in virtual time.

Users 1, 100..1000; 10 repetitions; base (335 ± 30 tokens) + continuation (1535 ± 30) prompts;
1200 output tokens each. Baseline A (one tensor-parallel engine) is sent directly; B-D (eight
experts) through the gateway. Each configuration's sweep goes to ``OUT/<dist>/<cfg>/``, the
overlay of all of them to ``OUT/<dist>/report.html`` (``bench.report.write_comparison``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.errors import ConfigError

CONFIGS = ("A", "B", "C", "D")
PAPER_USERS = (1, *range(100, 1001, 100))
DISTRIBUTIONS = ("uniform", "normal")
N_EXPERTS = 8
LABELS = {
    "A": "A: 70B FP16 TP8 (direct)",
    "B": "B: 8x 70B INT8 (router)",
    "C": "C: 8x 13B FP16 (router)",
    "D": "D: 8x 13B FP8 (router)",
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class Protocol:
    """What every configuration is driven with."""

    users: tuple[int, ...] = PAPER_USERS
    repeat: int = 10
    output_tokens: int = OUTPUT_TOKENS
    base_tokens: int = BASE_TOKENS
    continuation_tokens: int = CONTINUATION_TOKENS
    jitter: int = JITTER
    window_s: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.users or min(self.users) < 1:
            raise ConfigError("user counts must be >= 1")
        if self.repeat < 1:
            raise ConfigError(f"repeat must be >= 1, got {self.repeat}")


def parse_list(spec: str, allowed: Sequence[str], what: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"], each checked against ``allowed`` (case kept as in allowed)."""
    lookup = {a.lower(): a for a in allowed}
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.lower() not in lookup:
            raise ConfigError(f"{what}: unknown {part!r}, expected some of {','.join(allowed)}")
        out.append(lookup[part.lower()])
    if not out:
        raise ConfigError(f"{what}: give at least one of {','.join(allowed)}")
    return list(dict.fromkeys(out))


def is_direct(config: str) -> bool:
    """The baseline is one tensor-parallel server addressed directly (no gateway)."""
    return config == "A"


def simulate_config(
    config: str, protocol: Protocol, distribution: str, out: Path, *, name: str | None = None
) -> list[dict[str, Any]]:
    """One configuration's sweep in virtual time (``simulate``'s outputs) under ``out``."""
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.sweep import simulate_sweep
    from expert_router.emulator.virtual import SimWorkload, default_experts

    preset = get_preset(config)
    workload = SimWorkload(
        users=protocol.users[0],
        output_tokens=protocol.output_tokens,
        base_tokens=protocol.base_tokens,
        continuation_tokens=protocol.continuation_tokens,
        jitter=protocol.jitter,
        distribution=distribution,
        seed=protocol.seed,
    )
    return simulate_sweep(
        preset,
        workload,
        protocol.users,
        out,
        experts=default_experts(preset),
        repetitions=protocol.repeat,
        window_s=protocol.window_s,
        name=name or LABELS.get(config, config),
    )


def live_config(
    config: str,
    protocol: Protocol,
    distribution: str,
    out: Path,
    *,
    preset_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    log: Log = lambda _m: None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One configuration live: emulated fleet (+ gateway for B-D), driven by the user
    simulator; every server stops when this returns or raises."""
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.virtual import default_experts
    from expert_router.experiment.stack import ServerStack, per_cluster

    preset = get_preset(config, **(preset_overrides or {}))
    n = default_experts(preset) if is_direct(config) else N_EXPERTS
    with ServerStack() as stack:
        urls = stack.fleet([preset] * n)
        target = urls[0] if is_direct(config) else stack.gateway(per_cluster(urls))
        how = "directly" if is_direct(config) else f"through the gateway ({n} experts)"
        log(f"{config}: {preset.model_name} {how} at {target}")
        what = preset.description or preset.model_name
        about = (f"{n} emulated engine{'s' if n > 1 else ''} ({what}) in real time, "
                 + ("addressed directly" if is_direct(config) else
                    "one per topic cluster, behind the gateway (bundled classifier)"))  # fmt: skip
        return bench_sweep(
            target, protocol, distribution, out, name=name or LABELS.get(config, config),
            log=log, progress=progress, meta={"description": about},
        )  # fmt: skip


def bench_sweep(
    target: str,
    protocol: Protocol,
    distribution: str,
    out: Path,
    *,
    name: str,
    log: Log = lambda _m: None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The user simulator (``bench``) against ``target``; writes its sweep under ``out``
    (``meta``, e.g. a ``description`` of what serves ``target``, goes into its summaries)."""
    from expert_router.bench.progress import Progress
    from expert_router.bench.protocols import ClientSettings
    from expert_router.bench.runner import SweepConfig, run_sweep
    from expert_router.bench.workload import (
        ClassifierLabeller,
        Workload,
        WorkloadConfig,
        load_documents,
    )

    cfg = WorkloadConfig(
        base_tokens=protocol.base_tokens,
        continuation_tokens=protocol.continuation_tokens,
        output_tokens=protocol.output_tokens,
        jitter=protocol.jitter,
        distribution=distribution,
        seed=protocol.seed,
    )
    workload = Workload(load_documents(None), ClassifierLabeller(None), cfg)
    sweep = SweepConfig(
        settings=ClientSettings(target=target, model="default"),
        users=protocol.users,
        repeat=protocol.repeat,
        window_s=protocol.window_s,
        name=name,
        meta=dict(meta or {}),
    )
    with Progress(enabled=progress) as bar:
        return run_sweep(workload, sweep, out, progress=bar, log=log)


def run_paper(
    out: Path,
    *,
    mode: str,
    configs: Sequence[str] = CONFIGS,
    distributions: Sequence[str] = ("uniform",),
    protocol: Protocol | None = None,
    preset_overrides: dict[str, Any] | None = None,
    log: Log = lambda _m: None,
    progress: bool = False,
) -> dict[str, Path]:
    """Every (distribution, configuration) sweep, then one comparison report per distribution;
    returns {distribution: report directory}."""
    if mode not in ("live", "simulate"):
        raise ConfigError(f"mode must be 'live' or 'simulate', got {mode!r}")
    from expert_router.bench.report import write_comparison

    protocol = protocol or Protocol()
    reports: dict[str, Path] = {}
    for dist in distributions:
        series: dict[str, list[dict[str, Any]]] = {}
        dirs: dict[str, Path] = {}
        for cfg in configs:
            t0 = time.perf_counter()
            sweep_dir = Path(out) / dist / cfg
            label = LABELS.get(cfg, cfg)
            dirs[label] = sweep_dir
            if mode == "simulate":
                series[label] = simulate_config(cfg, protocol, dist, sweep_dir)
            else:
                series[label] = live_config(
                    cfg, protocol, dist, sweep_dir, preset_overrides=preset_overrides,
                    log=log, progress=progress,
                )  # fmt: skip
            log(f"{dist} {label}: {len(protocol.users)} user counts in "
                f"{time.perf_counter() - t0:.1f} s -> {sweep_dir}")  # fmt: skip
        report_dir = Path(out) / dist
        title = f"Expert Router vs baseline ({mode}, {dist} load)"
        write_comparison(report_dir, series, title=title, sources=dirs)
        reports[dist] = report_dir
    return reports


def with_users(protocol: Protocol, users: Sequence[int]) -> Protocol:
    """``protocol`` with other user counts."""
    return replace(protocol, users=tuple(users))
