"""The safe on-disk classifier format: a directory of JSON and plain arrays, no code.

``manifest.json`` (format name and version, parameters, vocabulary, corpus summary and, for
each array, its file, shape, dtype and sha256) plus one ``.npy`` file per array, read with
``allow_pickle=False``. Every failure raises :class:`ArtifactError` naming the offending file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from expert_router.errors import ArtifactError

FORMAT_NAME = "expert-router-classifier"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

Array = npt.NDArray[Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_artifact(
    out_dir: str | os.PathLike[str], manifest: dict[str, Any], arrays: dict[str, Array]
) -> Path:
    """Write ``arrays`` as ``<name>.npy`` and ``manifest`` (plus array records) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    for name, array in arrays.items():
        file = out / f"{name}.npy"
        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
        records[name] = {
            "file": file.name,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "sha256": _sha256(file),
        }
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest, "arrays": records}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)
    return out


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, version-checked manifest of the artifact in ``model_dir``."""
    path = Path(model_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: no classifier manifest here (is this a model directory?)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the manifest: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: corrupt or truncated manifest (invalid JSON: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: not an expert-router classifier manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version!r} is not supported "
            f"(this expert-router reads version {FORMAT_VERSION}); retrain the model"
        )
    if not isinstance(manifest.get("arrays"), dict):
        raise ArtifactError(f"{path}: manifest lacks the 'arrays' table")
    return manifest


def read_array(model_dir: str | os.PathLike[str], manifest: dict[str, Any], name: str) -> Array:
    """Load one array named in the manifest, checking checksum, shape, dtype and finiteness."""
    record = manifest["arrays"].get(name)
    mpath = Path(model_dir) / MANIFEST
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        raise ArtifactError(f"{mpath}: manifest does not describe the array {name!r}")
    file_name = record["file"]
    if Path(file_name).name != file_name:
        raise ArtifactError(f"{mpath}: array file name {file_name!r} is not a plain file name")
    path = Path(model_dir) / file_name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read array {name!r}: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != record.get("sha256"):
        raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt or truncated")
    try:
        array: Array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a valid .npy array: {exc}") from exc
    if list(array.shape) != record.get("shape") or str(array.dtype) != record.get("dtype"):
        raise ArtifactError(
            f"{path}: array is {array.dtype}{list(array.shape)}, "
            f"manifest says {record.get('dtype')}{record.get('shape')}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ArtifactError(f"{path}: array {name!r} holds NaN or infinite values")
    return array
