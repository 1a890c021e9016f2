"""The previous performance model, kept to show what calibration changed.

A roofline from datasheet peaks and guessed efficiencies: max(compute, memory) + all-reduces
+ a fixed step overhead. ``benchmarks/model_error.py`` prints its error beside the fitted
``StepModel``'s; the emulator no longer uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from expert_router.emulator.hardware import DTYPE_BYTES, ModelShape
from expert_router.emulator.perf import IterationWork


@dataclass(frozen=True, slots=True)
class DatasheetGPU:
    """Peak figures of one accelerator and the fractions of them a serving engine achieves."""

    flops: dict[str, float]
    hbm_bytes_per_s: float
    link_bytes_per_s: float
    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.85
    link_efficiency: float = 0.7
    allreduce_latency_s: float = 10e-6
    step_overhead_s: float = 0.5e-3


_FLOPS = {"fp16": 989e12, "bf16": 989e12, "fp8": 1979e12, "int8": 1979e12, "fp32": 67e12}
# NVIDIA's H100 SXM datasheet (dense); the H200 has the same compute and 4.8 TB/s of HBM3e.
DATASHEETS = {
    "h100": DatasheetGPU(flops=_FLOPS, hbm_bytes_per_s=3.35e12, link_bytes_per_s=450e9),
    "h200": DatasheetGPU(flops=_FLOPS, hbm_bytes_per_s=4.8e12, link_bytes_per_s=450e9),
}


class RooflineModel:
    """Iteration time = max(compute, memory) + all-reduces + fixed step overhead."""

    def __init__(
        self,
        gpu: DatasheetGPU,
        shape: ModelShape,
        *,
        weight_dtype: str = "fp16",
        kv_dtype: str = "fp16",
        compute_dtype: str = "fp16",
        tp: int = 1,
    ) -> None:
        self.gpu, self.shape, self.tp = gpu, shape, tp
        self.weight_bytes = shape.params * DTYPE_BYTES[weight_dtype]
        self.kv_bytes_per_token = shape.kv_elements_per_token() * DTYPE_BYTES[kv_dtype]
        self._flops_per_token = 2.0 * shape.layers * shape.layer_params
        self._flops_per_logits = 2.0 * shape.vocab * shape.hidden
        self._flops_per_attn = 4.0 * shape.layers * shape.hidden  # QK^T and AV per position
        self._flops_rate = gpu.flops[compute_dtype] * gpu.compute_efficiency * tp
        self._bytes_rate = gpu.hbm_bytes_per_s * gpu.memory_efficiency * tp
        self._link_rate = gpu.link_bytes_per_s * gpu.link_efficiency

    def forward_time(self, work: IterationWork) -> float:
        """The iteration without its all-reduces (what one GPU's shard takes)."""
        tokens = work.decode_seqs + work.prefill_tokens
        if tokens == 0:
            return 0.0
        flops = (
            self._flops_per_token * tokens
            + self._flops_per_logits * (work.decode_seqs + work.prefill_done)
            + self._flops_per_attn * (work.decode_ctx + work.prefill_attn)
        )
        kv = (work.decode_ctx + work.prefill_tokens) * self.kv_bytes_per_token
        memory = (self.weight_bytes + kv) / self._bytes_rate
        return max(flops / self._flops_rate, memory) + self.gpu.step_overhead_s

    def comm_time(self, tokens: int) -> float:
        """Two ring all-reduces per layer (attention and MLP outputs) over ``tp`` GPUs."""
        if self.tp == 1:
            return 0.0
        payload = tokens * self.shape.hidden * 2 * 2 * (self.tp - 1) / self.tp
        per_call = self.gpu.allreduce_latency_s + payload / self._link_rate
        return 2 * self.shape.layers * per_call

    def iteration_time(self, work: IterationWork) -> float:
        tokens = work.decode_seqs + work.prefill_tokens
        return self.forward_time(work) + self.comm_time(tokens) if tokens else 0.0
