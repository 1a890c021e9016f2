"""Performance models: how long one engine iteration takes.

``StepModel`` prices a forward pass from the terms the measured GPUs show (fixed cost per
layer, weight streaming joined with GEMM FLOPs by a p-norm, KV reads and the serial limit of
decode attention, prefill attention FLOPs), then adds tensor-parallel all-reduces and the
engine's per-iteration overhead. ``FixedTiming`` gives constant TTFT/TPOT. docs/emulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from expert_router.emulator.gpuspec import GPUSpec
from expert_router.emulator.hardware import DTYPE_BYTES, HEAD_BYTES, ModelShape


@dataclass(frozen=True, slots=True)
class IterationWork:
    """What one iteration computes (all counts over the whole batch)."""

    decode_seqs: int = 0
    """Sequences that decode one token."""
    decode_ctx: int = 0
    """KV-cache tokens those sequences attend to, summed."""
    prefill_tokens: int = 0
    """Prompt tokens prefilled in this iteration (all chunks)."""
    prefill_attn: float = 0.0
    """Sum over prefill chunks of c * (offset + c / 2): causal attention positions."""
    prefill_done: int = 0
    """Sequences whose prefill completes (each computes logits for its first token)."""


class TimingModel(Protocol):
    """Anything that can price an iteration."""

    def iteration_time(self, work: IterationWork) -> float: ...

    def describe(self) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class FixedTiming:
    """Constant timings: an iteration that prefills lasts ``ttft_s``, any other ``tpot_s``."""

    tpot_s: float
    ttft_s: float

    def iteration_time(self, work: IterationWork) -> float:
        if work.prefill_tokens > 0:
            return self.ttft_s
        return self.tpot_s if work.decode_seqs > 0 else 0.0

    def describe(self) -> dict[str, float]:
        return {"tpot_ms": self.tpot_s * 1e3, "ttft_ms": self.ttft_s * 1e3}


def pnorm(a: float, b: float, p: float) -> float:
    """``(a^p + b^p)^(1/p)``: the time of two overlapping streams (max as p grows)."""
    if a <= 0.0 or b <= 0.0:
        return a + b
    hi, lo = (a, b) if a >= b else (b, a)
    return float(hi * (1.0 + (lo / hi) ** p) ** (1.0 / p))


class StepModel:
    """Iteration time of one engine (``tp`` GPUs) on ``gpu`` serving ``shape``.

    >>> from expert_router.emulator.gpuspec import load_gpu
    >>> from expert_router.emulator.hardware import MODELS
    >>> m = StepModel(load_gpu("h200"), MODELS["llama2-13b"], weight_dtype="bf16")
    >>> 7.0 < m.forward_time(IterationWork(decode_seqs=1, decode_ctx=512)) * 1e3 < 8.3
    True
    """

    def __init__(
        self,
        gpu: GPUSpec,
        shape: ModelShape,
        *,
        weight_dtype: str = "fp16",
        kv_dtype: str = "fp16",
        compute_dtype: str = "fp16",
        activation_dtype: str = "fp16",
        tp: int = 1,
    ) -> None:
        self.gpu, self.shape, self.tp = gpu, shape, tp
        shard = shape.shard(tp)
        self.shard = shard
        self.weight_bytes = shard.weight_bytes(weight_dtype)
        """Weights held per GPU (layers, embedding, LM head)."""
        self.kv_bytes_per_token = shard.kv_bytes_per_token(kv_dtype)
        """KV-cache bytes per token per GPU."""
        L, p = shape.layers, gpu.overlap
        self.p = p
        self._fixed = L * gpu.layer_cost(weight_dtype)
        layer_bytes = L * shard.layer_params * DTYPE_BYTES[weight_dtype]
        self.read_bytes = layer_bytes + shard.head_params * HEAD_BYTES
        """Weight bytes one decode step reads per GPU (layers and LM head, no embedding)."""
        self._weights_t = layer_bytes / gpu.weight_bytes_per_s
        self._row_t = 2.0 * L * shard.layer_params / gpu.gemm_rate(compute_dtype)
        self._head_t = shard.head_params * HEAD_BYTES / gpu.weight_bytes_per_s
        self._head_row_t = 2.0 * shard.head_params / gpu.gemm_rate("bf16")
        self._kv_t = self.kv_bytes_per_token / gpu.kv_bytes_per_s
        self._serial_t = L * shard.group * gpu.attention_token_s
        self._units = shard.kv_heads / gpu.sms
        q_dim = shard.q_heads * shape.head_dim
        self._attn_t = 4.0 * L * q_dim / gpu.attention_flops
        payload = shape.hidden * DTYPE_BYTES[activation_dtype] * 2 * (tp - 1) / tp
        self._comm_row_t = 2 * L * payload / gpu.link_bytes_per_s
        self._comm_fixed = 2 * L * gpu.allreduce_latency_s if tp > 1 else 0.0
        self._step = gpu.step_overhead_s

    def forward_time(self, work: IterationWork) -> float:
        """One GPU's forward pass: what ``../shared/data/gpu`` measured (no all-reduce)."""
        rows = work.decode_seqs + work.prefill_tokens
        if rows == 0:
            return 0.0
        p = self.p
        t = self._fixed + pnorm(self._weights_t, rows * self._row_t, p)
        t += pnorm(self._head_t, (work.decode_seqs + work.prefill_done) * self._head_row_t, p)
        if work.decode_seqs:
            ctx = work.decode_ctx
            serial = self._serial_t * max(ctx / work.decode_seqs, ctx * self._units)
            t += pnorm(ctx * self._kv_t, serial, p)
        return t + work.prefill_attn * self._attn_t

    def comm_time(self, tokens: int) -> float:
        """Two all-reduces per layer (attention and MLP outputs) over ``tp`` GPUs."""
        if self.tp == 1:
            return 0.0
        return self._comm_fixed + tokens * self._comm_row_t

    def iteration_time(self, work: IterationWork) -> float:
        rows = work.decode_seqs + work.prefill_tokens
        if rows == 0:
            return 0.0
        return self.forward_time(work) + self.comm_time(rows) + self._step

    def decode_time(self, batch: int, mean_ctx: float) -> float:
        """One decode step of ``batch`` sequences of ``mean_ctx`` cached tokens each."""
        ctx = int(batch * mean_ctx)
        return self.iteration_time(IterationWork(decode_seqs=batch, decode_ctx=ctx))

    def prefill_time(self, prompt_tokens: int) -> float:
        """Prefill of one prompt alone (its TTFT on an idle server)."""
        p = prompt_tokens
        work = IterationWork(prefill_tokens=p, prefill_attn=p * p / 2, prefill_done=1)
        return self.iteration_time(work)

    def lower_bound_tpot(self) -> float:
        """Physical floor of a batch-1 decode step: weights read per GPU / datasheet HBM peak."""
        return self.read_bytes / self.gpu.hbm_bytes_per_s

    def describe(self) -> dict[str, float]:
        return {
            "weights_gb": self.weight_bytes * self.tp / 1e9,
            "kv_bytes_per_token": self.kv_bytes_per_token * self.tp,
            "tpot_batch1_ms": self.decode_time(1, 512) * 1e3,
            "tpot_floor_ms": self.lower_bound_tpot() * 1e3,
        }
