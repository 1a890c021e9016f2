"""``expert-router plan``: the contract (gateway.yaml that ``serve --config`` loads, plan.json
with replicas, predicted and uniform), a user's own GPU file, a measured mix, and one-line
errors with exit status 2 for usage and 1 at run time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expert_router.cli.main import main
from expert_router.config import load_gateway_config
from expert_router.emulator.gpuspec import load_gpu, save_gpu
from expert_router.gateway.metrics import GatewayMetrics

SMALL = ["--users", "16", "--output-tokens", "16", "--base-tokens", "40",
         "--continuation-tokens", "100", "--jitter", "4", "--jobs", "1", "--quiet"]  # fmt: skip


def _plan(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "plan"
    argv = ["plan", "--gpus", "5", "--preset", "cpu-tiny", "--clusters", "3", *SMALL,
            "--out", str(out), *extra]  # fmt: skip
    return main(argv), out


def test_the_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _plan(
        tmp_path,
        "--mix",
        "weights:6,2,1",
        "--slo",
        "p99_response<=30s",
        "--replica-url",
        "http://127.0.0.1:{port}",
        "--first-port",
        "9100",
    )
    assert code == 0
    doc = json.loads((out / "plan.json").read_text())
    assert sum(doc["replicas"].values()) == 5 and set(doc["replicas"]) == {"0", "1", "2"}
    assert doc["replicas"]["0"] >= doc["replicas"]["2"]  # the busiest cluster gets the most
    assert doc["predicted"]["p99_response_time"] > 0 and "session_throughput" in doc["predicted"]
    assert sum(doc["uniform"]["replicas"].values()) == 5
    assert doc["slo"] == ["p99_response <= 30 s"] and doc["predicted"]["meets_slo"] is True
    assert doc["frontier"][0]["gpus"] == 3 and doc["frontier"][-1]["gpus"] == 5
    assert len(doc["mix"]["draws"]) == 2 and all(sum(d) == 16 for d in doc["mix"]["draws"])
    config = load_gateway_config(out / "gateway.yaml")  # what serve --config does
    urls = [r.url for c in sorted(config.experts) for r in config.experts[c].replicas]
    assert urls == [f"http://127.0.0.1:{9100 + n}" for n in range(5)]
    assert {c: len(p.replicas) for c, p in config.experts.items()} == {
        c: n for c, n in doc["replicas"].items()
    }
    assert config.spillover.policy == "saturated"
    for name in ("report.html", "frontier.png", "cluster_load.png", "kubernetes/experts.yaml"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "uniform" in printed and "smallest GPU count meeting every target: " in printed


def test_a_users_own_gpu_file(tmp_path: Path) -> None:
    spec = load_gpu("toy").model_copy(update={"name": "my-gpu"})
    path = tmp_path / "my-gpu.yaml"
    save_gpu(spec, path)
    code, out = _plan(tmp_path, "--gpu", str(path), "--baseline", "none")
    assert code == 0
    doc = json.loads((out / "plan.json").read_text())
    assert doc["presets"]["cpu-tiny"]["timing"]["gpu"] == "my-gpu"
    assert doc["tensor_parallel"] is None


def test_arrival_rate_and_preset_choices(tmp_path: Path) -> None:
    tiny2 = tmp_path / "tiny2.yaml"
    tiny2.write_text("name: tiny2\nmodel: tiny\ngpu: toy\ntp: 2\nmax_batch: 8\n"
                     "kv_tokens: 32768\nmax_model_len: 4096\n")  # fmt: skip
    code, out = _plan(tmp_path, "--rate", "8", "--preset", f"0=cpu-tiny|{tiny2}", "--gpus", "6")
    assert code == 0
    doc = json.loads((out / "plan.json").read_text())
    assert doc["workload"]["ramp_s"] == 2.0  # 16 users starting 8 per second
    assert {"cpu-tiny", "tiny2", "cpu-tiny-tp4"} == set(doc["presets"])  # and the baseline
    assert doc["allocation"]["presets"]["1"] == doc["allocation"]["presets"]["2"] == "cpu-tiny"
    gpus = sum(n * doc["presets"][doc["allocation"]["presets"][c]]["tp"]
               for c, n in doc["replicas"].items())  # fmt: skip
    assert gpus == doc["gpus_used"] <= 6


def test_a_measured_mix(tmp_path: Path) -> None:
    gm = GatewayMetrics()
    for cluster, n in (("0", 9), ("1", 1), ("2", 2)):
        for _ in range(n):
            gm.count_request(cluster, "r", 200)
    saved = tmp_path / "metrics.txt"
    saved.write_bytes(gm.render())
    code, out = _plan(tmp_path, "--mix-from", str(saved), "--draws", "0")
    assert code == 0
    doc = json.loads((out / "plan.json").read_text())
    assert doc["mix"]["weights"] == pytest.approx([0.75, 1 / 12, 1 / 6])
    assert doc["mix"]["draws"] == [[12, 1, 3]] and doc["mix"]["users"] == [12, 1, 3]
    assert "measured: 12 requests" in doc["mix"]["source"]


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (["--slo", "p99<=2s"], 2, "--slo: unknown metric"),
        (["--mix", "weights:1,2"], 2, "2 weights given for 3 clusters"),
        (["--gpus", "2"], 2, "--gpus: 2 GPUs cannot hold one replica for each of the 3"),
        (["--preset", "7=C"], 2, "cluster 7 is beyond the 3 clusters"),
        (["--preset", "nope"], 2, "unknown preset 'nope'"),
        (["--mix-from", "/nonexistent/access.log"], 1, "cannot read"),
        (["--output-tokens", "5000"], 2, "exceed preset cpu-tiny's context of 4096"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], status: int,
    message: str,
) -> None:  # fmt: skip
    try:
        code, _ = _plan(tmp_path, *extra)
    except SystemExit as exc:  # argparse's own errors (the type checks) exit at parsing
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == status and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "plan" / "plan.json").exists()
