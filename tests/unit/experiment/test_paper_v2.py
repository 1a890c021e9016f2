"""Paper v2 (Llama 3) in virtual time, the normal mix as a parameter, the paper-gateway
condition, and the description each report carries (experiment.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from expert_router.bench.mix import cluster_weights
from expert_router.cli.main import build_parser, main
from expert_router.experiment.paper import Protocol
from expert_router.experiment.studies import STUDIES, V2

TINY = ["--users", "2,9", "--repeat", "2", "--output-tokens", "24", "--base-tokens", "40",
        "--continuation-tokens", "70", "--jitter", "4", "--window", "1"]  # fmt: skip
V2_IDS = ["tp8-bf16", "tp8-awq", "experts-70b", "experts-8b"]


def test_paper_v2_defaults() -> None:
    args = build_parser().parse_args(["experiment", "paper-v2", "--out", "x"])
    assert (args.mode, args.users, args.repeat) == ("simulate", "100,500,1000", 10)
    assert args.configs.split(",") == V2_IDS == list(V2.ids)
    assert args.distribution == "uniform,normal" and not args.paper_gateway
    assert [c.experts for c in V2.configs] == [1, 1, 8, 8]
    assert set(STUDIES) == {"paper", "paper-v2"}


def test_the_normal_mix_is_a_parameter() -> None:
    p = Protocol()
    assert p.mix("uniform") == "uniform" and p.mix("normal") == "normal:3.5,2"
    w = cluster_weights(p.mix("normal"), 8)
    assert w[3] == w[4] == pytest.approx(0.2016, abs=1e-3)  # 1.6x the fair share of 1/8
    assert w[0] == w[7] == pytest.approx(0.0446, abs=1e-3)
    wide = cluster_weights(Protocol(normal_sd=8.0).mix("normal"), 8)
    assert wide.max() < 0.14 < w.max()
    edge = cluster_weights(Protocol(normal_mean=0.0).mix("normal"), 8)
    assert edge.argmax() == 0
    args = build_parser().parse_args(["experiment", "paper", "--normal-sd", "3", "--out", "x"])
    assert args.normal_sd == 3.0


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_paper_v2_simulated_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v2"
    assert main(["experiment", "paper-v2", "--simulate", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for dist in ("uniform", "normal"):
        report = out / dist
        assert f"{dist}: {report / 'report.html'}" in printed
        for name in ("report.html", "sweep.csv", "ttft.png", "experiment.json"):
            assert (report / name).is_file(), (dist, name)
        rows = _rows(report / "sweep.csv")
        assert [(r["config"], r["users"]) for r in rows] == [
            (c.label, u) for c in V2.configs for u in ("2", "9")
        ]
        desc = json.loads((report / "experiment.json").read_text())
        assert (desc["study"], desc["mode"], desc["numbers"]) == ("paper-v2", "simulate",
                                                                  "modelled")  # fmt: skip
        assert desc["distribution"]["name"] == dist and not desc["paper_gateway"]["enabled"]
        cfgs = {c["id"]: c for c in desc["configurations"]}
        assert list(cfgs) == V2_IDS
        assert cfgs["tp8-bf16"]["gpus"] == 8 and not cfgs["tp8-bf16"]["routed"]
        assert cfgs["experts-70b"]["weight_dtype"] == "int4" and cfgs["experts-70b"]["routed"]
        assert cfgs["experts-8b"]["kv_source"] == "physics" and cfgs["experts-8b"]["gpu"][
            "spec"] == "h100"  # fmt: skip
        assert "derived from h200" in cfgs["experts-8b"]["gpu"]["method"]
        for cid, experts in (("tp8-awq", 1), ("experts-8b", 8)):
            s = json.loads((report / cid / "users-9" / "summary.json").read_text())
            assert s["simulation"]["experts"] == experts and s["repetitions"] == 2
            assert s["totals"] == {
                "requests": 36,
                "errors": 0,
                "output_tokens": 36 * 24,
                "errors_by_reason": {},
            }
    normal = json.loads((out / "normal" / "experiment.json").read_text())
    assert normal["distribution"]["spec"] == "normal:3.5,2"


def test_the_paper_gateway_delays_routed_requests_only(tmp_path: Path) -> None:
    plain, slow = tmp_path / "plain", tmp_path / "slow"
    argv = ["experiment", "paper", "--configs", "A,D", "--distribution", "uniform", *TINY]
    assert main([*argv, "--out", str(plain)]) == 0
    assert main([*argv, "--paper-gateway", "--out", str(slow)]) == 0

    def summary(root: Path, cfg: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (root / "uniform" / cfg / "users-9" / "summary.json").read_text()
        )
        return data

    d0, d1 = summary(plain, "D"), summary(slow, "D")
    a0, a1 = summary(plain, "A"), summary(slow, "A")
    assert a0["ttft"]["mean"] == a1["ttft"]["mean"]  # the baseline is sent directly
    assert d1["ttft"]["mean"] > d0["ttft"]["mean"] + 0.1
    assert 150 < d1["gateway_overhead"]["mean"] < 1000 and a1["gateway_overhead"]["n"] == 0
    desc = json.loads((slow / "uniform" / "experiment.json").read_text())
    assert desc["paper_gateway"]["enabled"] and "442 ms" in desc["paper_gateway"]["words"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "A"], "unknown 'A'"),
        (["--live", "--paper-gateway"], "--simulate runs"),
        (["--normal-sd", "0"], "--normal-sd"),
    ],
)
def test_user_errors_are_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code: int | str | None
    try:
        code = main(["experiment", "paper-v2", *argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's own checks exit while parsing
        code = exc.code
    assert code == 2  # a usage error
    err = capsys.readouterr().err.strip()
    assert err.startswith("expert-router experiment") and "error:" in err and message in err
    assert "\n" not in err and not out.exists()
