"""``expert-router demo``: the whole system in a few minutes on a laptop.

An emulated 8-expert fleet and the gateway (bundled classifier) in a background loop, a short
live sweep through the gateway, the paper's sweep for A-D in virtual time, and one HTML report
overlaying A-D (plus the live sweep's own report). Every server stops on exit, error or Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from expert_router.console import make_console
from expert_router.experiment.index import Part, write_index
from expert_router.experiment.paper import (
    CONFIGS,
    N_EXPERTS,
    PAPER_USERS,
    Protocol,
    bench_sweep,
    simulate_config,
)
from expert_router.experiment.studies import V1

DEFAULT_OUT = Path("demo-out")
LIVE_USERS = (1, 8, 32, 64)


@dataclass
class DemoSettings:
    """What the demo runs; the defaults finish in about two minutes on two cores."""

    out: Path = DEFAULT_OUT
    preset: str = "cpu-tiny"
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    live: Protocol = field(
        default_factory=lambda: Protocol(users=LIVE_USERS, repeat=1, output_tokens=32, window_s=1.0)
    )
    simulate: Protocol = field(default_factory=lambda: Protocol(users=PAPER_USERS, repeat=1))
    configs: Sequence[str] = CONFIGS
    distribution: str = "uniform"


@dataclass
class DemoResult:
    """Where the outputs are and how long each step took."""

    out: Path
    report: Path
    live_report: Path
    index: Path
    timings: dict[str, float]
    live_summaries: list[dict[str, Any]]
    sim_summaries: dict[str, list[dict[str, Any]]]
    server_urls: list[str] = field(default_factory=list)
    """The gateway's and the experts' URLs (all stopped by the time the demo returns)."""


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Run every step of the demo; returns the outputs' paths."""
    from expert_router.bench.report import write_comparison
    from expert_router.emulator.presets import get_preset
    from expert_router.experiment.stack import ServerStack, per_cluster

    console = console or make_console(stderr=True)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def step(n: int, text: str) -> None:
        console.rule(f"[bold]step {n}/4[/bold] {text}", align="left")

    step(1, f"starting {N_EXPERTS} emulated experts ({settings.preset}) and the gateway")
    preset = get_preset(settings.preset, **settings.preset_overrides)
    with ServerStack() as stack:
        names = [f"expert-{i}" for i in range(N_EXPERTS)]
        urls = stack.fleet([preset] * N_EXPERTS, model_names=names)
        gateway = stack.gateway(per_cluster(urls))
        for name, url in zip(names, urls, strict=True):
            console.print(f"  {name} ({preset.model_name}) on {url}")
        console.print(f"  gateway (bundled classifier, cluster i -> expert-i) on {gateway}")
        timings["start"] = time.perf_counter() - start

        live = settings.live
        step(2, f"live sweep through the gateway: users {list(live.users)}, "
             f"{live.output_tokens} tokens per answer")  # fmt: skip
        t0 = time.perf_counter()
        live_dir = out / "live"
        about = (f"the gateway (bundled classifier) in front of {N_EXPERTS} emulated experts "
                 f"({preset.description or preset.model_name}), one per topic cluster, served "
                 "in real time on this machine")  # fmt: skip
        live_summaries = bench_sweep(
            gateway, live, settings.distribution, live_dir,
            name=f"live: gateway + {N_EXPERTS}x {settings.preset}",
            log=lambda m: console.print(f"  {m}"), progress=True, meta={"description": about},
        )  # fmt: skip
        timings["live"] = time.perf_counter() - t0
    console.print("  servers stopped")

    sim = settings.simulate
    step(3, f"the paper's sweep in virtual time: {', '.join(settings.configs)}; "
         f"users {_users(sim.users)}; {sim.output_tokens} tokens per answer")  # fmt: skip
    t0 = time.perf_counter()
    series: dict[str, list[dict[str, Any]]] = {}
    dirs: dict[str, Path] = {}
    for cfg in settings.configs:
        t1 = time.perf_counter()
        config = V1.config(cfg)
        dirs[config.label] = out / "simulate" / cfg
        series[config.label] = simulate_config(
            config, sim, settings.distribution, dirs[config.label]
        )
        console.print(f"  {config.label}: {time.perf_counter() - t1:.1f} s wall")
    timings["simulate"] = time.perf_counter() - t0

    step(4, "writing the report")
    t0 = time.perf_counter()
    configs = ", ".join(settings.configs)
    title = f"Expert Router demo: configurations {configs} in virtual time"
    write_comparison(out, series, title=f"{title} ({settings.distribution} mix)", sources=dirs)
    live_series = {f"live: gateway + {N_EXPERTS}x {settings.preset}": live_summaries}
    index = write_index(
        out,
        "Expert Router demo",
        [
            Part(
                f"The paper's configurations {configs}, modelled in virtual time",
                out / "report.html",
                series,
                dirs,
            ),
            Part(
                "Live: users through the gateway to an emulated fleet",
                live_dir / "report.html",
                live_series,
            ),
        ],  # fmt: skip
        intro="The demo started an emulated fleet and the gateway on this machine, drove "
        "them live with simulated users, stopped them, then modelled the paper's "
        "configurations in virtual time. Each part below says what ran and what it showed.",
    )
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    return DemoResult(
        out=out,
        report=out / "report.html",
        live_report=live_dir / "report.html",
        index=index,
        timings=timings,
        live_summaries=live_summaries,
        sim_summaries=series,
        server_urls=[gateway, *urls],
    )


def _users(users: Sequence[int]) -> str:
    if len(users) > 4:
        return f"{users[0]}, {users[1]}, ..., {users[-1]}"
    return ", ".join(map(str, users))
