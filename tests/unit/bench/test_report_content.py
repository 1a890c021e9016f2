"""What a report says, read from its HTML as a person would: the headline, what was run, numbers
at fixed precision with units (never scientific notation), every term explained, text that
matches the run (no intervals for one repetition), links that resolve; console tables with
the report's columns."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from expert_router.bench.columns import HEADLINE_KEYS, header, units
from expert_router.bench.narrative import headline
from expert_router.bench.report import write_comparison
from expert_router.bench.tables import SIM_KEYS, sweep_table
from expert_router.experiment.index import Part, write_index
from expert_router.experiment.paper import Protocol, simulate_config
from expert_router.experiment.studies import V1

TINY = dict(output_tokens=20, base_tokens=40, continuation_tokens=70, jitter=4, window_s=1.0)
# per repetition count: the report folder, each configuration's summaries, its run folder
Runs = dict[int, tuple[Path, dict[str, list[dict[str, Any]]], dict[str, Path]]]
NUMBER = re.compile(r"^(–|\d[\d,]*(\.\d+)?( ± \d[\d,]*(\.\d+)?)?)$")


class Page(HTMLParser):
    """The text of every table cell (``numbers``: those not marked as text) and every link."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.numbers: list[str] = []
        self._text = False
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "td":
            self._cell = []
            self._text = ("class", "text") in attrs
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            if not self._text:
                self.numbers.append(self.cells[-1])
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A and D simulated (users 1 and 8), once with one repetition and once with two."""
    out: Runs = {}
    for repeat in (1, 2):
        root = tmp_path_factory.mktemp(f"rep{repeat}")
        protocol = Protocol(users=(1, 8), repeat=repeat, **TINY)  # type: ignore[arg-type]
        dirs = {f"{c}: config {c}": root / c for c in ("A", "D")}
        series = {
            n: simulate_config(V1.config(n[0]), protocol, "normal", d) for n, d in dirs.items()
        }
        write_comparison(root, series, title="test", sources=dirs)
        out[repeat] = (root, series, dirs)
    return out


def test_report_tells_the_story(runs: Runs) -> None:
    root, series, _ = runs[1]
    text = html.unescape((root / "report.html").read_text())
    # the headline: one sentence per metric, computed from the data
    assert "<h2>Headline</h2>" in text
    assert text.count("is better): ") == len(HEADLINE_KEYS)
    assert re.search(r"lowest with [AD] (at every user count|at 1 user)", text)
    # what was run, from the runs' metadata
    assert "N = 1, 8" in text and "ran once (one repetition)" in text
    assert "Llama 2 70B FP16, tensor parallel over 8 H100" in text  # A's preset, in words
    assert "8 engines, one per topic cluster" in text  # D
    assert "modelled (virtual time)" in text and "virtual time" in text
    # every term explained where it appears
    assert re.search(r'"normal[^"]*": a bell curve', text)  # the mix name, and its parameters
    assert "n99: the users all of whose requests succeeded" in text
    assert "Time to first token:" in text and "Time per output token:" in text
    # no claim of intervals for a single repetition
    assert "error bars are the 95 %" not in text and "±" not in "".join(Page(text).cells)


def test_numbers_have_fixed_precision_and_units(runs: Runs) -> None:
    for repeat in (1, 2):
        root, series, _ = runs[repeat]
        text = (root / "report.html").read_text()
        page = Page(text)
        numeric = page.numbers
        assert numeric and all(NUMBER.match(c) for c in numeric), numeric
        assert not re.search(r"\d[eE][+-]?\d", " ".join(page.cells))  # no scientific notation
        unit = units(series, ["ttft.base.mean", "tpot.mean"])
        assert f"<th>{header('ttft.base.mean', unit['ttft.base.mean'])}</th>" in text
        assert f'colspan="2">{header("tpot.mean", unit["tpot.mean"])}</th>' in text
        decimals = {len(c.split(" ")[0].partition(".")[2]) for c in numeric if c != "–"}
        assert decimals <= {0, 1, 2}
    assert "error bars are the 95 %" in (runs[2][0] / "report.html").read_text()


def test_links_resolve(runs: Runs) -> None:
    root, _, dirs = runs[1]
    page = Page((root / "report.html").read_text())
    local = [h for h in page.links if not h.startswith(("http:", "https:", "#"))]
    assert "sweep.csv" in local and "A/report.html" in local and "D/report.html" in local
    assert any(h.endswith("docs/reproduction.md") for h in local)
    for href in local:
        assert (root / href).is_file(), href


def test_index_has_headline_what_ran_and_links(runs: Runs) -> None:
    root, series, dirs = runs[2]
    index = write_index(root, "study", [Part("the normal mix", root / "report.html", series, dirs)])
    text = html.unescape(index.read_text())
    assert "Headline" in text and "ran 2 times (repetitions)" in text
    assert "modelled (virtual time)" in text
    page = Page(text)
    assert "report.html" in page.links
    assert any(h.endswith("docs/reproduction.md") for h in page.links)
    for href in page.links:
        if not href.startswith("#"):
            assert (root / href).is_file(), href


def test_console_table_uses_the_report_columns(runs: Runs) -> None:
    root, series, _ = runs[1]
    console = Console(width=200, record=True)
    console.print(sweep_table(series))
    shown = console.export_text()
    page = (root / "report.html").read_text()
    for key in SIM_KEYS:
        label = header(key, units(series, [key])[key])
        assert label in shown
        assert f"{label}</th>" in page


def _summary(users: int, ttft: float) -> dict[str, Any]:
    return {"users": users, "ttft": {"base": {"mean": ttft}}, "repetitions": 1}


def test_headline_says_who_wins_where() -> None:
    series = {
        "A: baseline": [_summary(1, 0.02), _summary(100, 2.0), _summary(200, 9.0)],
        "D: experts": [_summary(1, 0.05), _summary(100, 1.0), _summary(200, 3.0)],
    }
    unit = units(series, ["ttft.base.mean"])["ttft.base.mean"]
    said = headline(series, "ttft.base.mean", unit)
    assert said == (
        "TTFT of the base prompt (lower is better): lowest with A at 1 user, then D from 100 "
        "to 200 users (at 200 users, in s: D 3.00, A 9.00)."
    )
    one = headline({"D": series["D: experts"]}, "ttft.base.mean", unit)
    assert one == "TTFT of the base prompt rises from 0.05 s at 1 user to 3.00 s at 200 users."
