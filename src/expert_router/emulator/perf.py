"""Performance models: how long one engine iteration takes.

``RooflineModel`` derives the time from FLOPs and bytes moved (max of compute and memory
time, plus tensor-parallel all-reduces and a fixed per-step overhead); ``FixedTiming`` gives
constant TTFT/TPOT figures (the user simulator's calibration uses it). See docs/emulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from expert_router.emulator.hardware import DTYPE_BYTES, GPUSpec, ModelShape


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


class RooflineModel:
    """Iteration time = max(compute, memory) + all-reduces + fixed step overhead.

    >>> from expert_router.emulator.hardware import GPUS, MODELS
    >>> m = RooflineModel(GPUS["h100-sxm"], MODELS["llama2-13b"], weight_dtype="fp16")
    >>> round(m.decode_time(1, 500) * 1e3, 1)  # batch-1 TPOT in ms
    9.8
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
        self.weight_bytes = shape.params * DTYPE_BYTES[weight_dtype]
        self.kv_bytes_per_token = shape.kv_elements_per_token() * DTYPE_BYTES[kv_dtype]
        self.act_bytes = DTYPE_BYTES[activation_dtype]
        self._flops_per_token = 2.0 * shape.layers * shape.layer_params
        self._flops_per_logits = 2.0 * shape.vocab * shape.hidden
        self._flops_per_attn = 4.0 * shape.layers * shape.hidden  # QK^T and AV per position
        self._flops_rate = gpu.flops[compute_dtype] * gpu.compute_efficiency * tp
        self._bytes_rate = gpu.hbm_bytes_per_s * gpu.memory_efficiency * tp
        self._link_rate = gpu.link_bytes_per_s * gpu.link_efficiency

    def compute_time(self, work: IterationWork) -> float:
        tokens = work.decode_seqs + work.prefill_tokens
        flops = (
            self._flops_per_token * tokens
            + self._flops_per_logits * (work.decode_seqs + work.prefill_done)
            + self._flops_per_attn * (work.decode_ctx + work.prefill_attn)
        )
        return flops / self._flops_rate

    def memory_time(self, work: IterationWork) -> float:
        kv = (work.decode_ctx + work.prefill_tokens) * self.kv_bytes_per_token
        return (self.weight_bytes + kv) / self._bytes_rate

    def comm_time(self, tokens: int) -> float:
        """Two ring all-reduces per layer (attention and MLP outputs) over ``tp`` GPUs."""
        if self.tp == 1:
            return 0.0
        payload = tokens * self.shape.hidden * self.act_bytes * 2 * (self.tp - 1) / self.tp
        per_call = self.gpu.allreduce_latency_s + payload / self._link_rate
        return 2 * self.shape.layers * per_call

    def iteration_time(self, work: IterationWork) -> float:
        tokens = work.decode_seqs + work.prefill_tokens
        if tokens == 0:
            return 0.0
        busy = max(self.compute_time(work), self.memory_time(work))
        return busy + self.comm_time(tokens) + self.gpu.step_overhead_s

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
        """Physical floor of a batch-1 decode step: weight bytes per GPU / peak HBM bandwidth."""
        return self.weight_bytes / self.tp / self.gpu.hbm_bytes_per_s

    def describe(self) -> dict[str, float]:
        return {
            "weights_gb": self.weight_bytes / 1e9,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "tpot_batch1_ms": self.decode_time(1, 512) * 1e3,
            "tpot_floor_ms": self.lower_bound_tpot() * 1e3,
        }
