"""profile-gpu without a GPU: the plan of shapes and points, its file format, the one-line
refusal without CUDA, and that PyTorch is never imported with the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from expert_router.cli.main import main
from expert_router.cli.profile_gpu import DEFAULT_PRESETS
from expert_router.emulator import fit
from expert_router.emulator.gpuspec import GPUSpec, load_gpu
from expert_router.emulator.measurements import ModelTag, format_line, read_measurements
from expert_router.emulator.perf import StepModel
from expert_router.emulator.presets import get_preset
from expert_router.profiler.plan import PlannedPoint, plan, point_cost_s, points_for, tag_of
from expert_router.profiler.run import estimator, profile

PRESETS = [get_preset(n) for n in DEFAULT_PRESETS.split(",")]


def test_each_preset_maps_to_the_shard_and_gemm_family_it_runs() -> None:
    tags = {p.name: tag_of(p).tag for p in PRESETS}
    assert tags == {
        "A": "llama2-70b/tp8/bf16", "B": "llama2-70b/fp8", "C": "llama2-13b/bf16",
        "D": "llama2-13b/fp8", "v2-tp8-bf16": "llama3-70b/tp8/bf16",
        "v2-tp8-awq": "llama3-70b/tp8/fp8", "v2-70b-awq": "llama3-70b/fp8",
        "v2-8b": "llama3-8b/bf16",
    }  # fmt: skip


def test_points_of_one_model_most_informative_first() -> None:
    tag = tag_of(get_preset("D"))
    pts = points_for(tag, 150)
    assert [(p.kind, p.batch, p.ctx, p.prompt) for p in pts[:3]] == [
        ("decode", 1, 512, 0), ("prefill", 0, 0, 1535), ("decode", 150, 2048, 0),
    ]  # fmt: skip
    decode = [p for p in pts if p.kind == "decode"]
    assert {p.batch for p in decode} == {1, 8, 32, 37, 75, 150} and {p.ctx for p in decode} == {
        512, 2048}  # fmt: skip
    assert sorted(p.prompt for p in pts if p.kind == "prefill") == [335, 1535]  # context 4096
    assert [p.kind for p in pts].count("mixed") == 1 and len(set(pts)) == len(pts)
    assert 8192 in {p.prompt for p in points_for(tag_of(get_preset("v2-8b")), 256)}


def test_the_plan_interleaves_models_and_keeps_to_budget_and_memory() -> None:
    everything, _ = plan(PRESETS, budget_s=1e9, free_bytes=1e15, estimate_s=lambda _p: 1.0)
    assert len({p.model.tag for p in everything}) == 8
    # a budget of 16 points keeps the two most informative points of each of the 8 models
    few, notes = plan(PRESETS, budget_s=16.0, free_bytes=1e15, estimate_s=lambda _p: 1.0)
    assert len(few) == 16 and {p.model.tag for p in few} == {p.model.tag for p in everything}
    assert {(p.kind, p.prompt) for p in few[8:]} == {("prefill", 1535)}
    assert len(notes) == len(everything) - 16 and "over the time budget" in notes[0]
    # 13B's largest batch at 2048 tokens needs its six layers' KV caches: too big for 10 GB
    big = PlannedPoint("decode", tag_of(get_preset("C")), 40, 2048)
    assert big.memory_bytes() > 6 * 40 * 2048 * 819_200 / 40
    small, notes = plan([get_preset("C")], budget_s=1e9, free_bytes=10e9,
                        estimate_s=lambda _p: 1.0)  # fmt: skip
    assert big not in small and any("GB, left out" in n for n in notes)


def test_estimates_and_the_planned_lines_read_back(tmp_path: Path) -> None:
    est = estimator(4.26e12)
    b1 = PlannedPoint("decode", tag_of(get_preset("C")), 1, 512)
    assert point_cost_s(0.01, "decode") == pytest.approx(13 * 0.01 + 0.5)
    assert 0.5 < est(b1) < 1.0  # ~8 ms forward pass, 13 runs and set-up
    pts, _ = plan(PRESETS, budget_s=1e9, free_bytes=1e15, estimate_s=est)
    path = tmp_path / "planned.jsonl"
    lines = [format_line("device", name="NVIDIA H200", props="")]
    lines += [format_line(p.kind, model=p.model.tag, **p.fields(), s=0.01, mode="graph")
              for p in pts]  # fmt: skip
    path.write_text("\n".join(lines))
    back = read_measurements(path).points
    assert [(q.kind, q.tag, q.batch, q.ctx, q.prompt) for q in back] == [
        (p.kind, p.model.tag, p.batch, p.ctx, p.prompt) for p in pts
    ]
    assert all(q.work() == p.work() for p, q in zip(pts, back, strict=True))


def test_profile_gpu_without_cuda_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import torch  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present: the refusal path does not apply")
    except ImportError:
        pass
    out = tmp_path / "x.jsonl"
    assert main(["profile-gpu", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("expert-router profile-gpu: error: needs PyTorch with a CUDA GPU")
    assert "\n" not in err and not out.exists()


def test_the_package_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from expert_router.cli.main import build_parser\n"
        "build_parser()\n"
        "import expert_router.emulator, expert_router.profiler.plan, expert_router.profiler.run\n"
        "import expert_router.profiler.forward, expert_router.cli.profile_gpu\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class _FakeShard:
    """Times a point with a known spec's model instead of a GPU."""

    def __init__(self, tag: ModelTag, spec: GPUSpec, log: list[str]) -> None:
        self.tag, self.log = tag, log
        self.model = StepModel(spec, tag.shape, weight_dtype=tag.dtype, kv_dtype="bf16",
                               compute_dtype=tag.dtype, tp=tag.tp)  # fmt: skip

    def measure(self, batch: int, ctx: int, prompt: int, kind: str) -> float:
        self.log.append(self.tag.tag)
        work = PlannedPoint(kind, self.tag, batch, ctx, prompt).work()
        return self.model.forward_time(work)


class _FakeDevice:
    def __init__(self, spec: GPUSpec) -> None:
        self.spec, self.released = spec, 0
        self.measured: list[str] = []

    def device(self) -> dict[str, str]:
        props = "_CudaDeviceProperties(total_memory=81559MB, multi_processor_count=132)"
        return {"name": "Fake GPU", "torch": "none", "props": props}

    def ceilings(self) -> dict[str, float]:
        return {"copy_bytes_per_s": 3.0e12, "bf16_flops": 7.0e14, "fp8_flops": 1.3e15}

    def free_bytes(self) -> float:
        return 79e9

    def release(self) -> None:
        self.released += 1

    def shard(self, tag: ModelTag) -> _FakeShard:
        return _FakeShard(tag, self.spec, self.measured)


def test_a_profile_run_writes_a_file_that_fits_back(tmp_path: Path) -> None:
    truth = load_gpu("h100").model_copy(update={"layer_s": {"bf16": 35e-6, "fp8": 80e-6}})
    dev = _FakeDevice(truth)
    out = tmp_path / "mine.jsonl"
    presets = [get_preset(n) for n in ("C", "D", "A", "v2-8b")]
    n = profile(presets, out, budget_s=3600, bench=dev)
    mf = read_measurements(out)
    assert n == len(mf.points) > 40 and mf.device == "Fake GPU"
    # measured model by model: each shard built once, lines grouped under its model line
    assert dev.released == 4 and [m for m in dict.fromkeys(dev.measured)] == [
        "llama2-13b/bf16", "llama2-13b/fp8", "llama2-70b/tp8/bf16", "llama3-8b/bf16"]  # fmt: skip
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds[:4] == ["device", "ceiling", "ceiling", "ceiling"] and kinds.count("model") == 4
    spec = fit.fit_spec(mf, name="mine")
    assert spec.layer_s["fp8"] == pytest.approx(80e-6, rel=0.02)
    assert spec.provenance.fit["worst_abs_err_pct"] < 0.5
    few = profile(presets, out, budget_s=5.0, bench=_FakeDevice(truth))
    assert 0 < few < n  # the budget cuts the plan
