"""The roofline model computed by hand, and the presets (paper's Table I, overrides, YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_router.emulator.hardware import GPUS, MODELS, GPUSpec, ModelShape
from expert_router.emulator.perf import FixedTiming, IterationWork, RooflineModel
from expert_router.emulator.presets import PRESETS, get_preset, load_preset_file
from expert_router.errors import ConfigError

GPU = GPUSpec(
    name="g", flops={"fp16": 100.0, "fp8": 200.0}, hbm_bytes_per_s=1000.0,
    link_bytes_per_s=10.0, memory_gb=1, compute_efficiency=0.5, memory_efficiency=0.5,
    link_efficiency=1.0, allreduce_latency_s=0.25, step_overhead_s=1.0,
)  # fmt: skip
SHAPE = ModelShape(name="m", layers=1, hidden=2, heads=1, kv_heads=1, ffn=1, vocab=3, context=64)


def test_model_shapes_match_public_parameter_counts() -> None:
    assert MODELS["llama2-13b"].params == pytest.approx(13.0e9, rel=0.01)
    assert MODELS["llama2-70b"].params == pytest.approx(69.0e9, rel=0.01)
    assert MODELS["llama3-8b"].params == pytest.approx(8.03e9, rel=0.01)
    assert MODELS["llama3-70b"].params == pytest.approx(70.6e9, rel=0.01)
    # Llama 2 70B (GQA, 8 KV heads): 2 * 80 * 8 * 128 values per token
    assert MODELS["llama2-70b"].kv_elements_per_token() == 163_840


def test_roofline_by_hand() -> None:
    # layer params: 2*2*2 + 2*2*2 + 3*2*1 = 22; params = 22 + 2*3*2 = 34
    assert SHAPE.layer_params == 22 and SHAPE.params == 34
    m = RooflineModel(GPU, SHAPE, weight_dtype="fp16", kv_dtype="fp16")
    assert m.weight_bytes == 68 and m.kv_bytes_per_token == 2 * 1 * 1 * 2 * 2
    work = IterationWork(decode_seqs=2, decode_ctx=10)
    # flops: 2*22*2 tokens + 2*3*2*2 logits + 4*1*2*10 attention = 88 + 24 + 80 = 192
    assert m.compute_time(work) == pytest.approx(192 / 50)
    # bytes: 68 weights + 10 * 8 KV = 148 at 500 B/s
    assert m.memory_time(work) == pytest.approx(148 / 500)
    assert m.iteration_time(work) == pytest.approx(192 / 50 + 1.0)
    assert m.iteration_time(IterationWork()) == 0.0
    assert m.lower_bound_tpot() == pytest.approx(68 / 1000)


def test_tensor_parallel_allreduce_cost() -> None:
    m = RooflineModel(GPU, SHAPE, tp=2)
    # per all-reduce: 0.25 s + 3 tokens * 2 hidden * 2 B * 2 * (1/2) / 10 B/s; 2 per layer
    assert m.comm_time(3) == pytest.approx(2 * (0.25 + 12 / 10))
    assert RooflineModel(GPU, SHAPE, tp=1).comm_time(3) == 0.0


def test_fixed_timing() -> None:
    f = FixedTiming(tpot_s=0.02, ttft_s=0.1)
    assert f.iteration_time(IterationWork(decode_seqs=5)) == 0.02
    assert f.iteration_time(IterationWork(decode_seqs=5, prefill_tokens=3)) == 0.1
    assert f.iteration_time(IterationWork()) == 0.0


def test_paper_presets_follow_table_one() -> None:
    a, b, c, d = (PRESETS[k] for k in "ABCD")
    assert (a.tp, a.max_batch, a.kv_gb) == (8, 600, 366)
    assert (b.weight_dtype, b.max_batch, b.kv_capacity) == ("int8", 60, 72_000)
    assert (c.weight_dtype, c.max_batch, c.kv_capacity) == ("fp16", 40, 160_000)
    assert (d.weight_dtype, d.kv_dtype, d.max_batch, d.kv_capacity) == ("fp8", "fp8", 150, 159_000)
    weights = {k: PRESETS[k].roofline().weight_bytes / 1e9 for k in "ABCD"}
    assert weights == pytest.approx({"A": 138, "B": 69, "C": 26, "D": 13}, rel=0.02)
    # KV capacity from bytes: 366 GB / 327,680 B per token
    assert a.kv_capacity == 366_000_000_000 // 327_680


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_sits_above_its_physical_floor(name: str) -> None:
    r = PRESETS[name].roofline()
    assert r.lower_bound_tpot() < r.decode_time(1, 100) < 2 * r.lower_bound_tpot()
    assert r.decode_time(32, 1000) > r.decode_time(1, 1000)


def test_overrides_and_fixed_timing() -> None:
    p = get_preset("cpu-tiny", max_batch=2, kv_tokens=500, tpot_ms=20, ttft_ms=50)
    assert (p.max_batch, p.kv_capacity, p.context) == (2, 500, 500)
    assert p.timing() == FixedTiming(tpot_s=0.02, ttft_s=0.05)
    assert get_preset("cpu-tiny", model_name="x").model_name == "x"
    assert get_preset(p) is p


def test_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        get_preset("C", max_batch=0)
    with pytest.raises(ConfigError, match="bogus"):
        get_preset("C", bogus=1)
    with pytest.raises(ConfigError, match="unknown 'Z'"):
        get_preset("Z")
    with pytest.raises(ConfigError, match="tpot_ms"):
        get_preset("C", ttft_ms=5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: llama2-13b\nmax_batch: 4\nkv_tokens: 100\nweight_dtype: fp4\n")
    with pytest.raises(ConfigError, match="weight_dtype"):
        load_preset_file(bad)


def test_custom_preset_yaml_with_inline_shapes(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "model_name: my-expert\n"
        "gpu: {name: x, flops: {fp16: 1.0e14}, hbm_bytes_per_s: 1.0e12, link_bytes_per_s: 1.0e11,"
        " memory_gb: 24, compute_efficiency: 0.5, memory_efficiency: 0.8, link_efficiency: 0.7,"
        " allreduce_latency_s: 1.0e-5, step_overhead_s: 0.001}\n"
        "model: llama3-8b\nmax_batch: 16\nkv_gb: 4\n"
    )
    p = get_preset(str(path))
    assert p.name == "mine" and p.model_name == "my-expert" and p.gpu_spec.name == "x"
    assert p.kv_capacity == 4_000_000_000 // 131_072
    assert p.roofline().decode_time(1, 10) > 16e9 / 1e12


def test_builtin_gpu_is_h100_datasheet() -> None:
    h = GPUS["h100-sxm"]
    assert h.flops["fp16"] == 989e12 and h.flops["fp8"] == 1979e12
    assert h.hbm_bytes_per_s == 3.35e12 and h.link_bytes_per_s * 2 == 900e9
