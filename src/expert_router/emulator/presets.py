"""Named emulator configurations: the paper's A-D, Llama 3 on H100, ``cpu-tiny``, custom YAML.

A ``Preset`` is a pydantic model (unknown keys are errors that name the field); ``get_preset``
resolves a built-in name or a YAML path and applies keyword overrides such as ``max_batch``,
``kv_tokens`` or the fixed timing ``tpot_ms``/``ttft_ms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from expert_router.emulator.hardware import GPUS, MODELS, GPUSpec, ModelShape
from expert_router.emulator.perf import FixedTiming, RooflineModel, TimingModel
from expert_router.errors import ConfigError

DType = Literal["fp32", "fp16", "bf16", "fp8", "int8"]


class Preset(BaseModel):
    """One expert server: hardware, model, quantisation, scheduler limits, served name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    model_name: str = Field(description="name served by /v1/models")
    gpu: str | GPUSpec = "h100-sxm"
    model: str | ModelShape
    weight_dtype: DType = "fp16"
    kv_dtype: DType = "fp16"
    compute_dtype: DType = "fp16"
    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per expert)")
    max_batch: int = Field(ge=1, description="most sequences running at once")
    kv_tokens: int | None = Field(None, ge=1, description="KV-cache capacity in tokens")
    kv_gb: float | None = Field(None, gt=0, description="KV-cache memory (GB, all GPUs)")
    max_model_len: int | None = Field(None, ge=2, description="context limit; model's if unset")
    prefill_chunk: int | None = Field(None, ge=1, description="token budget per iteration")
    kv_policy: Literal["reserve", "paged"] = Field(
        "reserve", description="reserve prompt + max_tokens (TensorRT-LLM) or paged (vLLM)"
    )
    block_size: int = Field(16, ge=1, description="KV block size in tokens (paged policy)")
    eos_mean_tokens: float = Field(256.0, gt=0, description="mean answer length without ignore_eos")
    tpot_ms: float | None = Field(None, gt=0, description="fixed TPOT (replaces the roofline)")
    ttft_ms: float | None = Field(None, gt=0, description="fixed TTFT (with tpot_ms)")
    pacing: Literal["batched", "per-request"] = Field(
        "batched", description="batch iterations, or per-request timers (live only, needs tpot_ms)"
    )

    @model_validator(mode="after")
    def _check(self) -> Preset:
        if isinstance(self.gpu, str) and self.gpu not in GPUS:
            raise ValueError(f"gpu: unknown {self.gpu!r}, choose from {sorted(GPUS)}")
        if isinstance(self.model, str) and self.model not in MODELS:
            raise ValueError(f"model: unknown {self.model!r}, choose from {sorted(MODELS)}")
        if self.kv_tokens is None and self.kv_gb is None:
            raise ValueError("kv_tokens: give kv_tokens or kv_gb")
        if self.ttft_ms is not None and self.tpot_ms is None:
            raise ValueError("tpot_ms: ttft_ms needs tpot_ms too")
        if self.pacing == "per-request" and self.tpot_ms is None:
            raise ValueError("tpot_ms: pacing 'per-request' needs a fixed tpot_ms")
        return self

    @property
    def gpu_spec(self) -> GPUSpec:
        return GPUS[self.gpu] if isinstance(self.gpu, str) else self.gpu

    @property
    def shape(self) -> ModelShape:
        return MODELS[self.model] if isinstance(self.model, str) else self.model

    def roofline(self) -> RooflineModel:
        return RooflineModel(
            self.gpu_spec,
            self.shape,
            weight_dtype=self.weight_dtype,
            kv_dtype=self.kv_dtype,
            compute_dtype=self.compute_dtype,
            tp=self.tp,
        )

    def timing(self) -> TimingModel:
        """The fixed timing when ``tpot_ms`` is set, otherwise the roofline model."""
        if self.tpot_ms is not None:
            ttft = self.ttft_ms if self.ttft_ms is not None else self.tpot_ms
            return FixedTiming(tpot_s=self.tpot_ms / 1e3, ttft_s=ttft / 1e3)
        return self.roofline()

    @property
    def kv_capacity(self) -> int:
        """KV-cache capacity in tokens: ``kv_tokens`` if given, else ``kv_gb`` / bytes per token."""
        if self.kv_tokens is not None:
            return self.kv_tokens
        assert self.kv_gb is not None
        return int(self.kv_gb * 1e9 // self.roofline().kv_bytes_per_token)

    @property
    def context(self) -> int:
        """Longest prompt + output a request may ask for (never more than the KV cache holds)."""
        limit = self.max_model_len if self.max_model_len is not None else self.shape.context
        return min(limit, self.kv_capacity)

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with some fields replaced; unknown fields raise ``ConfigError``."""
        if not overrides:
            return self
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items()})
        return _validate(data, f"preset {self.name!r}")


def _validate(data: Any, where: str) -> Preset:
    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "preset"
        raise ConfigError(f"{where}: {field}: {first['msg']}") from exc


_BASE: dict[str, dict[str, Any]] = {
    "A": dict(
        description="paper A: Llama 2 70B FP16, tensor parallel over 8 H100",
        model_name="llama2-70b-fp16-tp8", model="llama2-70b", tp=8, max_batch=600, kv_gb=366,
    ),
    "B": dict(
        description="paper B: Llama 2 70B INT8 weight-only on one H100",
        model_name="llama2-70b-int8wo", model="llama2-70b", weight_dtype="int8",
        max_batch=60, kv_gb=12, kv_tokens=72_000,
    ),
    "C": dict(
        description="paper C: Llama 2 13B FP16 on one H100",
        model_name="llama2-13b-fp16", model="llama2-13b", max_batch=40, kv_gb=54,
        kv_tokens=160_000,
    ),
    "D": dict(
        description="paper D: Llama 2 13B FP8 weights and KV cache on one H100",
        model_name="llama2-13b-fp8", model="llama2-13b", weight_dtype="fp8", kv_dtype="fp8",
        compute_dtype="fp8", max_batch=150, kv_gb=65, kv_tokens=159_000,
    ),
    "llama3-8b-h100": dict(
        description="Llama 3 8B BF16 on one H100",
        model_name="llama3-8b", model="llama3-8b", weight_dtype="bf16", kv_dtype="bf16",
        compute_dtype="bf16", max_batch=256, kv_gb=56,
    ),
    "llama3-70b-h100": dict(
        description="Llama 3 70B BF16, tensor parallel over 4 H100",
        model_name="llama3-70b", model="llama3-70b", weight_dtype="bf16", kv_dtype="bf16",
        compute_dtype="bf16", tp=4, max_batch=256, kv_gb=150,
    ),
    "cpu-tiny": dict(
        description="fast preset for tests: TinyLlama shape on a fictional small device",
        model_name="cpu-tiny", gpu="toy", model="tiny", max_batch=8, kv_tokens=16_384,
        max_model_len=4096, eos_mean_tokens=64,
    ),
}  # fmt: skip

# TensorRT-LLM's default per-iteration token budget (max_num_tokens) on the GPU presets.
for _name, _fields in _BASE.items():
    if _name != "cpu-tiny":
        _fields.setdefault("prefill_chunk", 8192)

PRESETS: dict[str, Preset] = {
    name: _validate({"name": name, **d}, name) for name, d in _BASE.items()
}


def load_preset_file(path: Path) -> Preset:
    """A custom preset from a YAML mapping (same fields as ``Preset``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"preset file {path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {path}: expected a mapping of preset fields")
    data.setdefault("name", path.stem)
    data.setdefault("model_name", data["name"])
    return _validate(data, f"preset file {path}")


def get_preset(name: str | Preset, **overrides: Any) -> Preset:
    """A built-in preset by name, or a YAML file by path, with ``overrides`` applied.

    >>> get_preset("cpu-tiny", max_batch=2).max_batch
    2
    """
    if isinstance(name, Preset):
        base = name
    elif name in PRESETS:
        base = PRESETS[name]
    elif name.endswith((".yaml", ".yml")) or Path(name).is_file():
        base = load_preset_file(Path(name))
    else:
        raise ConfigError(f"preset: unknown {name!r}; built-in presets: {', '.join(PRESETS)}")
    return base.with_overrides(**{k: v for k, v in overrides.items() if v is not None})
