"""End to end: ``expert-router bench`` against an emulated expert writes every output;
``report`` overlays two runs; a dead server gives error records; workers shard users."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from expert_router.bench.store import read_records
from expert_router.cli.main import main

pytestmark = pytest.mark.integration

SMALL = ["--output-tokens", "12", "--base-tokens", "40", "--continuation-tokens", "70",
         "--jitter", "4", "--window", "0.5", "--quiet"]  # fmt: skip
PNGS = ("ttft.png", "tpot.png", "user_throughput.png", "p99_response_time.png",
        "session_throughput.png", "time_buckets.png")  # fmt: skip


def test_bench_sweep_and_report(tmp_path: Path, emulator_url: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["bench", "--target", emulator_url, "--users", "1,4", "--workers", "1", *SMALL]
    assert main([*argv, "--out", str(a)]) == 0
    assert main([*argv, "--repeat", "2", "--distribution", "weights:1,0,0,0,0,0,0,0",
                 "--out", str(b)]) == 0  # fmt: skip
    for name in (*PNGS, "sweep.csv", "report.html", "bench.json"):
        assert (a / name).is_file(), name
    s = json.loads((a / "users-4" / "summary.json").read_text())
    assert s["users"] == 4 and s["errors"] == 0 and s["requests"] == 8
    assert s["output_tokens"]["received"] == 8 * 12 and s["token_shortfalls"] == 0
    assert s["ttft"]["base"]["n"] == 4 and s["ttft"]["continuation"]["n"] == 4
    assert s["tpot"]["mean"] > 0.001 and s["session_throughput"] > 0
    records = read_records(a / "users-4")
    assert sorted((r.user, r.turn) for r in records) == [(u, t) for u in range(4) for t in (0, 1)]
    cont = [r for r in records if r.turn == 1]
    assert all(60 <= r.prompt_tokens <= 90 for r in cont)
    # weights:1,0,... sends every user's prompt to cluster 0
    b_records = read_records(b / "users-4")
    assert {r.cluster for r in b_records} == {0}
    assert sorted({r.repetition for r in b_records}) == [0, 1] and len(b_records) == 16
    assert json.loads((b / "users-1" / "summary.json").read_text())["repetitions"] == 2

    out = tmp_path / "cmp"
    assert main(["report", f"router={a}", f"baseline={b}", "--out", str(out)]) == 0
    with (out / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["config"], r["users"]) for r in rows] == [
        ("router", "1"), ("router", "4"), ("baseline", "1"), ("baseline", "4")]  # fmt: skip
    assert all((out / p).is_file() for p in PNGS)


def test_dead_server_is_one_line_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = s.getsockname()[1]
        out = tmp_path / "dead"
        argv = ["bench", "--target", f"http://127.0.0.1:{port}", "--users", "3", "--out", str(out)]
        assert main([*argv, "--workers", "1", *SMALL]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"expert-router bench: error: cannot reach http://127.0.0.1:{port}: "
                   f"127.0.0.1:{port}: Connection refused"]  # fmt: skip
    assert not out.exists()


def test_a_sweep_whose_requests_all_fail_exits_1_with_the_reasons(
    tmp_path: Path, emulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fails"
    argv = ["bench", "--target", emulator_url, "--users", "2,4", "--workers", "1", *SMALL]
    # answers longer than the emulated model's context: every request is refused with a 400
    assert main([*argv, "--output-tokens", "1000000", "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("expert-router bench: error: all 4 requests failed")
    assert "maximum context length" in err[0] and " x " in err[0]
    s = json.loads((out / "users-2" / "summary.json").read_text())
    assert s["errors"] == 4 and sum(s["totals"]["errors_by_reason"].values()) == 4
    assert not (out / "users-4").exists()  # the sweep stopped at the first all-failed count
    page = (out / "report.html").read_text()
    assert "Failed requests by reason" in page and "maximum context length" in page


def test_workers_shard_users(tmp_path: Path, emulator_url: str) -> None:
    out = tmp_path / "sharded"
    argv = ["bench", "--target", emulator_url, "--users", "5", "--workers", "2", *SMALL]
    assert main([*argv, "--out", str(out)]) == 0
    records = read_records(out / "users-5")
    assert sorted((r.user, r.turn) for r in records) == [(u, t) for u in range(5) for t in (0, 1)]
    assert all(r.status == "ok" and r.output_tokens == 12 for r in records)
    # one shared clock: every start is after the shared start and close to the others
    base_starts = [r.start for r in records if r.turn == 0]
    assert min(base_starts) >= 0 and max(base_starts) - min(base_starts) < 1.0


def test_calibrate_reports_timing_error(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    argv = ["bench", "--calibrate", "--users", "1,8", "--calib-ttft-ms", "30",
            "--calib-tpot-ms", "10", "--workers", "1", *SMALL, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    cal = json.loads((out / "calibration.json").read_text())
    assert set(cal["runs"]) == {"1", "8"}
    run = cal["runs"]["8"][0]
    assert run["errors"] == 0 and run["token_lag_ms"]["n"] == 8 * 2 * 12
    # generous: the client's own TPOT error is far below the 10 ms TPOT on any machine
    assert abs(run["tpot_error_ms"]["mean"]) < 5.0
    assert run["ttft_error_ms"]["mean"] > -1.0  # never earlier than the server sent it
    s = json.loads((out / "users-8" / "summary.json").read_text())
    assert s["gateway_overhead"]["n"] == 0  # the calibration header is not an overhead
