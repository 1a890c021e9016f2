"""``expert-router profile-gpu``: measure this machine's GPU for the emulator (extra ``[gpu]``:
PyTorch with CUDA); without CUDA it says so in one line. Then ``fit-gpu`` the file."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PRESETS = "A,B,C,D,v2-tp8-bf16,v2-tp8-awq,v2-70b-awq,v2-8b"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile-gpu",
        help="measure this GPU's step times for the emulator (needs PyTorch with CUDA)",
        description="Time forward passes of the model shards and data types of the given "
        "presets on CUDA device 0 (cuBLAS/fp8 GEMMs, flash attention, random weights, CUDA "
        "graphs, medians of replays; docs/emulator.md) and write a measurement file for "
        "'expert-router fit-gpu'. Install the extra first: pip install 'expert-router[gpu]'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--presets",
        default=DEFAULT_PRESETS,
        help="presets (names or YAML files) whose shapes and types to measure",
    )
    p.add_argument("--budget", type=float, default=600.0, help="time budget, seconds")
    p.add_argument("--out", default="gpu-step-times.jsonl", help="measurement file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from expert_router.emulator.presets import get_preset
    from expert_router.errors import ConfigError
    from expert_router.profiler.forward import cuda_unavailable
    from expert_router.profiler.run import profile

    why = cuda_unavailable()
    if why is not None:
        raise ConfigError(f"needs PyTorch with a CUDA GPU: {why}")
    if args.budget <= 0:
        raise ConfigError("--budget must be > 0")
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    if not names:
        raise ConfigError("--presets: give at least one preset")
    presets = [get_preset(n) for n in names]
    out = Path(args.out)
    n = profile(presets, out, budget_s=args.budget, log=lambda m: print(f"  {m}", flush=True))
    print(f"{n} points -> {out}; next: expert-router fit-gpu {out} --out my-gpu.yaml")
    return 0
