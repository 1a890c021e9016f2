"""Model shapes and data types: the architecture numbers the performance model prices.

Shapes are the public ``config.json`` of each model (docs/emulator.md); ``Shard`` is what one
GPU of a tensor-parallel group holds. GPU figures live in ``emulator.gpuspec``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

# Bytes per weight or cache element. int4 is AWQ's layout: 4-bit weights plus an fp16 scale
# and a 4-bit zero point per group of 128 weights (0.5 + 2.5 / 128 bytes).
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2.5 / 128,
}  # fmt: skip

# Embedding and LM head stay 16-bit when the layers are quantised (TensorRT-LLM's default, and
# the measured fp8 rows of ../shared/data/gpu).
HEAD_BYTES = 2.0


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

    def shard(self, tp: int) -> Shard:
        """What one GPU of a tensor-parallel group of ``tp`` holds and computes."""
        if tp < 1 or self.heads % tp or self.ffn % tp:
            raise ValueError(f"{self.name}: tensor parallelism {tp} does not divide its heads")
        return Shard(self, tp)


@dataclass(frozen=True, slots=True)
class Shard:
    """One GPU's part of a model split over ``tp`` GPUs (heads, FFN, vocabulary divided).

    KV heads are divided too; with fewer KV heads than GPUs each GPU keeps one (replicated).
    """

    shape: ModelShape
    tp: int

    @property
    def q_heads(self) -> int:
        return self.shape.heads // self.tp

    @property
    def kv_heads(self) -> int:
        return max(self.shape.kv_heads // self.tp, 1)

    @property
    def group(self) -> int:
        """Query heads that share one KV head (GQA group)."""
        return max(self.q_heads // self.kv_heads, 1)

    @property
    def layer_params(self) -> int:
        s, hd = self.shape, self.shape.head_dim
        q, kv = self.q_heads * hd, self.kv_heads * hd
        return 2 * s.hidden * q + 2 * s.hidden * kv + 3 * s.hidden * (s.ffn // self.tp)

    @property
    def head_params(self) -> int:
        """LM head weights on this GPU (vocabulary split over the group)."""
        return -(-self.shape.vocab // self.tp) * self.shape.hidden

    def weight_bytes(self, dtype: str) -> float:
        """Weights held: every layer at ``dtype``, embedding and LM head 16-bit."""
        layers = self.shape.layers * self.layer_params * DTYPE_BYTES[dtype]
        return layers + 2 * self.head_params * HEAD_BYTES

    def kv_bytes_per_token(self, dtype: str) -> float:
        """KV-cache bytes one token takes on this GPU, over all layers."""
        return 2 * self.shape.layers * self.kv_heads * self.shape.head_dim * DTYPE_BYTES[dtype]


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
