"""Fitting a ``GPUSpec`` to a measurement file by least squares, and checking it honestly.

``fit_spec`` minimises the squared log-ratio of modelled to measured step times over nine
physical parameters (scipy ``least_squares``); parameters the file cannot identify (no fp8
rows, no prefill) stay at start values from its measured ceilings. ``cross_validate`` refits
with points held out; ``derive`` makes a sibling GPU with other memory bandwidth.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from expert_router.emulator.gpuspec import GPUSpec, Provenance, datasheet_hbm
from expert_router.emulator.measurements import MeasurementFile, Point
from expert_router.emulator.perf import StepModel
from expert_router.errors import ConfigError

# (parameter, what identifies it) in the order of the fitted vector.
PARAMS = (
    ("weight_bytes_per_s", "any point"),
    ("kv_bytes_per_s", "decode"),
    ("gemm_flops.bf16", "bf16"),
    ("gemm_flops.fp8", "fp8"),
    ("attention_flops", "prefill"),
    ("layer_s.bf16", "bf16"),
    ("layer_s.fp8", "fp8"),
    ("overlap", "any point"),
    ("attention_token_s", "decode"),
)
PRIOR_WEIGHT = 1e-3
"""Pull of each log-parameter towards its start value: negligible beside the data (60 points
at a few % each), it only keeps parameters the file does not constrain where they started."""

# Not in a single-GPU measurement: engine and multi-GPU figures, with their sources.
ASSUMED: dict[str, tuple[float, str]] = {
    "link_bytes_per_s": (460e9, "NCCL all-reduce bus bandwidth of 8 NVLink-4 GPUs at large "
                         "messages (nccl-tests busbw 460-480 GB/s); not measured here"),
    "allreduce_latency_s": (10e-6, "order of a small all-reduce within one NVSwitch domain "
                            "under CUDA graphs; an assumption, not measured"),
    "step_overhead_s": (0.5e-3, "engine scheduling, sampling and host sync per iteration "
                        "(TensorRT-LLM class, C++ runtime); an assumption, not measured"),
}  # fmt: skip


def _needs(point: Point) -> set[str]:
    kinds = {"any point", point.model.dtype}
    if point.batch:
        kinds.add("decode")
    if point.prompt:
        kinds.add("prefill")
    return kinds


def _start(mf: MeasurementFile) -> np.ndarray:
    """Start values from the file's ceilings (H200-like defaults where a ceiling is missing)."""
    c = mf.ceilings
    copy = c.get("copy_bytes_per_s", 4.0e12)
    bf16 = c.get("bf16_flops", 8.0e14)
    fp8 = c.get("fp8_flops", 2 * bf16)
    values = [copy, copy, 0.8 * bf16, 0.75 * fp8, 0.5 * bf16, 40e-6, 50e-6, 1.5, 1.5e-9]
    return np.asarray(np.log(values), dtype=float)


def _spec(theta: np.ndarray, base: dict[str, Any]) -> GPUSpec:
    v = np.exp(theta)
    return GPUSpec.model_validate(
        {
            **base,
            "weight_bytes_per_s": v[0],
            "kv_bytes_per_s": v[1],
            "gemm_flops": {"bf16": v[2], "fp8": v[3]},
            "attention_flops": v[4],
            "layer_s": {"bf16": v[5], "fp8": v[6]},
            "overlap": 1.0 + v[7],
            "attention_token_s": v[8],
        }
    )


def predict(spec: GPUSpec, points: Sequence[Point]) -> np.ndarray:
    """Modelled forward time of every point (one GPU's shard: no all-reduce, no engine)."""
    models: dict[str, StepModel] = {}
    out = np.empty(len(points), dtype=float)
    for i, pt in enumerate(points):
        tag = pt.model
        m = models.get(tag.tag)
        if m is None:
            m = models[tag.tag] = StepModel(
                spec, tag.shape, weight_dtype=tag.dtype, kv_dtype="bf16",
                compute_dtype=tag.dtype, tp=tag.tp,
            )  # fmt: skip
        out[i] = m.forward_time(pt.work())
    return out


def errors_pct(spec: GPUSpec, points: Sequence[Point]) -> np.ndarray:
    """Signed error of the model on each point, in % of the measured time."""
    measured = np.array([p.seconds for p in points], dtype=float)
    return np.asarray((predict(spec, points) / measured - 1.0) * 100.0, dtype=float)


def _base(mf: MeasurementFile, name: str) -> dict[str, Any]:
    sms, mib = mf.prop("multi_processor_count"), mf.prop("total_memory")
    if sms is None or mib is None:
        raise ConfigError(f"{mf.path.name}: the device line lacks multi_processor_count or "
                          "total_memory")  # fmt: skip
    hbm = datasheet_hbm(mf.device) or mf.ceilings.get("copy_bytes_per_s", 4.0e12)
    base: dict[str, Any] = {"name": name, "device": mf.device, "memory_gb": mib * 2**20 / 1e9,
                            "sms": sms, "hbm_bytes_per_s": hbm}  # fmt: skip
    base.update({k: v for k, (v, _) in ASSUMED.items()})
    base["provenance"] = Provenance(source=mf.path.name)
    return base


def _solve(points: Sequence[Point], mf: MeasurementFile, base: dict[str, Any]) -> np.ndarray:
    theta0 = _start(mf)
    measured = np.log(np.array([p.seconds for p in points]))

    def residuals(theta: np.ndarray) -> np.ndarray:
        modelled = np.log(predict(_spec(theta, base), points))
        return np.concatenate([modelled - measured, PRIOR_WEIGHT * (theta - theta0)])

    return np.asarray(least_squares(residuals, theta0, method="trf").x)


def fit_spec(mf: MeasurementFile, *, name: str, points: Sequence[Point] | None = None) -> GPUSpec:
    """The spec whose step model best explains ``points`` (default: all of the file's)."""
    points = list(mf.points if points is None else points)
    if len(points) < len(PARAMS):
        raise ConfigError(f"{mf.path.name}: {len(points)} points, need >= {len(PARAMS)} to fit")
    base = _base(mf, name)
    spec = _spec(_solve(points, mf, base), base)
    seen = set().union(*(_needs(p) for p in points))
    fitted = [k for k, need in PARAMS if need in seen]
    unfitted = {k: "not constrained by the file: start value from its ceilings"
                for k, need in PARAMS if need not in seen}  # fmt: skip
    err = np.abs(errors_pct(spec, points))
    prov = Provenance(
        source=mf.path.name,
        method="scipy least_squares on log(modelled / measured) of every point; "
        "docs/emulator.md",
        fitted=fitted,
        assumed={**unfitted, **{k: why for k, (_, why) in ASSUMED.items()},
                 "memory_gb, sms": "the file's device properties",
                 "hbm_bytes_per_s": "datasheet (floors only)"},
        fit={"device": mf.device, "sha256": mf.sha256, "points": len(points),
             "median_abs_err_pct": round(float(np.median(err)), 2),
             "worst_abs_err_pct": round(float(err.max()), 2),
             "fitted_on": dt.date.today().isoformat()},
    )  # fmt: skip
    return spec.model_copy(update={"provenance": prov})


def derive(spec: GPUSpec, *, name: str, hbm_bytes_per_s: float, memory_gb: float) -> GPUSpec:
    """A sibling GPU with the same compute and another memory: bandwidth terms scaled by the
    ratio of datasheet HBM bandwidths, every other fitted term kept."""
    ratio = hbm_bytes_per_s / spec.hbm_bytes_per_s
    how = (
        f"derived from {spec.name} ({spec.provenance.source}): weight and KV bandwidth x "
        f"{hbm_bytes_per_s / 1e12:g}/{spec.hbm_bytes_per_s / 1e12:g} TB/s (datasheets); "
        "compute, per-layer, attention and overlap terms as fitted (same SMs and clocks)"
    )
    assumed = {**spec.provenance.assumed, "memory_gb": "given when derived",
               "sms": f"as {spec.name} (same die)"}  # fmt: skip
    assumed.pop("memory_gb, sms", None)
    prov = spec.provenance.model_copy(update={"method": how, "assumed": assumed})
    return spec.model_copy(
        update={
            "name": name, "device": "", "memory_gb": memory_gb, "hbm_bytes_per_s": hbm_bytes_per_s,
            "weight_bytes_per_s": spec.weight_bytes_per_s * ratio,
            "kv_bytes_per_s": spec.kv_bytes_per_s * ratio, "provenance": prov,
        }
    )  # fmt: skip


@dataclass(frozen=True)
class Fold:
    """Points held out together: those whose ``attr`` equals ``value``."""

    family: str
    attr: str
    value: int | str

    def held(self, point: Point) -> bool:
        return bool(getattr(point, self.attr) == self.value)


def folds(points: Sequence[Point]) -> list[Fold]:
    """Leave one model out; leave one batch size, context or prompt length out."""
    out = [Fold("model", "tag", t) for t in dict.fromkeys(p.tag for p in points)]
    for family, attr in (("batch", "batch"), ("context", "ctx"), ("prompt", "prompt")):
        out += [Fold(family, attr, v) for v in sorted({getattr(p, attr) for p in points} - {0})]
    return out


def cross_validate(mf: MeasurementFile) -> dict[str, dict[Point, float]]:
    """Per family: each held-out point's error (%) when fitted without its fold."""
    out: dict[str, dict[Point, float]] = {}
    for fold in folds(mf.points):
        train = [p for p in mf.points if not fold.held(p)]
        test = [p for p in mf.points if fold.held(p)]
        if len(train) < len(PARAMS) or not test:
            continue
        spec = fit_spec(mf, name="cv", points=train)
        for p, e in zip(test, errors_pct(spec, test), strict=True):
            out.setdefault(fold.family, {})[p] = float(e)
    return out


def summary(errors: Sequence[float]) -> tuple[float, float]:
    """(median |error|, worst |error|) in %."""
    a = np.abs(np.asarray(errors, dtype=float))
    return (float(np.median(a)), float(a.max())) if a.size else (math.nan, math.nan)
