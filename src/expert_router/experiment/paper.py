"""The paper's protocol and its runs, live or in virtual time, for either study (v1 or v2).

Users (v1: 1, 100..1000; v2: 100, 500, 1000); 10 repetitions; base (335 ± 30 tokens) +
continuation (1535 ± 30) prompts; 1200 output tokens each. Baselines (one tensor-parallel
engine) are sent directly; experts through the gateway. Each configuration's sweep goes to
``OUT/<dist>/<config>/``, the overlay of all to ``OUT/<dist>/report.html`` and what the report
needs to describe the run to ``OUT/<dist>/experiment.json`` (``experiment.describe``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expert_router.bench.defaults import BASE_TOKENS, CONTINUATION_TOKENS, JITTER, OUTPUT_TOKENS
from expert_router.errors import ConfigError
from expert_router.experiment.studies import N_EXPERTS, V1, V1_USERS, Config, Study

CONFIGS = V1.ids
PAPER_USERS = V1_USERS
DISTRIBUTIONS = ("uniform", "normal")
LABELS = {c.id: c.label for c in V1.configs}
NORMAL_SD = 2.0
"""Spread of the ``normal`` mix over the 8 clusters (K / 4): see ``Protocol.mix``."""

Log = Callable[[str], None]

__all__ = ["CONFIGS", "DISTRIBUTIONS", "LABELS", "N_EXPERTS", "PAPER_USERS", "Protocol"]


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
    normal_sd: float = NORMAL_SD
    """Standard deviation, in clusters, of the ``normal`` mix."""
    normal_mean: float | None = None
    """Its centre (cluster index); the middle of the clusters, 3.5 of 0..7, by default."""
    paper_gateway: bool = False
    """Add the paper's measured gateway latency (442 ± 302 ms) to every routed request."""

    def __post_init__(self) -> None:
        if not self.users or min(self.users) < 1:
            raise ConfigError("user counts must be >= 1")
        if self.repeat < 1:
            raise ConfigError(f"repeat must be >= 1, got {self.repeat}")
        if not self.normal_sd > 0:
            raise ConfigError(f"the normal mix's sd must be > 0, got {self.normal_sd}")

    def mix(self, distribution: str, clusters: int = N_EXPERTS) -> str:
        """The ``bench.mix`` spec of a distribution name. ``normal``: a Gaussian over the
        cluster index 0..K-1 (the classifier's numbering), centre ``normal_mean`` (default
        (K-1)/2), spread ``normal_sd``, discretised and normalised over the K clusters.

        >>> Protocol().mix("normal")
        'normal:3.5,2'
        """
        if distribution != "normal":
            return distribution
        mean = (clusters - 1) / 2 if self.normal_mean is None else self.normal_mean
        return f"normal:{mean:g},{self.normal_sd:g}"


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


def simulate_config(
    config: Config, protocol: Protocol, distribution: str, out: Path, *, name: str | None = None
) -> list[dict[str, Any]]:
    """One configuration's sweep in virtual time (``simulate``'s outputs) under ``out``."""
    from expert_router.emulator.delay import PAPER_GATEWAY
    from expert_router.emulator.presets import get_preset
    from expert_router.emulator.sweep import simulate_sweep
    from expert_router.emulator.virtual import SimWorkload

    workload = SimWorkload(
        users=protocol.users[0],
        output_tokens=protocol.output_tokens,
        base_tokens=protocol.base_tokens,
        continuation_tokens=protocol.continuation_tokens,
        jitter=protocol.jitter,
        distribution=protocol.mix(distribution),
        gateway=PAPER_GATEWAY if protocol.paper_gateway and config.routed else None,
        seed=protocol.seed,
    )
    return simulate_sweep(
        get_preset(config.preset),
        workload,
        protocol.users,
        out,
        experts=config.experts,
        repetitions=protocol.repeat,
        window_s=protocol.window_s,
        name=name or config.label,
    )


def live_config(
    config: Config,
    protocol: Protocol,
    distribution: str,
    out: Path,
    *,
    preset_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    log: Log = lambda _m: None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One configuration live: emulated fleet (+ gateway for routed ones), driven by the user
    simulator; every server stops when this returns or raises."""
    from expert_router.emulator.presets import get_preset
    from expert_router.experiment.stack import ServerStack, per_cluster

    preset = get_preset(config.preset, **(preset_overrides or {}))
    with ServerStack() as stack:
        urls = stack.fleet([preset] * config.experts)
        target = stack.gateway(per_cluster(urls)) if config.routed else urls[0]
        how = f"through the gateway ({config.experts} experts)" if config.routed else "directly"
        log(f"{config.id}: {preset.model_name} {how} at {target}")
        n, what = config.experts, preset.description or preset.model_name
        about = (f"{n} emulated engine{'s' if n > 1 else ''} ({what}) in real time, "
                 + ("one per topic cluster, behind the gateway (bundled classifier)"
                    if config.routed else "addressed directly"))  # fmt: skip
        return bench_sweep(
            target, protocol, distribution, out, name=name or config.label,
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
        distribution=protocol.mix(distribution),
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
    study: Study = V1,
    configs: Sequence[str] | None = None,
    distributions: Sequence[str] = ("uniform",),
    protocol: Protocol | None = None,
    preset_overrides: dict[str, Any] | None = None,
    log: Log = lambda _m: None,
    progress: bool = False,
) -> dict[str, Path]:
    """Every (distribution, configuration) sweep of ``study``, then one comparison report and
    its ``experiment.json`` per distribution; returns {distribution: report directory}."""
    if mode not in ("live", "simulate"):
        raise ConfigError(f"mode must be 'live' or 'simulate', got {mode!r}")
    from expert_router.bench.report import write_comparison
    from expert_router.experiment.describe import describe, write_description

    protocol = protocol or Protocol(users=study.users, repeat=study.repeat)
    if protocol.paper_gateway and mode != "simulate":
        raise ConfigError("--paper-gateway applies to --simulate runs (virtual time) only")
    chosen = [study.config(c) for c in (configs or study.ids)]
    reports: dict[str, Path] = {}
    for dist in distributions:
        series: dict[str, list[dict[str, Any]]] = {}
        dirs: dict[str, Path] = {}
        for cfg in chosen:
            t0 = time.perf_counter()
            sweep_dir = Path(out) / dist / cfg.id
            dirs[cfg.label] = sweep_dir
            if mode == "simulate":
                series[cfg.label] = simulate_config(cfg, protocol, dist, sweep_dir)
            else:
                series[cfg.label] = live_config(
                    cfg, protocol, dist, sweep_dir, preset_overrides=preset_overrides,
                    log=log, progress=progress,
                )  # fmt: skip
            log(f"{dist} {cfg.label}: {len(protocol.users)} user counts in "
                f"{time.perf_counter() - t0:.1f} s -> {sweep_dir}")  # fmt: skip
        report_dir = Path(out) / dist
        gw = ", paper gateway" if protocol.paper_gateway else ""
        title = f"{study.title} ({mode}, {dist} load{gw})"
        write_comparison(report_dir, series, title=title, sources=dirs)
        about = describe(study, chosen, protocol, dist, mode, preset_overrides)
        write_description(report_dir, about)
        reports[dist] = report_dir
    return reports
