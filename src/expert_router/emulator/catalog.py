"""The built-in presets: the paper's v1 configurations (Table I), its v2 configurations, and
``cpu-tiny`` for tests. Every GPU preset runs on the ``h100`` spec (one DGX H100, as the
paper); the choices the paper leaves open are stated beside each and in docs/emulator.md.
"""

from __future__ import annotations

from typing import Any

from expert_router.emulator.presets import Preset, validate_preset

# TensorRT-LLM's default per-iteration token budget (max_num_tokens) on every GPU preset.
PREFILL_CHUNK = 8192

_V1: dict[str, dict[str, Any]] = {
    "A": dict(
        description="paper v1 A: Llama 2 70B FP16, tensor parallel over 8 H100",
        model_name="llama2-70b-fp16-tp8", model="llama2-70b", tp=8, max_batch=600, kv_gb=366,
    ),
    "B": dict(
        description="paper v1 B: Llama 2 70B INT8 weight-only on one H100",
        model_name="llama2-70b-int8wo", model="llama2-70b", weight_dtype="int8",
        max_batch=60, kv_gb=12, kv_tokens=72_000,
    ),
    "C": dict(
        description="paper v1 C: Llama 2 13B FP16 on one H100",
        model_name="llama2-13b-fp16", model="llama2-13b", max_batch=40, kv_gb=54,
        kv_tokens=160_000,
    ),
    "D": dict(
        description="paper v1 D: Llama 2 13B FP8 weights and KV cache on one H100",
        model_name="llama2-13b-fp8", model="llama2-13b", weight_dtype="fp8", kv_dtype="fp8",
        compute_dtype="fp8", max_batch=150, kv_gb=65, kv_tokens=159_000,
    ),
}  # fmt: skip

# Paper v2 (Llama 3). Its summaries give neither batch limits nor KV sizes nor the baselines'
# TP degree and types: the KV cache is sized from memory; batch limits are set so that they do
# not bind before the KV cache does (experts: 256, TensorRT-LLM's default max_batch_size of
# 2024; baselines: 1024, above the 1000 users); both baselines span the whole DGX (TP 8), the
# quantised one with the experts' own INT4-AWQ weights, so that only the layout differs.
_V2_COMMON: dict[str, Any] = dict(model="llama3-70b", kv_source="physics", kv_dtype="fp16")
_V2: dict[str, dict[str, Any]] = {
    "v2-tp8-bf16": dict(
        _V2_COMMON, description="paper v2 baseline: Llama 3 70B BF16, tensor parallel over 8 "
        "H100", model_name="llama3-70b-bf16-tp8", weight_dtype="bf16", compute_dtype="bf16",
        tp=8, max_batch=1024,
    ),
    "v2-tp8-awq": dict(
        _V2_COMMON, description="paper v2 baseline: Llama 3 70B INT4-AWQ, tensor parallel over "
        "8 H100", model_name="llama3-70b-awq-tp8", weight_dtype="int4", tp=8, max_batch=1024,
    ),
    "v2-70b-awq": dict(
        _V2_COMMON, description="paper v2 expert: Llama 3 70B INT4-AWQ on one H100",
        model_name="llama3-70b-awq", weight_dtype="int4", max_batch=256,
    ),
    "v2-8b": dict(
        _V2_COMMON, description="paper v2 expert: Llama 3 8B BF16 on one H100",
        model_name="llama3-8b", model="llama3-8b", weight_dtype="bf16", compute_dtype="bf16",
        max_batch=256,
    ),
}  # fmt: skip

_TEST: dict[str, dict[str, Any]] = {
    "cpu-tiny": dict(
        description="fast preset for tests: TinyLlama shape on a fictional small device",
        model_name="cpu-tiny", gpu="toy", model="tiny", max_batch=8, kv_tokens=16_384,
        max_model_len=4096, eos_mean_tokens=64,
    ),
}  # fmt: skip


def _build() -> dict[str, Preset]:
    out: dict[str, Preset] = {}
    for name, fields in {**_V1, **_V2}.items():
        out[name] = validate_preset({"name": name, "prefill_chunk": PREFILL_CHUNK, **fields}, name)
    for name, fields in _TEST.items():
        out[name] = validate_preset({"name": name, **fields}, name)
    return out


PRESETS: dict[str, Preset] = _build()
