"""The paper experiment's argument handling and a tiny run in virtual time."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from expert_router.cli.main import build_parser, main
from expert_router.errors import ConfigError
from expert_router.experiment.paper import (
    CONFIGS,
    DISTRIBUTIONS,
    PAPER_USERS,
    Protocol,
    parse_list,
    run_paper,
)

TINY = ["--users", "1,6", "--repeat", "2", "--output-tokens", "24", "--base-tokens", "40",
        "--continuation-tokens", "70", "--jitter", "4", "--window", "1"]  # fmt: skip


def test_the_paper_protocol_is_the_default() -> None:
    p = Protocol()
    assert p.users == (1, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000) == PAPER_USERS
    assert (p.repeat, p.output_tokens, p.base_tokens, p.continuation_tokens, p.jitter) == (
        10, 1200, 335, 1535, 30,
    )  # fmt: skip
    args = build_parser().parse_args(["experiment", "paper", "--out", "x"])
    assert args.mode == "simulate" and args.repeat == 10 and args.users == "1,100,200,...,1000"
    assert args.configs == "A,B,C,D" and args.distribution == "uniform,normal"


def test_parse_list() -> None:
    assert parse_list("a, d,B,a", CONFIGS, "--configs") == ["A", "D", "B"]
    assert parse_list("NORMAL", DISTRIBUTIONS, "--distribution") == ["normal"]
    with pytest.raises(ConfigError, match="unknown 'E'"):
        parse_list("A,E", CONFIGS, "--configs")
    with pytest.raises(ConfigError, match="at least one"):
        parse_list(" , ", CONFIGS, "--configs")


def test_protocol_rejects_bad_values() -> None:
    with pytest.raises(ConfigError):
        Protocol(users=())
    with pytest.raises(ConfigError):
        Protocol(users=(0, 5))
    with pytest.raises(ConfigError):
        Protocol(repeat=0)
    with pytest.raises(ConfigError, match="mode"):
        run_paper(__import__("pathlib").Path("unused"), mode="both")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "A,E"], "unknown 'E'"),
        (["--distribution", "zipf"], "unknown 'zipf'"),
        (["--users", "0,5"], "users"),
        (["--repeat", "0"], "--repeat"),
        (["--window", "0"], "--window"),
        (["--tpot-ms", "3"], "--live runs only"),
        (["--live", "--ttft-ms", "3"], "needs --tpot-ms"),
    ],
)
def test_user_errors_are_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    status: int | str | None
    try:  # a usage error: exit status 2, from argparse or from the command
        status = main(["experiment", "paper", *argv, "--out", str(out)])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("expert-router experiment") and ": error: " in err and message in err
    assert "\n" not in err and not out.exists()


def test_live_and_simulate_are_exclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "paper", "--live", "--simulate", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_tiny_simulated_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    argv = ["experiment", "paper", "--simulate", "--configs", "A,D", *TINY, "--out", str(out)]
    assert main([*argv, "--distribution", "uniform,normal"]) == 0
    printed = capsys.readouterr().out
    for dist in ("uniform", "normal"):
        report = out / dist
        assert f"{dist}: {report / 'report.html'}" in printed
        for name in ("report.html", "sweep.csv", "ttft.png", "tpot.png", "session_throughput.png"):
            assert (report / name).is_file(), (dist, name)
        rows = list(csv.DictReader((report / "sweep.csv").read_text().splitlines()))
        assert [(r["config"][0], r["users"], r["repetitions"]) for r in rows] == [
            ("A", "1", "2"), ("A", "6", "2"), ("D", "1", "2"), ("D", "6", "2"),
        ]  # fmt: skip
        html = (report / "report.html").read_text()
        assert "direct" in html and "router" in html
        for cfg, experts in (("A", 1), ("D", 8)):
            s = json.loads((report / cfg / "users-6" / "summary.json").read_text())
            assert s["simulation"]["experts"] == experts and s["repetitions"] == 2
            assert s["totals"] == {
                "requests": 24,
                "errors": 0,
                "output_tokens": 24 * 24,
                "errors_by_reason": {},
            }
    # an 8-expert router serves one user about as fast as its one expert: D's TPOT < A's
    # (13B FP8 vs 70B FP16 over 8 GPUs), as the emulator's model says
    d = json.loads((out / "uniform" / "D" / "users-1" / "summary.json").read_text())
    a = json.loads((out / "uniform" / "A" / "users-1" / "summary.json").read_text())
    assert d["tpot"]["mean"] < a["tpot"]["mean"]
