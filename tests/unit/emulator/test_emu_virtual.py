"""Virtual-time runs: records of the shared type, timings that match the model, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expert_router.cli.args import parse_users
from expert_router.cli.main import main
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import SimWorkload, default_experts, simulate
from expert_router.errors import ConfigError

SMALL = dict(output_tokens=20, base_tokens=50, continuation_tokens=120, jitter=5)


def test_one_user_sees_the_model_timings() -> None:
    p = get_preset("cpu-tiny", tpot_ms=20, ttft_ms=70)
    recs = simulate(p, SimWorkload(users=1, **SMALL))  # type: ignore[arg-type]
    assert [r.turn for r in recs] == [0, 1]
    base, cont = recs
    assert base.first_token is not None
    assert base.first_token - base.start == pytest.approx(0.07)
    gaps = [b - a for a, b in zip(base.token_times, base.token_times[1:], strict=False)]
    assert gaps == pytest.approx([0.02] * 19)
    assert len(base.token_times) == base.output_tokens == 20 and base.status == "ok"
    assert cont.start == pytest.approx(base.end + 0.001)  # client turnaround
    # history = base prompt + answer + follow-up of >= 16 tokens, padded to the target
    assert cont.prompt_tokens >= max(115, base.prompt_tokens + 20 + 16)
    assert 45 <= base.prompt_tokens <= 55


def test_step_model_batch_one_matches_decode_and_prefill_time() -> None:
    p = get_preset("C")
    base = simulate(p, SimWorkload(users=1, turns=1, **SMALL))[0]  # type: ignore[arg-type]
    model = p.step_model()
    assert base.first_token is not None
    assert base.first_token - base.start == pytest.approx(model.prefill_time(base.prompt_tokens))
    tpot = (base.token_times[-1] - base.token_times[0]) / 19
    assert tpot == pytest.approx(model.decode_time(1, base.prompt_tokens + 10), rel=0.01)


def test_queueing_beyond_max_batch() -> None:
    p = get_preset("cpu-tiny", tpot_ms=10, ttft_ms=10, max_batch=2)
    recs = simulate(p, SimWorkload(users=4, turns=1, **SMALL), n_engines=1)  # type: ignore[arg-type]
    firsts = sorted(r.first_token for r in recs if r.first_token is not None)
    assert len(firsts) == len(recs)  # every request had its first token
    assert firsts[1] == pytest.approx(0.01)  # two admitted at once
    assert firsts[2] > min(r.end for r in recs)  # the rest waited for a free slot


def test_users_follow_their_cluster_and_runs_are_deterministic() -> None:
    p = get_preset("cpu-tiny", tpot_ms=5, ttft_ms=5)
    w = SimWorkload(users=40, turns=2, distribution="weights:1,0,0,3", clusters=4, **SMALL)  # type: ignore[arg-type]
    recs = simulate(p, w, n_engines=4)
    assert len(recs) == 80 and {r.cluster for r in recs} <= {0, 3}
    assert all(r.replica == f"expert-{r.cluster}" for r in recs)
    again = simulate(p, w, n_engines=4)
    assert [(r.user, r.start, r.end) for r in recs] == [(r.user, r.start, r.end) for r in again]
    other = simulate(p, w, n_engines=4, repetition=1)
    assert {r.repetition for r in other} == {1}


def test_prompt_over_context_is_an_error_record() -> None:
    p = get_preset("cpu-tiny", max_model_len=100)
    recs = simulate(p, SimWorkload(users=1, **SMALL))  # type: ignore[arg-type]
    assert [r.status for r in recs] == ["ok", "error"] and recs[1].http_status == 400


def test_default_experts() -> None:
    assert default_experts(get_preset("A")) == 1 and default_experts(get_preset("D")) == 8


def test_parse_users() -> None:
    assert parse_users("1,100,200,...,1000") == [1, *range(100, 1001, 100)]
    assert parse_users("5") == [5]
    for bad in ("", "0", "1,...", "x", "5,3,...,10"):
        with pytest.raises(ConfigError):
            parse_users(bad)


def test_simulate_command_writes_a_summary_per_user_count(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    rc = main(["simulate", "--preset", "cpu-tiny", "--users", "1,3", "--output-tokens", "10",
               "--base-tokens", "40", "--continuation-tokens", "80", "--jitter", "2",
               "--repeat", "2", "--experts", "2", "--paper-gateway", "--gpu", "h200",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    for n in (1, 3):
        summary = json.loads((out / f"users-{n}" / "summary.json").read_text())
        assert summary["users"] == n and summary["repetitions"] == 2
        assert summary["requests"] == 2 * n and summary["simulation"]["experts"] == 2
        assert summary["tpot"]["mean"] > 0 and summary["gateway_overhead"]["n"] == 2 * n
        sim = summary["simulation"]
        assert sim["workload"]["gateway"] == {"mean_s": 0.442, "sd_s": 0.302}
        assert sim["preset"]["gpu"] == "h200"
        assert sim["timing"]["kind"] == "step model" and sim["timing"]["gpu"] == "h200"
        assert sim["timing"]["source"] == "h200-step-times.jsonl"
    assert (out / "sweep.csv").is_file()


def test_summaries_say_where_step_times_come_from() -> None:
    from expert_router.emulator.sweep import timing_source

    fixed = timing_source(get_preset("cpu-tiny", tpot_ms=5, ttft_ms=9))
    assert fixed == {"kind": "fixed", "tpot_ms": 5, "ttft_ms": 9}
    model = timing_source(get_preset("D"))
    assert (model["gpu"], model["median_abs_err_pct"]) == ("h100", 2.15)
    assert "derived from h200" in model["method"]
