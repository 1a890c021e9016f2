"""train -> classify -> evaluate -> inspect through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from classify_helpers import make_corpus, write_jsonl

from expert_router.classify import load
from expert_router.classify.evaluate import purity, quality
from expert_router.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    texts, labels = make_corpus(1200, seed=5)
    rows: list[dict[str, object]] = [
        {"text": t, "label": y} for t, y in zip(texts, labels, strict=True)
    ]
    data = write_jsonl(tmp / "train.jsonl", rows)
    with open(data, "a", encoding="utf-8") as fh:
        fh.write("{broken\n")
    out = tmp / "model"
    args = ["train", str(data), "--clusters", "5", "--out", str(out), "--seed", "1"]
    assert main([*args, "--dims", "20"]) == 0
    return data, out


def test_train_writes_manifest(trained: tuple[Path, Path]) -> None:
    _, out = trained
    m = json.loads((out / "manifest.json").read_text())
    assert m["format_version"] == 1
    assert m["corpus"]["documents"] == 1200 and m["corpus"]["skipped"] == 1
    assert m["corpus"]["problems"][0].endswith(
        "train.jsonl:1201: invalid JSON (Expecting property name enclosed in double quotes)"
    )
    assert m["command"].startswith("expert-router train ") and "--dims 20" in m["command"]
    assert m["training"]["cluster_sizes_balanced"] == [240] * 5
    assert load(out).n_clusters == 5


def test_train_strict_fails_on_bad_line(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = trained
    rc = main(["train", str(data), "--clusters", "5", "--out", str(tmp_path / "m"), "--strict"])
    assert rc == 1
    assert "train.jsonl:1201: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_classify(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = trained
    assert main(["classify", "goal team match league", "--model", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert set(line) == {"cluster", "scores", "ranked", "reason"}
    assert len(line["scores"]) == 5 and line["ranked"][0] == line["cluster"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("oven flour butter\n\nserver kernel python\n")
    assert main(["classify", "--file", str(prompts), "--model", str(out)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["reason"] for x in lines] == ["nearest", "empty", "nearest"]
    assert lines[0]["cluster"] != lines[2]["cluster"]


def test_evaluate(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, out = trained
    assert (
        main(["evaluate", str(data), "--model", str(out), "--label-field", "label", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert {"nmi", "ari", "purity", "sizes"} <= set(result)
    assert result["documents"] == 1200 and sum(result["sizes"]) == 1200
    assert result["nmi"] > 0.8 and result["purity"] > 0.9  # five well-separated topics
    assert main(["evaluate", str(data), "--model", str(out)]) == 0
    assert "NMI" in capsys.readouterr().out


def test_inspect(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out = trained
    assert main(["inspect", "--model", str(out), "--json", "--terms", "4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["clusters"]) == 5
    assert all(len(c["top_terms"]) == 4 for c in info["clusters"])
    assert sum(c["share"] for c in info["clusters"]) == pytest.approx(1.0)
    assert main(["inspect"]) == 0
    assert "top terms" in capsys.readouterr().out


def test_bad_model_is_one_clean_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "x", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]


def test_metrics_by_hand() -> None:
    assert purity([0, 0, 0, 1, 1, 1], ["a", "a", "b", "b", "b", "c"]) == pytest.approx(4 / 6)
    q = quality([0, 0, 1, 1], ["x", "x", "y", "y"], n_clusters=3)
    assert (q.nmi, q.ari) == pytest.approx((1.0, 1.0))
    assert (q.purity, q.sizes) == (1.0, [2, 2, 0])
    q = quality([0, 1, 0, 1], ["x", "x", "y", "y"], n_clusters=2)
    assert q.nmi == pytest.approx(0.0, abs=1e-12) and q.purity == 0.5


def test_classify_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("the league season\n\n"))
    assert main(["classify"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["reason"] for x in lines] == ["nearest", "empty"]
    assert all(len(x["scores"]) == 8 for x in lines)


def test_loading_does_not_import_sklearn() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from expert_router.classify import load; c = load(); "
        "c.predict('hello world'); c.predict_many(['a b']); "
        "print(any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
