"""Measurement files: GPU step times, one JSON object per line (``../shared/data/gpu`` format).

``read_measurements`` parses and checks a file (``device``, ``ceiling``, ``model`` lines and
``decode``, ``prefill``, ``mixed`` points); ``Point.work`` is what the step model prices;
``format_line`` writes a line (used by ``profile-gpu``). Bad lines are one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expert_router.emulator.hardware import MODELS, ModelShape
from expert_router.emulator.perf import IterationWork
from expert_router.errors import ConfigError

KINDS = ("decode", "prefill", "mixed")
DTYPES = ("bf16", "fp8")
_TAG = re.compile(r"^(?P<shape>[\w.-]+?)(?:/tp(?P<tp>\d+))?/(?P<dtype>\w+)$")


@dataclass(frozen=True, slots=True)
class ModelTag:
    """``SHAPE[/tpN]/DTYPE``: a model shape, one GPU's shard of it, and its GEMM type."""

    shape: ModelShape
    tp: int
    dtype: str

    @property
    def tag(self) -> str:
        tp = f"/tp{self.tp}" if self.tp > 1 else ""
        return f"{self.shape.name}{tp}/{self.dtype}"


def parse_tag(text: str) -> ModelTag:
    """``"llama2-70b/tp8/bf16"`` -> (llama2-70b, 8, bf16); unknown parts raise ``ConfigError``."""
    m = _TAG.match(text)
    if not m:
        raise ConfigError(f"model tag {text!r}: expected SHAPE[/tpN]/DTYPE")
    shape, dtype = m["shape"], m["dtype"]
    if shape not in MODELS:
        raise ConfigError(f"model tag {text!r}: unknown shape, choose from {sorted(MODELS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"model tag {text!r}: data type must be one of {', '.join(DTYPES)}")
    tp = int(m["tp"] or 1)
    try:
        MODELS[shape].shard(tp)
    except ValueError as exc:
        raise ConfigError(f"model tag {text!r}: {exc}") from exc
    return ModelTag(MODELS[shape], tp, dtype)


@dataclass(frozen=True, slots=True)
class Point:
    """One measured forward pass."""

    kind: str
    model: ModelTag
    seconds: float
    batch: int = 0
    ctx: int = 0
    prompt: int = 0
    line: int = 0

    def work(self) -> IterationWork:
        """The iteration this point measured: ``prompt`` is the prefill (or the chunk)."""
        p = self.prompt
        return IterationWork(
            decode_seqs=self.batch,
            decode_ctx=self.batch * self.ctx,
            prefill_tokens=p,
            prefill_attn=p * p / 2,
            prefill_done=1 if p else 0,
        )

    @property
    def tag(self) -> str:
        return self.model.tag

    def label(self) -> str:
        parts = [self.kind, self.model.tag]
        if self.batch:
            parts.append(f"b={self.batch} ctx={self.ctx}")
        if self.prompt:
            parts.append(f"{'chunk' if self.kind == 'mixed' else 'prompt'}={self.prompt}")
        return " ".join(parts)


@dataclass
class MeasurementFile:
    """What one file holds."""

    path: Path
    device: str = ""
    props: str = ""
    ceilings: dict[str, float] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    sha256: str = ""

    def prop(self, name: str) -> int | None:
        """An integer field of the device properties, e.g. ``multi_processor_count``."""
        m = re.search(rf"{name}=(\d+)", self.props)
        return int(m[1]) if m else None


_NEEDS = {"decode": ("batch", "ctx"), "prefill": ("prompt",), "mixed": ("batch", "ctx", "chunk")}


def _point(obj: dict[str, Any], where: str, line: int) -> Point:
    kind = obj["kind"]
    missing = [k for k in ("model", "s", *_NEEDS[kind]) if k not in obj]
    if missing:
        raise ConfigError(f"{where}: {kind} needs {', '.join(missing)}")
    try:
        nums = {k: int(obj[k]) for k in _NEEDS[kind]}
        seconds = float(obj["s"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {kind}: fields must be numbers: {exc}") from exc
    if seconds <= 0 or any(v < 1 for v in nums.values()):
        raise ConfigError(f"{where}: {kind}: s, batch, ctx, prompt and chunk must be > 0")
    try:
        model = parse_tag(str(obj["model"]))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    prompt = nums.get("prompt", nums.get("chunk", 0))
    return Point(kind, model, seconds, nums.get("batch", 0), nums.get("ctx", 0), prompt, line)


def read_measurements(path: Path) -> MeasurementFile:
    """Parse ``path``; unknown kinds are skipped, malformed lines raise ``ConfigError``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"measurement file {path}: cannot read: {exc.strerror}") from exc
    out = MeasurementFile(path=path, sha256=hashlib.sha256(raw).hexdigest())
    for n, text in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON: {exc.msg}") from exc
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind == "device":
            out.device, out.props = str(obj.get("name", "")), str(obj.get("props", ""))
        elif kind == "ceiling" and isinstance(obj.get("value"), int | float):
            out.ceilings[str(obj.get("what"))] = float(obj["value"])
        elif kind in KINDS:
            out.points.append(_point(obj, where, n))
    if not out.points:
        raise ConfigError(f"measurement file {path}: no decode, prefill or mixed points")
    return out


def format_line(kind: str, **fields: Any) -> str:
    """One line of a measurement file: ``{"kind": kind, **fields}`` as compact JSON."""
    return json.dumps({"kind": kind, **fields})
