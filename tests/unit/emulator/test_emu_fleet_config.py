"""Mixed-fleet YAML: members, ports, errors that name the field; the preset listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_router.cli.main import main
from expert_router.emulator.fleet import load_fleet_config
from expert_router.errors import ConfigError


def test_members_and_ports(tmp_path: Path) -> None:
    custom = tmp_path / "mine.yaml"
    custom.write_text("model: llama2-13b\nmax_batch: 3\nkv_tokens: 9000\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "port: 9100\n"
        "experts:\n"
        "  - {preset: C, count: 2}\n"
        "  - {preset: mine.yaml}\n"
        "  - {preset: cpu-tiny, port: 9500, count: 2, overrides: {model_name: t, tpot_ms: 3}}\n"
    )
    members = load_fleet_config(path).members(tmp_path)
    assert [port for _, port in members] == [9100, 9101, 9102, 9500, 9501]
    assert [p.name for p, _ in members] == ["C", "C", "mine", "cpu-tiny", "cpu-tiny"]
    assert members[2][0].max_batch == 3 and members[3][0].model_name == "t"
    free = tmp_path / "free.yaml"
    free.write_text("experts: [{preset: D, count: 3}]\n")
    assert [port for _, port in load_fleet_config(free).members()] == [0, 0, 0]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("experts: []\n", "experts"),
        ("experts: [{preset: C, count: 0}]\n", "experts.0.count"),
        ("experts: [{preset: C, colour: red}]\n", "experts.0.colour"),
        ("hosts: x\nexperts: [{preset: C}]\n", "hosts"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field):
        load_fleet_config(path)


def test_bad_override_names_the_member(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("experts: [{preset: C}, {preset: D, overrides: {max_batch: -1}}]\n")
    with pytest.raises(ConfigError, match=r"experts\.1: .*max_batch"):
        load_fleet_config(path).members()


def test_list_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--list-presets"]) == 0
    out = capsys.readouterr().out
    names = ("A", "B", "C", "D", "v2-tp8-bf16", "v2-tp8-awq", "v2-70b-awq", "v2-8b", "cpu-tiny")
    for name in names:
        assert f"\n{name} " in "\n" + out
