"""Forward passes of a model shard on a CUDA GPU, timed as ../shared/data/gpu/README.md says.

cuBLAS GEMMs (bf16; fp8 through ``torch._scaled_mm`` with per-tensor scales, activations
quantised per GEMM, rows padded to 16), flash attention (``scaled_dot_product_attention``;
decode over a contiguous KV cache, GQA folded per KV head), RMSNorm, SiLU-gated MLP, residual
adds, the bf16 LM head on the last positions. Random weights, ``DISTINCT_LAYERS`` layers cycled;
each point captured in a CUDA graph and timed with CUDA events (median of the replays).
PyTorch is imported when a ``Bench`` is made, never at import time.
"""

from __future__ import annotations

import statistics
from typing import Any

from expert_router.emulator.measurements import ModelTag
from expert_router.profiler.plan import DISTINCT_LAYERS, PREFILL_REPLAYS, REPLAYS, WARMUPS

FP8_MAX = 448.0  # largest float8_e4m3fn value


def cuda_unavailable() -> str | None:
    """Why profiling cannot run here (None: PyTorch sees a CUDA device)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install 'expert-router[gpu]')"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device"
    return None


class Bench:
    """Times forward passes on CUDA device 0."""

    def __init__(self) -> None:
        import torch

        self.torch: Any = torch
        self.dev = torch.device("cuda", 0)
        self.bf16 = torch.bfloat16

    # -- device and ceilings ------------------------------------------------------------
    def device(self) -> dict[str, str]:
        t = self.torch
        return {"name": t.cuda.get_device_name(0), "torch": t.__version__,
                "props": str(t.cuda.get_device_properties(0))}  # fmt: skip

    def release(self) -> None:
        """Return freed memory to the device (after dropping a shard)."""
        import gc

        gc.collect()
        self.torch.cuda.empty_cache()

    def free_bytes(self) -> float:
        free, _total = self.torch.cuda.mem_get_info(0)
        return float(free)

    def _median_s(self, fn: Any, n: int) -> float:
        t = self.torch
        times = []
        for _ in range(n):
            start, end = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return float(statistics.median(times))

    def ceilings(self) -> dict[str, float]:
        """Device copy (bytes read + written per s), bf16 and fp8 8192^3 GEMM FLOP/s."""
        t, n = self.torch, 8192
        a = t.empty(1 << 30, dtype=t.uint8, device=self.dev)
        b = t.empty_like(a)
        b.copy_(a)
        copy_s = self._median_s(lambda: b.copy_(a), 10)
        out = {"copy_bytes_per_s": 2.0 * (1 << 30) / copy_s}
        a = b = None
        x = t.randn(n, n, device=self.dev, dtype=self.bf16)
        w = t.randn(n, n, device=self.dev, dtype=self.bf16)
        x @ w
        out["bf16_flops"] = 2 * n**3 / self._median_s(lambda: x @ w, 10)
        xq, wq = x.to(t.float8_e4m3fn), w.to(t.float8_e4m3fn)
        one = t.ones((), device=self.dev, dtype=t.float32)

        def fp8() -> Any:
            return t._scaled_mm(xq, wq.t(), scale_a=one, scale_b=one, out_dtype=self.bf16)

        fp8()
        out["fp8_flops"] = 2 * n**3 / self._median_s(fp8, 10)
        t.cuda.empty_cache()
        return out

    # -- one shard ----------------------------------------------------------------------
    def shard(self, tag: ModelTag) -> Shard:
        return Shard(self, tag)

    def time_graph(self, fn: Any, replays: int) -> float:
        """Capture ``fn`` in a CUDA graph (after eager warm-ups) and time its replays."""
        t = self.torch
        side = t.cuda.Stream()
        side.wait_stream(t.cuda.current_stream())
        with t.cuda.stream(side):
            for _ in range(2):
                fn()
        t.cuda.current_stream().wait_stream(side)
        graph = t.cuda.CUDAGraph()
        with t.cuda.graph(graph):
            fn()
        for _ in range(WARMUPS):
            graph.replay()
        t.cuda.synchronize()
        seconds = self._median_s(graph.replay, replays)
        del graph
        return seconds


class Shard:
    """The distinct layers of one model shard, its LM head and the forward passes."""

    def __init__(self, bench: Bench, tag: ModelTag) -> None:
        t = bench.torch
        self.b, self.t, self.tag = bench, t, tag
        s = tag.shape.shard(tag.tp)
        self.hd, self.h = tag.shape.head_dim, tag.shape.hidden
        self.qh, self.kvh, self.layers = s.q_heads, s.kv_heads, tag.shape.layers
        q, kv, f = s.q_heads * self.hd, s.kv_heads * self.hd, tag.shape.ffn // tag.tp
        self.fp8 = tag.dtype == "fp8"
        shapes = {"q": (q, self.h), "k": (kv, self.h), "v": (kv, self.h), "o": (self.h, q),
                  "gate": (f, self.h), "up": (f, self.h), "down": (self.h, f)}  # fmt: skip
        self.weights = [{k: self._weight(shape) for k, shape in shapes.items()}
                        for _ in range(DISTINCT_LAYERS)]  # fmt: skip
        self.norms = t.ones(self.h, device=bench.dev, dtype=bench.bf16)
        self.head = t.randn(s.head_params // self.h, self.h, device=bench.dev,
                            dtype=bench.bf16) * 0.02  # fmt: skip
        self.one = t.ones((), device=bench.dev, dtype=t.float32)

    def _weight(self, shape: tuple[int, int]) -> Any:
        t = self.t
        w = t.randn(*shape, device=self.b.dev, dtype=self.b.bf16) * 0.02
        return w.to(t.float8_e4m3fn) if self.fp8 else w

    def _linear(self, x: Any, w: Any) -> Any:
        t = self.t
        if not self.fp8:
            return t.nn.functional.linear(x, w)
        rows = x.shape[0]
        pad = -rows % 16
        if pad:
            x = t.nn.functional.pad(x, (0, 0, 0, pad))
        scale = (x.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
        xq = (x / scale).to(t.float8_e4m3fn)
        out = t._scaled_mm(xq, w.t(), scale_a=scale, scale_b=self.one, out_dtype=self.b.bf16)
        out = out[0] if isinstance(out, tuple) else out
        return out[:rows]

    def _norm(self, x: Any) -> Any:
        x32 = x.float()
        return (x32 * x32.pow(2).mean(-1, keepdim=True).add(1e-5).rsqrt()).to(x.dtype) * self.norms

    def caches(self, batch: int, ctx: int) -> list[tuple[Any, Any]]:
        """Random K and V caches, one per distinct layer: (batch, KV heads, ctx, head dim)."""
        t = self.t
        shape = (batch, self.kvh, ctx, self.hd)
        return [(t.randn(shape, device=self.b.dev, dtype=self.b.bf16),
                 t.randn(shape, device=self.b.dev, dtype=self.b.bf16))
                for _ in range(DISTINCT_LAYERS)]  # fmt: skip

    def _attend(self, q: Any, k: Any, v: Any, batch: int, prompt: int, cache: Any) -> Any:
        """Decode rows attend over their cache (GQA folded), prompt rows causally to the prompt."""
        sdpa, out = self.t.nn.functional.scaled_dot_product_attention, []
        g = self.qh // self.kvh
        if batch:
            qd = q[:batch].view(batch, self.kvh, g, self.hd)
            out.append(sdpa(qd, cache[0], cache[1]).reshape(batch, self.qh * self.hd))
        if prompt:
            qp = q[batch:].view(1, prompt, self.qh, self.hd).transpose(1, 2)
            kp = k[batch:].view(1, prompt, self.kvh, self.hd).transpose(1, 2)
            vp = v[batch:].view(1, prompt, self.kvh, self.hd).transpose(1, 2)
            if g > 1:
                kp, vp = kp.repeat_interleave(g, dim=1), vp.repeat_interleave(g, dim=1)
            o = sdpa(qp, kp, vp, is_causal=True)
            out.append(o.transpose(1, 2).reshape(prompt, self.qh * self.hd))
        return out[0] if len(out) == 1 else self.t.cat(out)

    def forward_fn(self, batch: int, ctx: int, prompt: int) -> Any:
        """A closure running one forward pass of ``batch`` decodes (ctx cached tokens each)
        and one ``prompt``-token prefill, on static buffers (graph-capturable)."""
        t = self.t
        rows = batch + prompt
        x0 = t.randn(rows, self.h, device=self.b.dev, dtype=self.b.bf16)
        caches = self.caches(batch, ctx) if batch else [None] * DISTINCT_LAYERS
        last = list(range(batch)) + ([rows - 1] if prompt else [])
        idx = t.tensor(last, device=self.b.dev)

        def forward() -> Any:
            x = x0
            for i in range(self.layers):
                w, cache = self.weights[i % DISTINCT_LAYERS], caches[i % DISTINCT_LAYERS]
                y = self._norm(x)
                q, k, v = (self._linear(y, w[n]) for n in ("q", "k", "v"))
                x = x + self._linear(self._attend(q, k, v, batch, prompt, cache), w["o"])
                y = self._norm(x)
                act = t.nn.functional.silu(self._linear(y, w["gate"])) * self._linear(y, w["up"])
                x = x + self._linear(act, w["down"])
            return t.nn.functional.linear(self._norm(x).index_select(0, idx), self.head)

        return forward

    def measure(self, batch: int, ctx: int, prompt: int, kind: str) -> float:
        """Median seconds of the forward pass (CUDA graph replays)."""
        replays = PREFILL_REPLAYS if kind == "prefill" else REPLAYS
        seconds = self.b.time_graph(self.forward_fn(batch, ctx, prompt), replays)
        self.t.cuda.empty_cache()
        return seconds
