"""Public hardware specifications and model shapes the performance model is built from.

Every number here has its source in docs/emulator.md: GPU figures are NVIDIA's H100 SXM
datasheet (dense, no sparsity); model shapes are the public ``config.json`` of each model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Bytes per element of each data type a preset may name.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0}


class GPUSpec(BaseModel):
    """Peak figures of one accelerator and the fraction of them a serving engine achieves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    flops: dict[str, float] = Field(description="peak dense FLOP/s per compute data type")
    hbm_bytes_per_s: float = Field(gt=0)
    link_bytes_per_s: float = Field(gt=0, description="GPU-to-GPU bandwidth, one direction")
    memory_gb: float = Field(gt=0)
    compute_efficiency: float = Field(gt=0, le=1, description="achieved / peak FLOP/s")
    memory_efficiency: float = Field(gt=0, le=1, description="achieved / peak HBM bandwidth")
    link_efficiency: float = Field(gt=0, le=1, description="achieved / peak link bandwidth")
    allreduce_latency_s: float = Field(ge=0, description="fixed cost of one all-reduce")
    step_overhead_s: float = Field(ge=0, description="fixed cost of one engine iteration")


class ModelShape(BaseModel):
    """The architecture numbers of a decoder-only transformer (Llama family)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    ffn: int = Field(gt=0)
    vocab: int = Field(gt=0)
    context: int = Field(gt=0, description="maximum sequence length (prompt + output)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Weights of one layer: q, o (h x h), k, v (h x kv_dim), gated MLP (3 x h x ffn)."""
        kv_dim = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv_dim + 3 * self.hidden * self.ffn

    @property
    def params(self) -> int:
        """All weights: layers, input embedding and (untied) output head; norms are negligible."""
        return self.layers * self.layer_params + 2 * self.vocab * self.hidden

    def kv_elements_per_token(self) -> int:
        """K and V values cached per token, over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim


_H100_FLOPS = {"fp16": 989e12, "bf16": 989e12, "fp8": 1979e12, "int8": 1979e12, "fp32": 67e12}

GPUS: dict[str, GPUSpec] = {
    "h100-sxm": GPUSpec(
        name="h100-sxm",
        flops=_H100_FLOPS,
        hbm_bytes_per_s=3.35e12,
        link_bytes_per_s=450e9,  # NVLink 4: 900 GB/s total = 450 GB/s each direction
        memory_gb=80,
        compute_efficiency=0.6,
        memory_efficiency=0.85,
        link_efficiency=0.7,
        allreduce_latency_s=10e-6,
        step_overhead_s=0.5e-3,
    ),
    # A fictional small device: batch-1 decode of the ``tiny`` model takes ~15 ms, so tests
    # see real batching behaviour in milliseconds instead of seconds.
    "toy": GPUSpec(
        name="toy",
        flops={"fp16": 20e12, "bf16": 20e12, "fp8": 40e12, "int8": 40e12, "fp32": 5e12},
        hbm_bytes_per_s=200e9,
        link_bytes_per_s=50e9,
        memory_gb=16,
        compute_efficiency=0.5,
        memory_efficiency=0.75,
        link_efficiency=0.7,
        allreduce_latency_s=20e-6,
        step_overhead_s=1e-3,
    ),
}

MODELS: dict[str, ModelShape] = {
    "llama2-70b": ModelShape(
        name="llama2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672,
        vocab=32000, context=4096,
    ),
    "llama2-13b": ModelShape(
        name="llama2-13b", layers=40, hidden=5120, heads=40, kv_heads=40, ffn=13824,
        vocab=32000, context=4096,
    ),
    "llama3-8b": ModelShape(
        name="llama3-8b", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336,
        vocab=128256, context=8192,
    ),
    "llama3-70b": ModelShape(
        name="llama3-70b", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672,
        vocab=128256, context=8192,
    ),
    # TinyLlama-1.1B's shape, used with the fictional ``toy`` device.
    "tiny": ModelShape(
        name="tiny", layers=22, hidden=2048, heads=32, kv_heads=4, ffn=5632,
        vocab=32000, context=4096,
    ),
}  # fmt: skip
