"""Which points to measure: the shards and GEMM types of the user's presets, decode batches
and contexts up to each preset's limits, prompts, mixed iterations, in order of information,
cut to what fits the GPU's memory and the time budget. No PyTorch here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from expert_router.emulator.gpuspec import WEIGHT_PATH
from expert_router.emulator.hardware import DTYPE_BYTES, HEAD_BYTES
from expert_router.emulator.measurements import ModelTag, parse_tag
from expert_router.emulator.perf import IterationWork
from expert_router.emulator.presets import Preset

DISTINCT_LAYERS = 6
"""Distinct layers allocated and cycled through all layers (each far beyond the L2 cache)."""
WARMUPS, REPLAYS, PREFILL_REPLAYS = 2, 8, 5
CONTEXTS = (512, 2048)
PROMPTS = (1535, 8192, 335)
MEMORY_SHARE = 0.8
"""Share of the GPU's free memory a point may take (weights, KV caches, activations)."""


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """One forward pass to measure: ``prompt`` is the prefill (or the chunk of a mixed one)."""

    kind: str
    model: ModelTag
    batch: int = 0
    ctx: int = 0
    prompt: int = 0

    def work(self) -> IterationWork:
        p = self.prompt
        return IterationWork(self.batch, self.batch * self.ctx, p, p * p / 2, 1 if p else 0)

    def fields(self) -> dict[str, int]:
        """The point's fields in a measurement-file line (without ``s``)."""
        if self.kind == "decode":
            return {"batch": self.batch, "ctx": self.ctx}
        if self.kind == "prefill":
            return {"prompt": self.prompt}
        return {"batch": self.batch, "ctx": self.ctx, "chunk": self.prompt}

    def memory_bytes(self) -> float:
        """Weights of the distinct layers and LM head, their KV caches, the largest activation."""
        shard, dt = self.model.shape.shard(self.model.tp), self.model.dtype
        weights: float = DISTINCT_LAYERS * shard.layer_params * DTYPE_BYTES[dt]
        weights += shard.head_params * HEAD_BYTES
        kv = DISTINCT_LAYERS * self.batch * self.ctx * shard.kv_bytes_per_token("bf16")
        kv /= self.model.shape.layers
        rows = self.batch + self.prompt
        ffn = self.model.shape.ffn // self.model.tp
        acts: float = rows * (3 * ffn + 6 * self.model.shape.hidden) * 2
        acts += rows * shard.head_params / self.model.shape.hidden * 4  # logits in fp32
        return weights + kv + acts


def tag_of(preset: Preset) -> ModelTag:
    """The shard and GEMM family a preset runs: 16-bit weights on bf16 GEMMs, 8- and 4-bit
    weights on the quantised (fp8) path, as ``fit`` prices them."""
    tp = f"/tp{preset.tp}" if preset.tp > 1 else ""
    return parse_tag(f"{preset.shape.name}{tp}/{WEIGHT_PATH[preset.weight_dtype]}")


def points_for(tag: ModelTag, max_batch: int) -> list[PlannedPoint]:
    """A model's points, most informative first: batch 1, a long prompt, the largest batch at
    a long context, then the rest of the grid and a mixed iteration."""
    top = max(max_batch, 1)
    batches = sorted({1, 8, 32, max(top // 4, 1), max(top // 2, 1), top})
    context = tag.shape.context
    prompts = [p for p in PROMPTS if p <= context]
    first = [PlannedPoint("decode", tag, 1, CONTEXTS[0]), PlannedPoint("prefill", tag, 0, 0,
             prompts[0]), PlannedPoint("decode", tag, top, CONTEXTS[-1])]  # fmt: skip
    rest = [PlannedPoint("decode", tag, b, c) for c in CONTEXTS for b in batches]
    rest += [PlannedPoint("prefill", tag, 0, 0, p) for p in prompts[1:]]
    rest.append(PlannedPoint("mixed", tag, max(top // 4, 1), 1024, 512))
    return list(dict.fromkeys(first + rest))


def plan(
    presets: Sequence[Preset],
    *,
    budget_s: float,
    free_bytes: float,
    estimate_s: Callable[[PlannedPoint], float],
) -> tuple[list[PlannedPoint], list[str]]:
    """The points to measure, interleaved across models by rank so that a budget cut keeps the
    most informative of every model; returns them and a note per point left out."""
    per_tag: dict[str, list[PlannedPoint]] = {}
    for preset in presets:
        tag = tag_of(preset)
        old = per_tag.get(tag.tag, [])
        new = points_for(tag, preset.max_batch)
        per_tag[tag.tag] = list(dict.fromkeys(old + new)) if old else new
    ranked = [p for rank in range(max(map(len, per_tag.values()), default=0))
              for pts in per_tag.values() if rank < len(pts) for p in (pts[rank],)]  # fmt: skip
    chosen: list[PlannedPoint] = []
    notes: list[str] = []
    spent = 0.0
    for p in ranked:
        label = f"{p.kind} {p.model.tag} {p.fields()}"
        if p.memory_bytes() > free_bytes * MEMORY_SHARE:
            notes.append(f"{label}: needs {p.memory_bytes() / 1e9:.1f} GB, left out")
            continue
        cost = estimate_s(p)
        if spent + cost > budget_s:
            notes.append(f"{label}: over the time budget, left out")
            continue
        spent += cost
        chosen.append(p)
    return chosen, notes


def point_cost_s(step_s: float, kind: str) -> float:
    """Wall time of measuring one point whose forward pass takes ``step_s``: eager warm-ups,
    graph capture, warm-up replays and timed replays, plus set-up."""
    replays = PREFILL_REPLAYS if kind == "prefill" else REPLAYS
    return (2 + 1 + WARMUPS + replays) * step_s + 0.5
