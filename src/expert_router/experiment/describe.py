"""What a study's report needs to describe its run, as data: ``experiment.json``.

Beside each ``report.html``: the study, whether the numbers are modelled (virtual time) or
emulated live, the load mix and the paper-gateway condition in words, and every configuration
(its words, preset, GPU spec and where that spec came from, KV capacity and its source).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from expert_router.experiment.paper import Protocol
from expert_router.experiment.studies import Config, Study

DESCRIPTION_FILE = "experiment.json"
DOCS = "docs/reproduction.md"
NO_GATEWAY = "no gateway latency in virtual time (ours costs under 1 ms: docs/benchmarks.md)"

NUMBERS = {
    "simulate": (
        "modelled",
        "virtual-time simulation of the emulator's continuous-batching engines; every step "
        "time comes from the performance model fitted to measured H200 step times (the h100 "
        "spec is derived from it), not from a run of the paper's system",
    ),
    "live": (
        "emulated",
        "emulated expert servers in real time, driven by the user simulator over HTTP (through "
        "the routing gateway for routed configurations); GPU step times modelled as in "
        "simulate mode unless fixed timings were given",
    ),
}


def _config(c: Config, overrides: dict[str, Any] | None) -> dict[str, Any]:
    from expert_router.emulator.presets import get_preset

    p = get_preset(c.preset, **(overrides or {}))
    m, spec = p.step_model(), p.gpu_spec
    fit = spec.provenance.fit
    return {
        "id": c.id,
        "label": c.label,
        "words": c.words,
        "routed": c.routed,
        "engines": c.experts,
        "gpus": c.experts * p.tp,
        "preset": p.name,
        "model": p.shape.name,
        "model_name": p.model_name,
        "tp": p.tp,
        "weight_dtype": p.weight_dtype,
        "kv_dtype": p.kv_dtype,
        "compute_dtype": p.compute_dtype,
        "max_batch": p.max_batch,
        "kv_tokens": p.kv_capacity,
        "kv_source": p.kv_source,
        "kv_tokens_from_memory": p.physical_kv_tokens(),
        "weights_gb_per_gpu": round(m.weight_bytes / 1e9, 2),
        "tpot_batch1_ms": round(m.decode_time(1, 512) * 1e3, 2),
        "ttft_335_tokens_ms": round(m.prefill_time(335) * 1e3, 2),
        "gpu": {
            "spec": spec.name,
            "source": spec.provenance.source,
            "method": spec.provenance.method,
            "fit_median_abs_err_pct": fit.get("median_abs_err_pct"),
            "fit_worst_abs_err_pct": fit.get("worst_abs_err_pct"),
        },
        "fixed_timing": p.tpot_ms is not None,
    }


def describe(
    study: Study,
    configs: Sequence[Config],
    protocol: Protocol,
    distribution: str,
    mode: str,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The description of one report (one distribution of one study run)."""
    from expert_router.bench.mix import cluster_weights
    from expert_router.emulator.delay import PAPER_GATEWAY

    mix = protocol.mix(distribution)
    numbers, how = NUMBERS[mode]
    words = {
        "uniform": "every cluster, hence every expert, gets 1/8 of the users",
        "normal": f"a Gaussian over the cluster index ({mix.partition(':')[2]} = centre, sd in "
        "clusters), discretised over the 8 clusters: the middle experts get the most users",
    }.get(distribution, mix)
    return {
        "study": study.name,
        "title": study.title,
        "source": study.source,
        "mode": mode,
        "numbers": numbers,
        "numbers_how": how,
        "distribution": {
            "name": distribution,
            "spec": mix,
            "weights": [round(float(w), 4) for w in cluster_weights(mix, 8)],
            "words": words,
        },
        "paper_gateway": {
            "enabled": protocol.paper_gateway,
            "mean_ms": PAPER_GATEWAY.mean_s * 1e3,
            "sd_ms": PAPER_GATEWAY.sd_s * 1e3,
            "words": PAPER_GATEWAY.describe() if protocol.paper_gateway else NO_GATEWAY,
        },
        "protocol": {
            "users": list(protocol.users),
            "repetitions": protocol.repeat,
            "base_tokens": protocol.base_tokens,
            "continuation_tokens": protocol.continuation_tokens,
            "jitter_tokens": protocol.jitter,
            "output_tokens": protocol.output_tokens,
            "window_s": protocol.window_s,
            "seed": protocol.seed,
        },
        "configurations": [_config(c, overrides) for c in configs],
        "docs": DOCS,
    }


def write_description(report_dir: Path, description: dict[str, Any]) -> Path:
    """Write ``description`` (``describe``'s) as ``experiment.json`` into ``report_dir``."""
    path = Path(report_dir) / DESCRIPTION_FILE
    path.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return path
