"""GPU specifications: the fitted parameters of the performance model and where they came from.

A ``GPUSpec`` is a YAML file: the built-in ones ship in ``expert_router/data/gpu/`` (``h200``
fitted from measured step times, ``h100`` derived from it, ``toy`` fictional); ``load_gpu``
takes a built-in name or a path, e.g. the output of ``expert-router fit-gpu``.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from expert_router.errors import ConfigError, invalid

# The GEMM kernel family a weight type runs on: 16-bit weights on bf16 GEMMs; 8- and 4-bit
# weights on quantised GEMMs, which convert per call (the measured ``fp8`` rows; weight-only
# int8/int4 dequantise in the kernel instead, an assumption stated in docs/emulator.md).
WEIGHT_PATH = {"fp32": "bf16", "fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "int8": "fp8",
               "int4": "fp8"}  # fmt: skip
# The tensor-core rate a compute type runs at (int8 runs at the fp8 rate on Hopper).
COMPUTE_RATE = {"fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "int8": "fp8", "fp32": "fp32"}

# Datasheet HBM bandwidth by device name (NVIDIA H100 SXM and H200 SXM datasheets).
DATASHEET_HBM = {"H200": 4.8e12, "H100": 3.35e12}


class Provenance(BaseModel):
    """Where a spec's numbers come from: the measurement file, the method, the assumptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="measurement file, derivation, or 'fictional'")
    method: str = ""
    fitted: list[str] = Field(default_factory=list, description="parameters fitted to the data")
    assumed: dict[str, str] = Field(default_factory=dict, description="parameter -> its source")
    fit: dict[str, Any] = Field(default_factory=dict, description="points, errors, file hash")


class GPUSpec(BaseModel):
    """One accelerator as the step model sees it (all rates per GPU; see docs/emulator.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    device: str = Field(default="", description="the device name the measurements reported")
    memory_gb: float = Field(gt=0, description="device memory as CUDA reports it, 1e9 bytes")
    sms: int = Field(gt=0, description="streaming multiprocessors")
    hbm_bytes_per_s: float = Field(gt=0, description="datasheet peak (floors only)")
    weight_bytes_per_s: float = Field(gt=0, description="fitted: weight streaming rate")
    kv_bytes_per_s: float = Field(gt=0, description="fitted: KV-cache read rate in attention")
    gemm_flops: dict[str, float] = Field(description="fitted: GEMM FLOP/s per compute type")
    attention_flops: float = Field(gt=0, description="fitted: prefill attention FLOP/s")
    layer_s: dict[str, float] = Field(description="fitted: fixed cost per layer per GEMM family")
    overlap: float = Field(ge=1, description="fitted: p of the p-norm joining bytes and FLOPs")
    attention_token_s: float = Field(
        ge=0, description="fitted: one SM's time per cached token per query head in decode"
    )
    link_bytes_per_s: float = Field(gt=0, description="assumed: all-reduce bus bandwidth")
    allreduce_latency_s: float = Field(ge=0, description="assumed: fixed cost of an all-reduce")
    step_overhead_s: float = Field(ge=0, description="assumed: engine cost per iteration")
    provenance: Provenance

    def gemm_rate(self, compute_dtype: str) -> float:
        key = COMPUTE_RATE.get(compute_dtype, compute_dtype)
        if key not in self.gemm_flops:
            raise ConfigError(f"gpu {self.name}: no GEMM rate for {compute_dtype}")
        return self.gemm_flops[key]

    def layer_cost(self, weight_dtype: str) -> float:
        key = WEIGHT_PATH.get(weight_dtype, weight_dtype)
        if key not in self.layer_s:
            raise ConfigError(f"gpu {self.name}: no per-layer cost for {weight_dtype} weights")
        return self.layer_s[key]


def builtin_dir() -> Path:
    """The package's folder of GPU specs and measurement files."""
    return Path(str(resources.files("expert_router") / "data" / "gpu"))


def builtin_gpus() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def parse_gpu(data: Any, where: str) -> GPUSpec:
    """Validate a mapping as a ``GPUSpec``; errors name ``where`` and the field."""
    try:
        return GPUSpec.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, where) from exc


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; errors name ``what`` (e.g. "preset file") and the path."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of fields")
    return data


@functools.lru_cache(maxsize=64)
def _load_file(path: Path, mtime: float) -> GPUSpec:
    return parse_gpu(read_mapping(path, "gpu file"), f"gpu file {path}")


def load_gpu(name_or_path: str, base_dir: Path | None = None) -> GPUSpec:
    """A built-in spec by name (``h100``, ``h200``, ``toy``) or a spec YAML by path."""
    builtin = builtin_dir() / f"{name_or_path}.yaml"
    if "/" not in name_or_path and builtin.is_file():
        return _load_file(builtin, builtin.stat().st_mtime)
    path = Path(name_or_path)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        if not name_or_path.endswith((".yaml", ".yml")):
            raise ConfigError(f"unknown {name_or_path!r}, choose from {builtin_gpus()} or a file")
        raise ConfigError(f"gpu file {path}: not found")
    return _load_file(path.resolve(), path.stat().st_mtime)


def save_gpu(spec: GPUSpec, path: Path) -> None:
    """Write ``spec`` as YAML (the format ``load_gpu`` reads)."""
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, width=100)
    Path(path).write_text(text, encoding="utf-8")


def datasheet_hbm(device: str) -> float | None:
    """The datasheet HBM bandwidth of a device name (``NVIDIA H200`` -> 4.8e12), if known."""
    for key, value in DATASHEET_HBM.items():
        if key in device.upper():
            return value
    return None


def builtin_for_device(device: str) -> str | None:
    """The built-in spec fitted for a device name (``NVIDIA H200`` -> ``h200``), if any."""
    for key in DATASHEET_HBM:
        if key in device.upper() and key.lower() in builtin_gpus():
            return key.lower()
    return None
