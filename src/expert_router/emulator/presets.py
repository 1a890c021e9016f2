"""Emulator presets: what one expert server is (GPU, model, data types, scheduler limits).

A ``Preset`` is a pydantic model (unknown keys are errors that name the field); ``get_preset``
resolves a built-in name (``emulator.catalog``) or a YAML path and applies keyword overrides.
The KV capacity is stated (``kv_tokens``/``kv_gb``) or derived from memory (``kv_source``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from expert_router.emulator.gpuspec import GPUSpec, load_gpu, read_mapping
from expert_router.emulator.hardware import MODELS, ModelShape
from expert_router.emulator.perf import FixedTiming, StepModel, TimingModel
from expert_router.errors import ConfigError, invalid

DType = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]


class Preset(BaseModel):
    """One expert server: hardware, model, quantisation, scheduler limits, served name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    model_name: str = Field(description="name served by /v1/models")
    gpu: str | GPUSpec = Field(
        default="h100", description="built-in spec name, spec YAML path, or inline"
    )
    model: str | ModelShape
    weight_dtype: DType = "fp16"
    kv_dtype: DType = "fp16"
    compute_dtype: DType = "fp16"
    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per expert)")
    max_batch: int = Field(ge=1, description="most sequences running at once")
    kv_source: Literal["stated", "physics"] = Field(
        "stated", description="KV capacity from kv_tokens/kv_gb, or from GPU memory"
    )
    kv_tokens: int | None = Field(None, ge=1, description="KV-cache capacity in tokens")
    kv_gb: float | None = Field(None, gt=0, description="KV-cache memory (GB, all GPUs)")
    kv_memory_fraction: float = Field(
        0.9, gt=0, le=1, description="share of memory left after weights and reserve (physics)"
    )
    activation_reserve_gb: float = Field(
        2.0, ge=0, description="per GPU: CUDA context, workspaces, activations (physics)"
    )
    max_model_len: int | None = Field(None, ge=2, description="context limit; model's if unset")
    prefill_chunk: int | None = Field(None, ge=1, description="token budget per iteration")
    kv_policy: Literal["reserve", "paged"] = Field(
        "reserve", description="reserve prompt + max_tokens (TensorRT-LLM) or paged (vLLM)"
    )
    block_size: int = Field(16, ge=1, description="KV block size in tokens (paged policy)")
    eos_mean_tokens: float = Field(256.0, gt=0, description="mean answer length without ignore_eos")
    tpot_ms: float | None = Field(None, gt=0, description="fixed TPOT (replaces the step model)")
    ttft_ms: float | None = Field(None, gt=0, description="fixed TTFT (with tpot_ms)")
    pacing: Literal["batched", "per-request"] = Field(
        "batched", description="batch iterations, or per-request timers (live only, needs tpot_ms)"
    )

    @model_validator(mode="after")
    def _check(self) -> Preset:
        if isinstance(self.model, str) and self.model not in MODELS:
            raise ValueError(f"model: unknown {self.model!r}, choose from {sorted(MODELS)}")
        try:
            self.step_model()
        except ConfigError as exc:
            raise ValueError(f"gpu: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"tp: {exc}") from exc
        if self.kv_source == "stated" and self.kv_tokens is None and self.kv_gb is None:
            raise ValueError("kv_tokens: give kv_tokens or kv_gb, or kv_source: physics")
        if self.kv_source == "physics" and self.physical_kv_tokens() < 1:
            raise ValueError("kv_source: the weights and reserve leave no memory for a KV cache")
        if self.ttft_ms is not None and self.tpot_ms is None:
            raise ValueError("tpot_ms: ttft_ms needs tpot_ms too")
        if self.pacing == "per-request" and self.tpot_ms is None:
            raise ValueError("tpot_ms: pacing 'per-request' needs a fixed tpot_ms")
        return self

    @property
    def gpu_spec(self) -> GPUSpec:
        return load_gpu(self.gpu) if isinstance(self.gpu, str) else self.gpu

    @property
    def shape(self) -> ModelShape:
        return MODELS[self.model] if isinstance(self.model, str) else self.model

    def step_model(self) -> StepModel:
        """The calibrated performance model of one engine of this preset."""
        return StepModel(
            self.gpu_spec,
            self.shape,
            weight_dtype=self.weight_dtype,
            kv_dtype=self.kv_dtype,
            compute_dtype=self.compute_dtype,
            tp=self.tp,
        )

    def timing(self) -> TimingModel:
        """The fixed timing when ``tpot_ms`` is set, otherwise the step model."""
        if self.tpot_ms is not None:
            ttft = self.ttft_ms if self.ttft_ms is not None else self.tpot_ms
            return FixedTiming(tpot_s=self.tpot_ms / 1e3, ttft_s=ttft / 1e3)
        return self.step_model()

    def physical_kv_tokens(self) -> int:
        """Tokens the KV cache holds when sized from memory, as TensorRT-LLM sizes it: a
        fraction of what each GPU has left after its weights and an activation reserve."""
        m = self.step_model()
        free = (self.gpu_spec.memory_gb - self.activation_reserve_gb) * 1e9 - m.weight_bytes
        return max(int(free * self.kv_memory_fraction // m.kv_bytes_per_token), 0)

    @property
    def kv_capacity(self) -> int:
        """KV-cache capacity in tokens, from ``kv_source``."""
        if self.kv_source == "physics":
            return self.physical_kv_tokens()
        if self.kv_tokens is not None:
            return self.kv_tokens
        assert self.kv_gb is not None
        per_token = self.step_model().kv_bytes_per_token * self.tp
        return int(self.kv_gb * 1e9 // per_token)

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
        data.update(overrides)
        return validate_preset(data, f"preset {self.name!r}")


def validate_preset(data: Any, where: str) -> Preset:
    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, where) from exc


def load_preset_file(path: Path) -> Preset:
    """A custom preset from a YAML mapping (same fields as ``Preset``); a relative ``gpu``
    file is found beside the preset file."""
    data = read_mapping(path, "preset file")
    data.setdefault("name", path.stem)
    data.setdefault("model_name", data["name"])
    gpu = data.get("gpu")
    if isinstance(gpu, str) and gpu.endswith((".yaml", ".yml")) and not Path(gpu).is_absolute():
        beside = path.parent / gpu
        if beside.is_file():
            data["gpu"] = str(beside)
    return validate_preset(data, f"preset file {path}")


def get_preset(name: str | Preset, **overrides: Any) -> Preset:
    """A built-in preset by name, or a YAML file by path, with ``overrides`` applied.

    >>> get_preset("cpu-tiny", max_batch=2).max_batch
    2
    """
    from expert_router.emulator.catalog import PRESETS

    if isinstance(name, Preset):
        base = name
    elif name in PRESETS:
        base = PRESETS[name]
    elif name.endswith((".yaml", ".yml")) or Path(name).is_file():
        base = load_preset_file(Path(name))
    else:
        raise ConfigError(f"preset: unknown {name!r}; built-in presets: {', '.join(PRESETS)}")
    return base.with_overrides(**{k: v for k, v in overrides.items() if v is not None})
