"""``expert-router emulate``: serve emulated experts (OpenAI API) until interrupted.

One expert (``--preset``), N identical experts on consecutive ports (``--fleet N``) or a mixed
fleet from YAML (``--fleet-config``), all in one process and one event loop. SIGTERM or SIGINT
drains it (``--drain-timeout``, docs/emulator.md); a second signal ends it at once.
"""

from __future__ import annotations

import argparse
from typing import Any

from expert_router.cli import args as types

DRAIN_TIMEOUT_S = 30.0


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """Flags that replace preset fields (shared with ``simulate``)."""
    g = parser.add_argument_group("preset overrides")
    g.add_argument("--max-batch", type=types.positive_int, help="most sequences running at once")
    g.add_argument("--kv-tokens", type=types.positive_int, help="KV-cache capacity in tokens")
    g.add_argument("--prefill-chunk", type=types.positive_int, help="token budget per iteration")
    g.add_argument("--kv-policy", choices=("reserve", "paged"), help="KV admission policy")
    g.add_argument("--kv-source", choices=("stated", "physics"),
                   help="KV capacity as stated by the preset, or from GPU memory")  # fmt: skip
    g.add_argument("--gpu", help="GPU spec: h100, h200, toy, or a spec YAML (fit-gpu)")
    g.add_argument("--tpot-ms", type=types.positive_float, help="fixed TPOT in ms (replaces model)")
    g.add_argument(
        "--ttft-ms", type=types.non_negative_float, help="fixed TTFT in ms (with --tpot-ms)"
    )
    g.add_argument(
        "--eos-mean-tokens", type=types.positive_float, help="mean answer length without ignore_eos"
    )


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
        type=types.preset,
        help="a built-in preset (--list-presets) or a preset YAML file",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        type=types.local_host,
        help="address of this machine to bind (default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=types.listen_port,
        default=8000,
        help="port (first port of a fleet; 0 = any free ports)",
    )
    p.add_argument("--fleet", type=types.positive_int, default=1, metavar="N", help="run N experts")
    p.add_argument("--fleet-config", metavar="FILE", help="a mixed fleet from YAML")
    p.add_argument("--model-name", help="model name served by /v1/models")
    p.add_argument(
        "--grpc-port",
        type=types.listen_port,
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
    p.add_argument(
        "--drain-timeout",
        type=types.non_negative_float,
        default=DRAIN_TIMEOUT_S,
        metavar="S",
        help="on SIGTERM/SIGINT: refuse new requests, let those in flight finish for up to S "
        "seconds, then end them with an error and exit (default 30)",
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
    from expert_router.errors import ConfigError, UsageError

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
        if args.pacing == "per-request" and args.tpot_ms is None:
            raise UsageError(
                "--pacing per-request needs --tpot-ms (the fixed time between two tokens)"
            )
        preset = get_preset(args.preset, **overrides(args), pacing=args.pacing)
        members = [(preset, args.port + i if args.port else 0) for i in range(args.fleet)]
    ports = [pt for _, pt in members]
    for flag, first in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        last = first + len(members) - 1 if first else 0
        if last > 65535:
            raise UsageError(f"{flag} {first}: {len(members)} experts need ports up to {last}")
    _check_free(host, ports)
    if args.grpc_port:
        _check_free(host, [args.grpc_port + i for i in range(len(members))])

    async def main() -> int:
        presets = [p for p, _ in members]
        signals = Signals()
        try:
            async with serve_fleet(presets, host=host, ports=ports) as fleet:
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
                    return await drain_on_signal(fleet.servers, signals, args.drain_timeout)
                finally:
                    for g in grpc_servers:
                        await g.stop()
        except OSError as exc:  # a port taken between the check and the bind
            raise ConfigError(str(exc)) from exc

    try:
        import uvloop

        return int(uvloop.run(main()))
    except ImportError:
        return asyncio.run(main())


def _check_free(host: str, ports: list[int]) -> None:
    """One line naming host:port, before anything starts, when a port cannot be listened on."""
    from expert_router.errors import ConfigError

    for port in ports:
        try:
            types.check_listen(host, port)
        except OSError as exc:
            raise ConfigError(types.bind_error(host, port, exc)) from exc


class Signals:
    """SIGTERM and SIGINT caught in the running loop (installed before anything is printed, so
    a signal sent as soon as the servers are up is a drain, not a ``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        import asyncio
        import signal

        self.received: list[int] = []
        self.first, self.second = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, signum: int) -> None:
        self.received.append(signum)
        (self.first if len(self.received) == 1 else self.second).set()


async def drain_on_signal(servers: list[Any], signals: Signals, drain_s: float) -> int:
    """Serve until the first signal, then drain every server (``EmulatorServer.drain``); a
    second signal cuts the drain short. Returns the exit status: 0 after a drain, 128 + the
    signal's number when a second signal cut it."""
    import asyncio
    import sys

    await signals.first.wait()
    in_flight = sum(s.shutdown.in_flight for s in servers)
    print(
        f"expert-router emulate: stopping; {in_flight} requests in flight may finish for up "
        f"to {drain_s:g} s (a second signal stops at once)",
        file=sys.stderr,
        flush=True,
    )
    drain = asyncio.gather(*(s.drain(drain_s) for s in servers))
    forced = asyncio.ensure_future(signals.second.wait())
    waiters: list[asyncio.Future[Any]] = [drain, forced]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not drain.done():
        drain.cancel()
        cut = sum(s.shutdown.expire() for s in servers)
        await asyncio.gather(*(s.shutdown.wait_idle(0.5) for s in servers))
        print(f"expert-router emulate: stopped at once; {cut} requests cut", file=sys.stderr)
        return 128 + signals.received[-1]
    forced.cancel()
    cut = sum(drain.result())
    print(f"expert-router emulate: drained; {cut} requests cut by the timeout", file=sys.stderr)
    return 0
