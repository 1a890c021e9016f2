"""A profile run: device line, ceilings, one line per measured point, within a time budget.

Every line is written and flushed as soon as it is measured, so an interrupted run leaves a
usable file. Estimates of each point's cost come from the built-in ``h200`` step model,
scaled by the GPU's measured copy bandwidth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from expert_router.emulator.gpuspec import load_gpu
from expert_router.emulator.hardware import DTYPE_BYTES
from expert_router.emulator.measurements import ModelTag, format_line
from expert_router.emulator.perf import StepModel
from expert_router.emulator.presets import Preset
from expert_router.errors import ConfigError
from expert_router.profiler.plan import PlannedPoint, plan, point_cost_s

Log = Callable[[str], None]


def estimator(copy_bytes_per_s: float) -> Callable[[PlannedPoint], float]:
    """Seconds to measure a point, from the h200 model scaled to this GPU's bandwidth."""
    h200 = load_gpu("h200")
    slower = max(h200.weight_bytes_per_s / (copy_bytes_per_s or 1.0), 1.0)

    def estimate(p: PlannedPoint) -> float:
        t = p.model
        m = StepModel(h200, t.shape, weight_dtype=t.dtype, kv_dtype="bf16",
                      compute_dtype=t.dtype, tp=t.tp)  # fmt: skip
        return point_cost_s(m.forward_time(p.work()) * slower, p.kind)

    return estimate


class Device(Protocol):
    """What ``profile`` needs of the GPU (``forward.Bench``; tests pass a stand-in)."""

    def device(self) -> dict[str, str]: ...

    def ceilings(self) -> dict[str, float]: ...

    def free_bytes(self) -> float: ...

    def release(self) -> None: ...

    def shard(self, tag: ModelTag) -> Any: ...


def profile(
    presets: Sequence[Preset],
    out: Path,
    *,
    budget_s: float,
    log: Log = lambda _m: None,
    bench: Device | None = None,
) -> int:
    """Measure the points of ``presets`` on CUDA device 0 (or ``bench``) into ``out``;
    returns the number of points written."""
    if bench is None:
        from expert_router.profiler.forward import Bench, cuda_unavailable

        why = cuda_unavailable()
        if why is not None:
            raise ConfigError(f"needs PyTorch with a CUDA GPU: {why}")
        bench = Bench()
    start = time.perf_counter()
    try:
        fh = open(out, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc

    def write(kind: str, **fields: object) -> None:
        fh.write(format_line(kind, **fields, t=round(time.perf_counter() - start, 1)) + "\n")
        fh.flush()

    written = 0
    try:
        write("device", **bench.device())
        ceilings = bench.ceilings()
        for what, value in ceilings.items():
            write("ceiling", what=what, value=value)
        log(", ".join(f"{k} {v:.3g}" for k, v in ceilings.items()))
        left = budget_s - (time.perf_counter() - start)
        points, notes = plan(presets, budget_s=left, free_bytes=bench.free_bytes(),
                             estimate_s=estimator(ceilings["copy_bytes_per_s"]))  # fmt: skip
        for note in notes:
            log(note)
        # measure model by model (one set of weights at a time), in the plan's order within each
        models = list(dict.fromkeys(p.model for p in points))
        points.sort(key=lambda p: models.index(p.model))
        shard = None
        for p in points:
            if time.perf_counter() - start > budget_s:
                log("time budget spent: stopping")
                break
            if shard is None or shard.tag != p.model:
                shard = None
                bench.release()
                shard = bench.shard(p.model)
                s = p.model.shape.shard(p.model.tp)
                layer = s.layer_params * DTYPE_BYTES[p.model.dtype]
                write("model", model=p.model.tag, layer_weight_bytes=int(layer),
                      layers=p.model.shape.layers,
                      weights_bytes_total=int(s.weight_bytes(p.model.dtype)))  # fmt: skip
            seconds = shard.measure(p.batch, p.ctx, p.prompt, p.kind)
            write(p.kind, model=p.model.tag, **p.fields(), s=seconds, mode="graph")
            written += 1
            log(f"{p.kind} {p.model.tag} {p.fields()}: {seconds * 1e3:.3f} ms")
    finally:
        fh.close()
    return written


__all__ = ["profile"]
