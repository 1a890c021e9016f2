"""``expert-router fit-gpu``: fit the emulator's step model to a measurement file and write a
GPU spec that presets can name (``gpu: my-gpu.yaml``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fit-gpu",
        help="fit the performance model to measured step times (from profile-gpu)",
        description="Fit the step model's parameters by least squares to a measurement file "
        "(the format of profile-gpu and ../shared/data/gpu) and write a GPU spec YAML. "
        "--hbm-tbps and --memory-gb derive a sibling GPU with the same compute and another "
        "memory (how the built-in h100 comes from the H200's measurements).",
    )
    p.add_argument("file", metavar="FILE", help="measurement file (JSON lines)")
    p.add_argument("--out", required=True, help="GPU spec YAML to write")
    p.add_argument("--name", help="spec name (default: the --out file's stem)")
    p.add_argument("--hbm-tbps", type=float, help="derive: datasheet HBM bandwidth, TB/s")
    p.add_argument("--memory-gb", type=float, help="derive: device memory, GB (1e9 bytes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from expert_router.emulator import fit
    from expert_router.emulator.gpuspec import builtin_for_device, save_gpu
    from expert_router.emulator.measurements import read_measurements
    from expert_router.errors import ConfigError

    if (args.hbm_tbps is None) != (args.memory_gb is None):
        raise ConfigError("--hbm-tbps and --memory-gb go together (they derive a sibling GPU)")
    if args.hbm_tbps is not None and (args.hbm_tbps <= 0 or args.memory_gb <= 0):
        raise ConfigError("--hbm-tbps and --memory-gb must be > 0")
    out = Path(args.out)
    name = args.name or out.stem
    mf = read_measurements(Path(args.file))
    derived = args.hbm_tbps is not None
    measured_name = (builtin_for_device(mf.device) or "measured") if derived else name
    spec = fit.fit_spec(mf, name=measured_name)
    f = spec.provenance.fit
    print(f"{mf.device or 'unknown device'}: {f['points']} points; median |error| "
          f"{f['median_abs_err_pct']:.2f} %, worst {f['worst_abs_err_pct']:.2f} %")  # fmt: skip
    if derived:
        spec = fit.derive(spec, name=name, hbm_bytes_per_s=args.hbm_tbps * 1e12,
                          memory_gb=args.memory_gb)  # fmt: skip
        print(spec.provenance.method)
    for key in ("weight_bytes_per_s", "kv_bytes_per_s", "attention_flops", "overlap",
                "attention_token_s", "gemm_flops", "layer_s"):  # fmt: skip
        print(f"  {key:20} {getattr(spec, key)}")
    try:
        save_gpu(spec, out)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc
    print(f"wrote {out}")
    return 0
