"""The performance model against measured GPU step times: one row per point, then held-out
checks, then the totals. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/model_error.py FILE... [--gpu NAME|PATH] [--no-cv]

Each file (the format of ../shared/data/gpu/README.md) is priced with the built-in spec fitted
for its device (an H200 file -> ``h200``) unless ``--gpu`` names one; a ``/tpN`` shard is one
GPU's forward pass, without all-reduce. Beside each point: the previous model (a datasheet
roofline, ``emulator.roofline``). Held out: the step model refitted on the file without one
model, one batch size, one context or one prompt length, then checked on what it did not see.
The last line is ``points=N median_abs_err_pct=X worst_abs_err_pct=Y`` of the fitted spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from expert_router.emulator import fit  # noqa: E402
from expert_router.emulator.gpuspec import GPUSpec, builtin_for_device, load_gpu  # noqa: E402
from expert_router.emulator.measurements import (  # noqa: E402
    MeasurementFile,
    Point,
    read_measurements,
)
from expert_router.emulator.roofline import DATASHEETS, RooflineModel  # noqa: E402
from expert_router.errors import ConfigError  # noqa: E402


def previous_model(spec: GPUSpec, points: list[Point]) -> np.ndarray | None:
    """The datasheet roofline's time of every point (None for a GPU without a datasheet)."""
    sheet = DATASHEETS.get(spec.name)
    if sheet is None:
        return None
    out = []
    for p in points:
        t = p.model
        m = RooflineModel(sheet, t.shape, weight_dtype=t.dtype, kv_dtype="bf16",
                          compute_dtype=t.dtype, tp=t.tp)  # fmt: skip
        out.append(m.forward_time(p.work()))
    return np.array(out)


def spec_for(mf: MeasurementFile, override: str | None) -> GPUSpec:
    name = override or builtin_for_device(mf.device)
    if name is None:
        raise ConfigError(
            f"{mf.path.name}: no built-in spec for device {mf.device!r}; fit one "
            "(expert-router fit-gpu FILE --out X.yaml) and pass --gpu X.yaml"
        )
    return load_gpu(name)


def line(label: str, measured: float, model: float, prev: float | None) -> str:
    text = (
        f"{label:44} {measured * 1e3:9.3f} {model * 1e3:9.3f} {100 * (model / measured - 1):+7.1f}"
    )
    if prev is not None:
        text += f" {prev * 1e3:10.3f} {100 * (prev / measured - 1):+7.1f}"
    return text


def report_file(mf: MeasurementFile, spec: GPUSpec, cv: bool) -> tuple[list[float], list[float]]:
    """Print the file's rows and held-out checks; returns (fitted, previous) errors in %."""
    points = mf.points
    model = fit.predict(spec, points)
    prev = previous_model(spec, points)
    print(f"\n{mf.path.name}: {mf.device or 'unknown device'}, {len(points)} points, "
          f"spec {spec.name} ({spec.provenance.source})")  # fmt: skip
    print(
        f"{'point':44} {'meas. ms':>9} {'model ms':>9} {'err %':>7} {'previous':>10} {'err %':>7}"
    )
    for i, p in enumerate(points):
        print(line(p.label(), p.seconds, float(model[i]), None if prev is None else float(prev[i])))
    measured = np.array([p.seconds for p in points])
    errors = list((model / measured - 1) * 100)
    prev_errors = [] if prev is None else list((prev / measured - 1) * 100)
    if cv:
        print(f"held out (refit on {mf.path.name} without the fold, checked on the fold):")
        pooled: list[float] = []
        for family, held in fit.cross_validate(mf).items():
            med, worst = fit.summary(list(held.values()))
            pooled += list(held.values())
            print(f"  leave-one-{family}-out: {len(held)} points, median |error| {med:.2f} %, "
                  f"worst {worst:.2f} %")  # fmt: skip
        if pooled:
            med, worst = fit.summary(pooled)
            print(f"  all held-out predictions: {len(pooled)}, median |error| {med:.2f} %, "
                  f"worst {worst:.2f} %")  # fmt: skip
    return errors, prev_errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--gpu", help="price every file with this spec (name or YAML path)")
    ap.add_argument("--no-cv", dest="cv", action="store_false", help="skip the held-out refits")
    args = ap.parse_args()
    errors: list[float] = []
    previous: list[float] = []
    try:
        for path in args.files:
            mf = read_measurements(Path(path))
            e, pe = report_file(mf, spec_for(mf, args.gpu), args.cv)
            errors += e
            previous += pe
    except ConfigError as exc:
        print(f"model_error: error: {exc}", file=sys.stderr)
        return 1
    if previous:
        med, worst = fit.summary(previous)
        mean = float(np.mean(np.abs(previous)))
        print(f"\nprevious model (datasheet roofline): points={len(previous)} "
              f"median_abs_err_pct={med:.2f} mean_abs_err_pct={mean:.2f} "
              f"worst_abs_err_pct={worst:.2f}")  # fmt: skip
    med, worst = fit.summary(errors)
    print(f"points={len(errors)} median_abs_err_pct={med:.2f} worst_abs_err_pct={worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
