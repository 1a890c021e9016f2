"""Argument parsing of the bench and report commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_router.cli.args import parse_users
from expert_router.cli.bench import DEFAULT_USERS
from expert_router.cli.main import build_parser, main
from expert_router.cli.report import parse_runs
from expert_router.errors import ConfigError


def test_parse_users() -> None:
    assert parse_users(DEFAULT_USERS) == [1, *range(100, 1001, 100)]
    assert parse_users("1, 2, 5") == [1, 2, 5]
    assert parse_users("10,20,...,50,100") == [10, 20, 30, 40, 50, 100]
    for bad in ("", "0", "a", "1,...,5", "5,3,...,1", "1,2,..."):
        with pytest.raises(ConfigError):
            parse_users(bad)


def test_parse_runs() -> None:
    assert parse_runs(["a=x/y", "z/base"]) == {"a": Path("x/y"), "base": Path("z/base")}
    with pytest.raises(ConfigError):
        parse_runs(["a=x", "a=y"])


def test_commands_registered_with_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["bench", "--target", "http://h", "--out", str(tmp_path)])
    assert (args.output_tokens, args.base_tokens, args.continuation_tokens, args.jitter) == (
        1200, 335, 1535, 30)  # fmt: skip
    assert (args.protocol, args.distribution, args.repeat) == ("openai", "uniform", 1)
    assert build_parser().parse_args(["report", "a=b", "--out", "o"]).runs == ["a=b"]


def test_bench_requires_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--target" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--target", "http://x:1", "--users", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert main(["bench", "--target", "x", "--out", str(tmp_path)]) == 2
    assert "not a URL" in capsys.readouterr().err
