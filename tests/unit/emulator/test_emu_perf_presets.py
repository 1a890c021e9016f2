"""The step model computed by hand, the shards, and the presets (Table I, v2, KV physics, YAML)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expert_router.emulator.catalog import PRESETS
from expert_router.emulator.gpuspec import GPUSpec, Provenance, builtin_dir, load_gpu
from expert_router.emulator.hardware import DTYPE_BYTES, MODELS, ModelShape
from expert_router.emulator.measurements import parse_tag
from expert_router.emulator.perf import FixedTiming, IterationWork, StepModel, pnorm
from expert_router.emulator.presets import get_preset, load_preset_file
from expert_router.errors import ConfigError

GPU = GPUSpec(
    name="g", memory_gb=1000, sms=2, hbm_bytes_per_s=2000.0, weight_bytes_per_s=1000.0,
    kv_bytes_per_s=500.0, gemm_flops={"bf16": 100.0, "fp8": 200.0}, attention_flops=50.0,
    layer_s={"bf16": 0.5, "fp8": 0.75}, overlap=1e9, attention_token_s=0.125,
    link_bytes_per_s=10.0, allreduce_latency_s=0.25, step_overhead_s=1.0,
    provenance=Provenance(source="test"),
)  # fmt: skip
SHAPE = ModelShape(name="m", layers=1, hidden=2, heads=2, kv_heads=1, ffn=2, vocab=3, context=64)


def test_model_shapes_match_public_parameter_counts() -> None:
    assert MODELS["llama2-13b"].params == pytest.approx(13.0e9, rel=0.01)
    assert MODELS["llama2-70b"].params == pytest.approx(69.0e9, rel=0.01)
    assert MODELS["llama3-8b"].params == pytest.approx(8.03e9, rel=0.01)
    assert MODELS["llama3-70b"].params == pytest.approx(70.6e9, rel=0.01)
    # Llama 2 70B (GQA, 8 KV heads): 2 * 80 * 8 * 128 values per token
    assert MODELS["llama2-70b"].kv_elements_per_token() == 163_840


def test_shards_hold_the_weights_the_measurement_file_states() -> None:
    path = builtin_dir() / "h200-step-times.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    models = [r for r in rows if r["kind"] == "model"]
    assert len(models) == 5
    for r in models:
        tag = parse_tag(r["model"])
        shard = tag.shape.shard(tag.tp)
        assert shard.layer_params * DTYPE_BYTES[tag.dtype] == r["layer_weight_bytes"]
        assert shard.weight_bytes(tag.dtype) == r["weights_bytes_total"]
    shard = MODELS["llama3-70b"].shard(4)
    assert (shard.q_heads, shard.kv_heads, shard.group) == (16, 2, 8)
    assert MODELS["llama2-70b"].shard(16).kv_heads == 1  # fewer KV heads than GPUs: replicated
    with pytest.raises(ValueError, match="does not divide"):
        MODELS["llama2-13b"].shard(3)


def test_step_model_by_hand() -> None:
    # shard: q 2, kv 1 head of dim 1; layer params 2*2*2 + 2*2*1 + 3*2*2 = 24; head 3*2 = 6
    m = StepModel(GPU, SHAPE, weight_dtype="bf16", kv_dtype="bf16", compute_dtype="bf16")
    assert (m.shard.layer_params, m.shard.head_params) == (24, 6)
    assert m.weight_bytes == 24 * 2 + 2 * 6 * 2 and m.kv_bytes_per_token == 2 * 1 * 1 * 2
    w = IterationWork(decode_seqs=2, decode_ctx=10)
    # overlap p -> infinity: each p-norm is a max
    layer, gemm = 0.5, max(48 / 1000, 2 * 2 * 24 / 100)  # weights 48 B; 2 rows of 48 FLOP
    head = max(12 / 1000, 2 * 2 * 6 / 100)
    # KV: 10 tokens * 4 B / 500; serial: group 2 * 0.125 s * max(5 per seq, 10 * 1 head / 2 SMs)
    attn = max(10 * 4 / 500, 2 * 0.125 * 5)
    assert m.forward_time(w) == pytest.approx(layer + gemm + head + attn)
    assert m.iteration_time(w) == pytest.approx(layer + gemm + head + attn + 1.0)
    pre = IterationWork(prefill_tokens=3, prefill_attn=4.5, prefill_done=1)
    # prefill attention: 4 * layers * q_dim (2) FLOP per position at 50 FLOP/s
    expect = 0.5 + max(0.048, 3 * 0.48) + max(0.012, 0.12) + 4.5 * 8 / 50
    assert m.forward_time(pre) == pytest.approx(expect)
    assert m.iteration_time(IterationWork()) == 0.0
    assert m.lower_bound_tpot() == pytest.approx((48 + 12) / 2000)


def test_pnorm_joins_two_streams() -> None:
    assert pnorm(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert pnorm(3.0, 0.0, 2.0) == 3.0
    assert 4.0 < pnorm(3.0, 4.0, 8.0) < 4.1


def test_tensor_parallel_allreduce_cost() -> None:
    shape = SHAPE.model_copy(update={"heads": 2, "kv_heads": 2})
    m = StepModel(GPU, shape, tp=2)
    # per all-reduce: 0.25 s + 3 tokens * 2 hidden * 2 B * 2 * (1/2) / 10 B/s; 2 per layer
    assert m.comm_time(3) == pytest.approx(2 * (0.25 + 12 / 10))
    assert StepModel(GPU, shape, tp=1).comm_time(3) == 0.0


def test_fixed_timing() -> None:
    f = FixedTiming(tpot_s=0.02, ttft_s=0.1)
    assert f.iteration_time(IterationWork(decode_seqs=5)) == 0.02
    assert f.iteration_time(IterationWork(decode_seqs=5, prefill_tokens=3)) == 0.1
    assert f.iteration_time(IterationWork()) == 0.0


def test_paper_presets_follow_table_one_on_the_h100_spec() -> None:
    a, b, c, d = (PRESETS[k] for k in "ABCD")
    assert {p.gpu for p in (a, b, c, d)} == {"h100"}
    assert (a.tp, a.max_batch, a.kv_gb) == (8, 600, 366)
    assert (b.weight_dtype, b.max_batch, b.kv_capacity) == ("int8", 60, 72_000)
    assert (c.weight_dtype, c.max_batch, c.kv_capacity) == ("fp16", 40, 160_000)
    assert (d.weight_dtype, d.kv_dtype, d.max_batch, d.kv_capacity) == ("fp8", "fp8", 150, 159_000)
    weights = {k: PRESETS[k].step_model().weight_bytes * PRESETS[k].tp / 1e9 for k in "ABCD"}
    assert weights == pytest.approx({"A": 138, "B": 69, "C": 26, "D": 13}, rel=0.03)
    # KV capacity from bytes: 366 GB / 327,680 B per token
    assert a.kv_capacity == 366_000_000_000 // 327_680


def test_kv_capacity_from_physics() -> None:
    c = PRESETS["C"]
    # 0.9 x (85.52 GB - 2 GB reserve - 26.03 GB of 13B FP16 weights) / 819,200 B per token
    expect = int(0.9 * (85.52e9 - 2e9 - 26_030_899_200) // 819_200)
    assert c.physical_kv_tokens() == expect
    assert c.with_overrides(kv_source="physics").kv_capacity == expect < c.kv_capacity
    # the paper's D (FP8 KV) roughly agrees with physics; C and B state 2x what fits
    assert PRESETS["D"].physical_kv_tokens() == pytest.approx(159_000, rel=0.05)
    assert PRESETS["B"].physical_kv_tokens() < 72_000 / 1.8
    more = c.with_overrides(kv_source="physics", activation_reserve_gb=0, kv_memory_fraction=1)
    assert more.kv_capacity == int((85.52e9 - 26_030_899_200) // 819_200)
    with pytest.raises(ConfigError, match="kv_source: the weights"):
        get_preset("B", kv_source="physics", activation_reserve_gb=20)


def test_v2_presets() -> None:
    tp16, tp4, e70, e8 = (PRESETS[k] for k in ("v2-tp8-bf16", "v2-tp8-awq", "v2-70b-awq", "v2-8b"))
    assert {p.kv_source for p in (tp16, tp4, e70, e8)} == {"physics"}
    assert (tp16.tp, tp16.weight_dtype, tp4.tp, tp4.weight_dtype) == (8, "bf16", 8, "int4")
    assert (e70.tp, e70.weight_dtype, e70.shape.name, e8.shape.name) == (1, "int4", "llama3-70b",
                                                                         "llama3-8b")  # fmt: skip
    # a 4-bit 70B fits one 80 GB GPU with room for a KV cache; the baselines span 8 GPUs
    assert 35e9 < e70.step_model().weight_bytes < 42e9 and e70.kv_capacity > 100_000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_sits_above_its_physical_floor(name: str) -> None:
    p = PRESETS[name]
    r = p.step_model()
    gpu, floor = p.gpu_spec, r.lower_bound_tpot()
    fixed = p.shape.layers * gpu.layer_cost(p.weight_dtype) + r.comm_time(1) + gpu.step_overhead_s
    # above the floor, by at most the fixed costs and the achieved vs datasheet bandwidth
    assert floor < r.decode_time(1, 100) < 1.3 * floor + fixed
    assert r.decode_time(32, 1000) > r.decode_time(1, 1000)


def test_overrides_and_fixed_timing() -> None:
    p = get_preset("cpu-tiny", max_batch=2, kv_tokens=500, tpot_ms=20, ttft_ms=50)
    assert (p.max_batch, p.kv_capacity, p.context) == (2, 500, 500)
    assert p.timing() == FixedTiming(tpot_s=0.02, ttft_s=0.05)
    assert get_preset("cpu-tiny", model_name="x").model_name == "x"
    assert get_preset(p) is p
    assert get_preset("C", gpu="h200").step_model().decode_time(1, 512) < PRESETS[
        "C"
    ].step_model().decode_time(1, 512)


def test_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        get_preset("C", max_batch=0)
    with pytest.raises(ConfigError, match="bogus"):
        get_preset("C", bogus=1)
    with pytest.raises(ConfigError, match="unknown 'Z'"):
        get_preset("Z")
    with pytest.raises(ConfigError, match="tpot_ms"):
        get_preset("C", ttft_ms=5)
    with pytest.raises(ConfigError, match=r"'C': gpu: unknown 'h900'"):
        get_preset("C", gpu="h900")
    with pytest.raises(ConfigError, match=r"gpu: gpu file .*nowhere.yaml: not found"):
        get_preset("C", gpu=str(tmp_path / "nowhere.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: llama2-13b\nmax_batch: 4\nkv_tokens: 100\nweight_dtype: fp4\n")
    with pytest.raises(ConfigError, match="weight_dtype"):
        load_preset_file(bad)
    bad.write_text("model: llama2-13b\nmax_batch: 4\n")
    with pytest.raises(ConfigError, match="kv_tokens: give kv_tokens or kv_gb, or kv_source"):
        load_preset_file(bad)


def test_custom_preset_yaml_with_a_gpu_file_beside_it(tmp_path: Path) -> None:
    spec = load_gpu("h200").model_copy(update={"name": "mine", "weight_bytes_per_s": 1.0e12})
    (tmp_path / "my-gpu.yaml").write_text(
        __import__("yaml").safe_dump(spec.model_dump(mode="json"))
    )
    path = tmp_path / "mine.yaml"
    path.write_text(
        "model_name: my-expert\ngpu: my-gpu.yaml\nmodel: llama3-8b\nmax_batch: 16\nkv_gb: 4\n"
    )
    p = get_preset(str(path))
    assert p.name == "mine" and p.model_name == "my-expert" and p.gpu_spec.name == "mine"
    assert p.kv_capacity == 4_000_000_000 // 131_072
    assert p.step_model().decode_time(1, 10) > 15e9 / 1e12
    inline = tmp_path / "inline.yaml"
    inline.write_text(f"model: tiny\nmax_batch: 2\nkv_tokens: 99\ngpu: {spec.model_dump_json()}\n")
    assert load_preset_file(inline).gpu_spec.weight_bytes_per_s == 1.0e12


def test_builtin_specs_record_their_provenance() -> None:
    h200, h100 = load_gpu("h200"), load_gpu("h100")
    assert h200.device == "NVIDIA H200" and h200.provenance.fit["points"] == 60
    assert len(h200.provenance.fit["sha256"]) == 64
    assert set(h200.provenance.assumed) >= {"link_bytes_per_s", "step_overhead_s"}
    # the H100: the H200's compute, 3.35 instead of 4.8 TB/s
    ratio = 3.35 / 4.8
    assert h100.weight_bytes_per_s == pytest.approx(h200.weight_bytes_per_s * ratio)
    assert h100.kv_bytes_per_s == pytest.approx(h200.kv_bytes_per_s * ratio)
    assert (h100.gemm_flops, h100.layer_s) == (h200.gemm_flops, h200.layer_s)
    assert "derived from h200" in h100.provenance.method and h100.memory_gb < 90
    assert load_gpu("toy").provenance.source == "fictional"
