"""Output piped to a file or another program does not wrap mid-sentence at 80 columns."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from expert_router.console import PIPED_WIDTH, make_console


def test_piped_console_does_not_wrap_sentences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    console.file = io.StringIO()
    sentence = "word " * 40  # 200 characters
    console.print(sentence.strip())
    assert console.file.getvalue() == sentence.strip() + "\n"
    assert console.width == PIPED_WIDTH


def test_columns_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    assert make_console().width == 60


def test_a_piped_command_keeps_its_lines_whole() -> None:
    """``inspect`` piped: its first line (model, clusters, dims, terms) is one line."""
    out = subprocess.run(
        [sys.executable, "-m", "expert_router.cli.main", "inspect", "--terms", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    ).stdout.splitlines()
    assert re.fullmatch(
        r"model .+: \d+ clusters, scaler \w+, \d+ dims, \d+ terms, seed \d+", out[0]
    )
    assert out[1].startswith("trained on ") and "documents" in out[1]
