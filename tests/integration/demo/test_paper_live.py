"""``experiment paper --live`` with tiny parameters: A is driven directly, B through the
gateway in front of 8 emulated experts; both sweeps and the comparison are written."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from expert_router.cli.main import main

pytestmark = pytest.mark.integration


def test_tiny_live_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "live"
    argv = ["experiment", "paper", "--live", "--configs", "A,B", "--distribution", "uniform",
            "--users", "1,3", "--repeat", "1", "--output-tokens", "4", "--base-tokens", "40",
            "--continuation-tokens", "70", "--jitter", "4", "--window", "0.5",
            "--tpot-ms", "2", "--ttft-ms", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert f"uniform: {out / 'uniform' / 'report.html'}" in capsys.readouterr().out
    for name in ("report.html", "sweep.csv", "ttft.png", "A/report.html", "B/users-3/summary.json"):
        assert (out / "uniform" / name).is_file(), name
    a = json.loads((out / "uniform" / "A" / "users-3" / "summary.json").read_text())
    b = json.loads((out / "uniform" / "B" / "users-3" / "summary.json").read_text())
    for s in (a, b):
        assert s["totals"] == {
            "requests": 6,
            "errors": 0,
            "output_tokens": 24,
            "errors_by_reason": {},
        }
    # B went through the gateway (its Server-Timing gives an overhead), A went directly
    assert b["gateway_overhead"]["n"] == 6 and not a["gateway_overhead"].get("n")
    assert not [t for t in threading.enumerate() if t.name == "expert-router-servers"]
