"""A missing, corrupt, truncated or wrong-version artifact fails clearly, naming the file."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from expert_router.classify import default_model_dir, load
from expert_router.classify.artifact import FORMAT_VERSION, read_manifest, save_artifact
from expert_router.errors import ArtifactError


@pytest.fixture
def model(tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(default_model_dir(), out)
    return out


def test_copy_loads_and_predicts_the_same(model: Path) -> None:
    text = "Stocks fell as the central bank raised interest rates"
    assert load(model).predict(text).cluster == load().predict(text).cluster


def test_no_pickle_anywhere(model: Path) -> None:
    for path in model.iterdir():
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            assert arr.dtype != object
    assert sorted(p.name for p in model.iterdir()) == [
        "centroids.npy",
        "idf.npy",
        "manifest.json",
        "offset.npy",
        "scale.npy",
        "weights.npy",
    ]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="manifest.json"):
        load(tmp_path / "nope")


def test_wrong_version(model: Path) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"manifest\.json.*version 2 is not supported"):
        load(model)


def test_not_our_format(model: Path) -> None:
    (model / "manifest.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ArtifactError, match=r"manifest\.json: not an expert-router"):
        load(model)


def test_truncated_manifest(model: Path) -> None:
    data = (model / "manifest.json").read_bytes()
    (model / "manifest.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"manifest\.json: corrupt or truncated"):
        load(model)


@pytest.mark.parametrize("name", ["weights.npy", "centroids.npy", "idf.npy"])
def test_truncated_array(model: Path, name: str) -> None:
    data = (model / name).read_bytes()
    (model / name).write_bytes(data[: len(data) - 17])
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        load(model)


def test_flipped_byte_is_caught(model: Path) -> None:
    path = model / "weights.npy"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.npy: checksum mismatch"):
        load(model)


def test_missing_array(model: Path) -> None:
    (model / "centroids.npy").unlink()
    with pytest.raises(ArtifactError, match=r"centroids\.npy"):
        load(model)


def test_pickled_array_is_refused(tmp_path: Path) -> None:
    # An object array (which needs pickle) with a matching checksum still does not load.
    out = save_artifact(tmp_path / "m", {"parameters": {"scaler": "l2"}, "vocabulary": ["a"]}, {})
    manifest = read_manifest(out)
    evil = out / "weights.npy"
    np.save(evil, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    import hashlib

    manifest["arrays"]["weights"] = {
        "file": "weights.npy",
        "shape": [1],
        "dtype": "object",
        "sha256": hashlib.sha256(evil.read_bytes()).hexdigest(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"weights\.npy: not a valid \.npy"):
        load(out)


def test_path_escape_is_refused(model: Path) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["arrays"]["idf"]["file"] = "../idf.npy"
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        load(model)


def test_vocabulary_mismatch(model: Path) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["vocabulary"] = manifest["vocabulary"][:-1]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="vocabulary does not match"):
        load(model)


def test_bundled_model_is_small_and_loads_fast() -> None:
    size = sum(p.stat().st_size for p in default_model_dir().iterdir())
    assert size < 10 * 1024 * 1024
    load()  # warm the page cache
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        load()
        times.append(time.perf_counter() - t0)
    # The target is < 200 ms (benchmarks/classify_latency.py prints it); this shared, noisy
    # machine gets a generous margin.
    assert sorted(times)[1] < 1.0


def _rewrite(model: Path, **arrays: np.ndarray) -> None:
    manifest = read_manifest(model)
    full = {n: np.load(model / f"{n}.npy") for n in manifest["arrays"]}
    full.update(arrays)
    keep = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "arrays")}
    save_artifact(model, keep, full)


def test_consistent_but_wrong_arrays_are_refused(model: Path) -> None:
    _rewrite(model)
    load(model)  # a faithful rewrite loads
    weights = np.load(model / "weights.npy")
    _rewrite(model, weights=weights.astype(np.int32))
    with pytest.raises(ArtifactError, match=r"weights\.npy: expected floats"):
        load(model)
    _rewrite(model, weights=weights, centroids=np.zeros((8, 7)))
    with pytest.raises(ArtifactError, match=r"centroids\.npy: shape does not match"):
        load(model)
    _rewrite(model, centroids=np.zeros((8, 100)), idf=-np.ones(weights.shape[0]))
    with pytest.raises(ArtifactError, match=r"idf\.npy: idf must be positive"):
        load(model)
    _rewrite(model, idf=np.ones(weights.shape[0]), scale=np.array([np.nan] * 100))
    with pytest.raises(ArtifactError, match=r"scale\.npy: array 'scale' holds NaN"):
        load(model)


def test_duplicate_terms_and_bad_parameters(model: Path) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    good = json.dumps(manifest)
    manifest["vocabulary"][1] = manifest["vocabulary"][0]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="vocabulary does not match"):
        load(model)
    for params in ({"scaler": "minmax"}, {"scaler": "l2", "temperature": 0}, None):
        manifest = json.loads(good)
        manifest["parameters"] = params
        (model / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=r"manifest\.json: .*parameters"):
            load(model)
