"""``expert-router emulate``: serve emulated experts (OpenAI API) until interrupted.

One expert (``--preset``), N identical experts on consecutive ports (``--fleet N``) or a mixed
fleet from YAML (``--fleet-config``), all in one process and one event loop.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """Flags that replace preset fields (shared with ``simulate``)."""
    g = parser.add_argument_group("preset overrides")
    g.add_argument("--max-batch", type=int, help="most sequences running at once")
    g.add_argument("--kv-tokens", type=int, help="KV-cache capacity in tokens")
    g.add_argument("--prefill-chunk", type=int, help="token budget per iteration")
    g.add_argument("--kv-policy", choices=("reserve", "paged"), help="KV admission policy")
    g.add_argument("--kv-source", choices=("stated", "physics"),
                   help="KV capacity as stated by the preset, or from GPU memory")  # fmt: skip
    g.add_argument("--gpu", help="GPU spec: h100, h200, toy, or a spec YAML (fit-gpu)")
    g.add_argument("--tpot-ms", type=float, help="fixed TPOT in ms (replaces the model)")
    g.add_argument("--ttft-ms", type=float, help="fixed TTFT in ms (with --tpot-ms)")
    g.add_argument("--eos-mean-tokens", type=float, help="mean answer length without ignore_eos")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "max_batch", "kv_tokens", "prefill_chunk", "kv_policy", "kv_source", "gpu", "tpot_ms",
        "ttft_ms", "eos_mean_tokens",
    )  # fmt: skip
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "model_name", None):
        out["model_name"] = args.model_name
    return out


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "emulate",
        help="serve emulated GPU experts over the OpenAI API",
        description="Serve emulated experts (continuous batching, modelled GPU timing).",
    )
    p.add_argument(
        "--preset",
        default="cpu-tiny",
        help="a built-in preset (--list-presets) or a preset YAML file",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (first port of a fleet)")
    p.add_argument("--fleet", type=int, default=1, metavar="N", help="run N experts")
    p.add_argument("--fleet-config", metavar="FILE", help="a mixed fleet from YAML")
    p.add_argument("--model-name", help="model name served by /v1/models")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve Triton's gRPC API (model 'ensemble'); expert i on P+i",
    )
    p.add_argument(
        "--pacing",
        choices=("batched", "per-request"),
        default=None,
        help="batched: continuous-batching iterations (default); per-request: each request on "
        "its own timers, first token --ttft-ms (default 5) after it arrives, then one every "
        "--tpot-ms (required); no batch limit, no KV accounting",
    )
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    add_overrides(p)
    p.set_defaults(func=run)


def _list_presets() -> int:
    from expert_router.emulator.catalog import PRESETS

    for name, preset in PRESETS.items():
        t = preset.step_model().describe()
        print(
            f"{name:12} {preset.model_name:20} gpu {preset.gpu!s:5} batch {preset.max_batch:4}  "
            f"KV {preset.kv_capacity:9} tokens ({preset.kv_source})  "
            f"TPOT@1 {t['tpot_batch1_ms']:6.2f} ms  {preset.description}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    import asyncio
    import gc
    from pathlib import Path

    from expert_router.emulator.fleet import load_fleet_config
    from expert_router.emulator.presets import Preset, get_preset
    from expert_router.emulator.server import serve_fleet
    from expert_router.errors import ConfigError

    if args.list_presets:
        return _list_presets()
    host: str = args.host
    members: list[tuple[Preset, int]]
    if args.fleet_config:
        cfg = load_fleet_config(Path(args.fleet_config))
        members = cfg.members(Path(args.fleet_config).parent)
        if args.pacing:
            members = [(p.with_overrides(pacing=args.pacing), pt) for p, pt in members]
        host = cfg.host
    else:
        if args.fleet < 1:
            raise ConfigError(f"--fleet must be >= 1, got {args.fleet}")
        if args.pacing == "per-request" and args.tpot_ms is None:
            raise ConfigError(
                "--pacing per-request needs --tpot-ms (the fixed time between two tokens)"
            )
        preset = get_preset(args.preset, **overrides(args), pacing=args.pacing)
        members = [(preset, args.port + i if args.port else 0) for i in range(args.fleet)]

    async def main() -> None:
        presets = [p for p, _ in members]
        try:
            async with serve_fleet(presets, host=host, ports=[pt for _, pt in members]) as fleet:
                grpc_servers = []
                try:
                    for i, s in enumerate(fleet.servers):
                        line = f"{s.model_name} ({s.preset.name}) on {s.url}"
                        if s.preset.pacing != "batched":
                            line += f" [pacing {s.preset.pacing}]"
                        if args.grpc_port is not None:
                            from expert_router.emulator.grpc_server import TritonGrpcServer

                            port = args.grpc_port + i if args.grpc_port else 0
                            g = TritonGrpcServer(s, host=host, port=port)
                            await g.start()
                            grpc_servers.append(g)
                            line += f", gRPC on {g.target}"
                        print(line, flush=True)
                    # What is loaded now lives as long as the process: keep it out of the
                    # cyclic collector's scans, so a full collection under load does not stall
                    # the event loop (and every token due meanwhile) for tens of milliseconds.
                    gc.collect()
                    gc.freeze()
                    await asyncio.Event().wait()
                finally:
                    for g in grpc_servers:
                        await g.stop()
        except OSError as exc:
            raise ConfigError(f"cannot listen: {exc}") from exc

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return 0
