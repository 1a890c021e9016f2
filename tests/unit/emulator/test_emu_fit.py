"""Fitting GPU specs: known parameters recovered from synthetic data, the shipped fit's error,
the measurement file format and its errors, and the fit-gpu command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from expert_router.cli.main import main
from expert_router.emulator import fit
from expert_router.emulator.gpuspec import builtin_dir, load_gpu
from expert_router.emulator.measurements import format_line, parse_tag, read_measurements
from expert_router.emulator.perf import IterationWork, StepModel
from expert_router.errors import ConfigError

SHIPPED = builtin_dir() / "h200-step-times.jsonl"
PROPS = "_CudaDeviceProperties(name='X', total_memory=81559MB, multi_processor_count=132)"
FITTED = [k for k, _ in fit.PARAMS]


def _value(spec: object, key: str) -> float:
    name, _, sub = key.partition(".")
    v = getattr(spec, name)
    return float(v[sub] if sub else v)


def _synthetic(path: Path, truth: object) -> None:
    """Exact model times of a grid like the shipped file's: four shapes, bf16 and fp8, a tp8
    shard, decode, prefill and mixed iterations."""
    lines = [
        format_line("device", name="Test GPU", props=PROPS),
        format_line("ceiling", what="copy_bytes_per_s", value=3.0e12),
        format_line("ceiling", what="bf16_flops", value=6.0e14),
        format_line("ceiling", what="fp8_flops", value=1.2e15),
    ]
    for tag in ("llama2-13b/bf16", "llama2-13b/fp8", "llama2-70b/tp8/bf16", "llama2-70b/fp8",
                "llama3-8b/bf16", "llama3-70b/tp4/fp8"):  # fmt: skip
        t = parse_tag(tag)
        m = StepModel(truth, t.shape, weight_dtype=t.dtype, kv_dtype="bf16",  # type: ignore[arg-type]
                      compute_dtype=t.dtype, tp=t.tp)  # fmt: skip
        for b in (1, 16, 64, 256):
            for ctx in (512, 4096):
                s = m.forward_time(IterationWork(decode_seqs=b, decode_ctx=b * ctx))
                lines.append(format_line("decode", model=tag, batch=b, ctx=ctx, s=s))
        for p in (300, 2000, 8000):
            s = m.forward_time(IterationWork(prefill_tokens=p, prefill_attn=p * p / 2,
                                             prefill_done=1))  # fmt: skip
            lines.append(format_line("prefill", model=tag, prompt=p, s=s))
        work = IterationWork(decode_seqs=32, decode_ctx=32 * 1000, prefill_tokens=512,
                             prefill_attn=512 * 256, prefill_done=1)  # fmt: skip
        lines.append(format_line("mixed", model=tag, batch=32, ctx=1000, chunk=512,
                                 s=m.forward_time(work)))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_the_fit_recovers_known_parameters(tmp_path: Path) -> None:
    truth = load_gpu("h200").model_copy(
        update={"weight_bytes_per_s": 3.1e12, "kv_bytes_per_s": 2.7e12, "overlap": 3.2,
                "gemm_flops": {"bf16": 5.0e14, "fp8": 9.0e14}, "attention_flops": 2.5e14,
                "layer_s": {"bf16": 30e-6, "fp8": 70e-6}, "attention_token_s": 2.0e-9}
    )  # fmt: skip
    path = tmp_path / "synthetic.jsonl"
    _synthetic(path, truth)
    mf = read_measurements(path)
    assert len(mf.points) == 6 * (8 + 3 + 1) and mf.prop("multi_processor_count") == 132
    spec = fit.fit_spec(mf, name="test")
    for key in FITTED:
        assert _value(spec, key) == pytest.approx(_value(truth, key), rel=0.01), key
    assert spec.provenance.fit["worst_abs_err_pct"] < 0.1
    assert spec.memory_gb == pytest.approx(81559 * 2**20 / 1e9) and spec.sms == 132
    assert spec.provenance.fitted == FITTED and spec.device == "Test GPU"


def test_parameters_the_file_cannot_identify_stay_at_their_start(tmp_path: Path) -> None:
    truth = load_gpu("h200")
    path = tmp_path / "bf16-only.jsonl"
    _synthetic(path, truth)
    kept = [line for line in path.read_text().splitlines() if 'fp8"' not in line]
    path.write_text("\n".join(kept))
    spec = fit.fit_spec(read_measurements(path), name="x")
    assert "gemm_flops.fp8" not in spec.provenance.fitted
    assert "not constrained" in spec.provenance.assumed["layer_s.fp8"]
    assert spec.gemm_flops["fp8"] == pytest.approx(0.75 * 1.2e15, rel=1e-3)
    assert spec.gemm_flops["bf16"] == pytest.approx(truth.gemm_flops["bf16"], rel=0.01)


def test_the_shipped_fit_meets_its_targets_and_matches_a_refit() -> None:
    mf = read_measurements(SHIPPED)
    h200 = load_gpu("h200")
    err = np.abs(fit.errors_pct(h200, mf.points))
    assert len(err) == 60
    assert np.median(err) <= 5.0 and err.max() <= 15.0
    assert h200.provenance.fit["sha256"] == mf.sha256
    again = fit.fit_spec(mf, name="h200")
    for key in FITTED:
        assert _value(again, key) == pytest.approx(_value(h200, key), rel=1e-3), key


def test_folds_hold_out_models_batches_contexts_and_prompts() -> None:
    mf = read_measurements(SHIPPED)
    folds = fit.folds(mf.points)
    families = {f.family for f in folds}
    assert families == {"model", "batch", "context", "prompt"}
    assert sum(f.family == "model" for f in folds) == 5
    held = [p for p in mf.points if any(f.held(p) for f in folds if f.value == 600)]
    assert {p.batch for p in held} == {600} and len(held) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1: not JSON"),
        ('{"kind": "decode", "model": "llama2-13b/bf16", "batch": 1, "s": 0.1}', "needs ctx"),
        ('{"kind": "prefill", "model": "gpt2/bf16", "prompt": 5, "s": 0.1}', "unknown shape"),
        ('{"kind": "prefill", "model": "llama2-13b/int3", "prompt": 5, "s": 0.1}', "data type"),
        ('{"kind": "prefill", "model": "llama2-13b/tp3/bf16", "prompt": 5, "s": 1}', "divide"),
        ('{"kind": "prefill", "model": "llama2-13b/bf16", "prompt": 0, "s": 0.1}', "> 0"),
        ('{"kind": "mixed", "model": "llama2-13b/bf16", "batch": 2, "ctx": 9, "s": 1}', "chunk"),
        ('{"kind": "device", "name": "x"}', "no decode, prefill or mixed points"),
    ],
)
def test_bad_measurement_files_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message) as exc:
        read_measurements(path)
    assert "\n" not in str(exc.value)


def test_mixed_points_price_decode_and_a_prefill_chunk(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(format_line("mixed", model="llama3-70b/tp4/bf16", batch=8, ctx=100,
                                chunk=64, s=0.01))  # fmt: skip
    (p,) = read_measurements(path).points
    assert p.work() == IterationWork(8, 800, 64, 64 * 32, 1)
    assert p.label() == "mixed llama3-70b/tp4/bf16 b=8 ctx=100 chunk=64"


def test_fit_gpu_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine.yaml"
    assert main(["fit-gpu", str(SHIPPED), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "60 points; median |error| 2." in printed and f"wrote {out}" in printed
    assert load_gpu(str(out)).name == "mine"
    derived = tmp_path / "h100.yaml"
    argv = ["fit-gpu", str(SHIPPED), "--out", str(derived), "--hbm-tbps", "3.35"]
    assert main([*argv, "--memory-gb", "85.52"]) == 0
    shipped = load_gpu("h100")
    mine = load_gpu(str(derived))
    for key in (*FITTED, "memory_gb", "hbm_bytes_per_s"):
        assert _value(mine, key) == pytest.approx(_value(shipped, key), rel=1e-3), key
    assert main(argv) == 1
    assert "go together" in capsys.readouterr().err
    assert main(["fit-gpu", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_model_error_benchmark_contract(tmp_path: Path) -> None:
    """``benchmarks/model_error.py FILE...``: a row per point, the totals as the last line."""
    import subprocess
    import sys

    other = tmp_path / "other.jsonl"
    _synthetic(other, load_gpu("h200"))
    text = other.read_text().replace("Test GPU", "NVIDIA H200")
    other.write_text(text)
    script = Path(__file__).resolve().parents[3] / "benchmarks" / "model_error.py"
    done = subprocess.run(
        [sys.executable, str(script), str(SHIPPED), str(other)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert sum(" b=" in ln or "prompt=" in ln or "chunk=" in ln for ln in lines) == 60 + 72
    assert "mixed llama3-70b/tp4/fp8 b=32 ctx=1000 chunk=512" in done.stdout
    assert "leave-one-model-out" in done.stdout and "previous model" in done.stdout
    last = lines[-1].split()
    assert last[0] == "points=132" and last[1].startswith("median_abs_err_pct=")
    assert float(last[2].removeprefix("worst_abs_err_pct=")) < 15
