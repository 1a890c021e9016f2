"""gateway_overhead.py --protocol triton-grpc: direct gRPC vs the gateway's gRPC ingress.

As a script it is ``_loadgen.py`` with one more protocol, ``triton-grpc`` (the paper's client:
one decoupled ModelStreamInfer call per request on a shared grpc.aio channel). ``run_grpc``
starts an emulator fleet serving gRPC, a gateway relaying gRPC (``--grpc-port``, experts
``grpc://``) and, for the events-per-CPU-second comparison, a gateway relaying the same load
over HTTP/OpenAI; then measures all four targets with the load generator in its own process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import _loadgen
from _loadgen import PROMPTS, Counters, Record

HERE = Path(__file__).resolve()


class TritonGrpcStreamer:
    """Streams TensorRT-LLM generations from Triton gRPC targets (``grpc://HOST:PORT``)."""

    def __init__(
        self,
        urls: list[str],
        route: str,
        model: str,
        max_tokens: int,
        c: Counters,
        api_key: str | None = None,
    ) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb2
        from tritonclient.grpc import service_pb2_grpc as pb2_grpc

        from expert_router.wire import triton as tw

        self.grpc, self.pb2, self.tw = grpc, pb2, tw
        self.channels = [grpc.aio.insecure_channel(u.split("://", 1)[-1]) for u in urls]
        self.stubs = [pb2_grpc.GRPCInferenceServiceStub(ch) for ch in self.channels]
        self.names = tw.TritonNames("ensemble")
        self.max_tokens = max_tokens
        self.counters = c
        self._ids = itertools.count(1)

    async def request(self, user: int, seq: int) -> Record:
        tw, grpc = self.tw, self.grpc
        prompt = f"{PROMPTS[(user + seq) % len(PROMPTS)]} (user {user}, request {seq})"
        req = tw.TritonRequest(prompt, self.max_tokens, min_length=self.max_tokens)
        msg = tw.infer_request(self.pb2, req, self.names, str(next(self._ids)))
        rec = Record(start_ns=time.perf_counter_ns())
        call = self.stubs[user % len(self.stubs)].ModelStreamInfer()
        try:
            await call.write(msg)
            await call.done_writing()
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    rec.error = "stream ended without a final response"
                    break
                if resp.error_message:
                    rec.error = resp.error_message[:200]
                    break
                r = resp.infer_response
                if r.raw_output_contents and len(r.raw_output_contents[0]) > 4:
                    if not rec.first_ns:
                        rec.first_ns = rec.headers_ns = time.perf_counter_ns()
                    rec.events += 1
                    self.counters.events += 1
                if tw.is_final(r):
                    rec.ok = rec.first_ns > 0
                    break
        except grpc.aio.AioRpcError as exc:
            rec.error = f"{exc.code().name}: {exc.details()}"[:200]
        finally:
            call.cancel()
            rec.end_ns = time.perf_counter_ns()
        return rec

    async def aclose(self) -> None:
        for ch in self.channels:
            await ch.close()


def run_grpc(args: argparse.Namespace, users_list: list[int]) -> int:
    """The --protocol triton-grpc run of gateway_overhead.py (prints a table, asserts nothing)."""
    import tempfile

    from procs import expert_router_cmd, free_port, free_port_block

    import _stack
    from _stack import Stack, Target, run_loadgen
    from gateway_overhead import _case_args, _median

    _stack.LOADGEN = HERE  # this script: _loadgen plus the triton-grpc streamer
    emu_extra = ["--tpot-ms", str(args.tpot_ms), "--ttft-ms", str(args.ttft_ms)]
    batch = max(users_list) + 64  # every user admitted at once: no emulated queueing
    emu_extra += ["--max-batch", str(batch), "--kv-tokens", str(batch * 512)]
    started = time.time()
    results: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-grpc-") as tmp:
        stack = Stack(Path(tmp), pin=args.pin)
        try:
            # One emulator process serves the fleet over HTTP and gRPC (--grpc-port).
            base, gbase = free_port_block(args.fleet), free_port_block(args.fleet)
            cmd = expert_router_cmd("emulate", "--preset", args.preset, "--port", str(base))
            cmd += ["--fleet", str(args.fleet), "--grpc-port", str(gbase), *emu_extra]
            experts = [f"http://127.0.0.1:{base + i}" for i in range(args.fleet)]
            emu = stack.start("emulator", cmd, f"{experts[0]}/health")
            for url in experts[1:]:
                emu.wait_http(f"{url}/health")
            with urllib.request.urlopen(f"{experts[0]}/v1/models", timeout=5) as resp:
                model = str(json.load(resp)["data"][0]["id"])
            grpc_experts = [f"grpc://127.0.0.1:{gbase + i}" for i in range(args.fleet)]
            port, gport = free_port(), free_port()
            cmd = expert_router_cmd("serve", "--port", str(port), "--grpc-port", str(gport))
            for url in grpc_experts:
                cmd += ["--expert", f"*={url}"]
            proc = stack.start("gateway-grpc", cmd, f"http://127.0.0.1:{port}/ready")
            grpc_targets = [
                Target("direct", grpc_experts, None, model),
                Target("gateway", [f"grpc://127.0.0.1:{gport}"], proc.pid, model),
            ]
            http_targets = [Target("direct", experts, None, model)]
            http_targets.append(stack.gateway(experts, model, workers=1))
            for users in users_list:
                cli, timeout = _case_args(args, users)
                res: dict[str, dict[str, Any]] = {}
                for proto, targets in (("triton-grpc", grpc_targets), ("openai", http_targets)):
                    proto_cli = [proto if a == args.protocol else a for a in cli]
                    for t in targets:
                        print(f"  {users:>5} users -> {proto} {t.name} ...", file=sys.stderr)
                        runs = [
                            run_loadgen(stack, t, proto_cli, timeout) for _ in range(args.rounds)
                        ]
                        res[f"{proto}/{t.name}"] = {
                            "p50_ms": _median(runs, "ttft_ms", "p50"),
                            "p99_ms": _median(runs, "ttft_ms", "p99"),
                            "requests": int(_median(runs, "ok_in_window")),
                            "failed": int(sum(r["requests_failed"] for r in runs)),
                            "events_per_s": _median(runs, "events_per_s"),
                            "cpu_s": _median(runs, "watched_cpu_s"),
                            "events_per_cpu_s": _median(runs, "events_per_cpu_s"),
                            "first_errors": runs[-1]["first_errors"],
                        }
                results[users] = res
        finally:
            stack.close()
    print(
        f"gateway_overhead: protocol=triton-grpc fleet={args.fleet} preset={args.preset} "
        f"tpot={args.tpot_ms}ms ttft={args.ttft_ms}ms max_tokens={args.max_tokens} "
        f"rounds={args.rounds} pin={args.pin} ({time.time() - started:.0f} s)"
    )
    print("events = streamed token messages received; ev/CPU-s = per gateway CPU-second")
    print(f"{'users':>6} {'path':<20} {'TTFT p50':>8} {'p99':>8} {'+p50':>7} {'+p99':>7}"
          f" {'reqs':>6} {'fail':>4} {'ev/s':>6} {'CPU s':>6} {'ev/CPU-s':>8}")  # fmt: skip
    for users, res in results.items():
        for key, r in res.items():
            d = res[key.split("/")[0] + "/direct"]
            gw = key.endswith("gateway")
            add50 = f"{r['p50_ms'] - d['p50_ms']:+.2f}" if gw else "-"
            add99 = f"{r['p99_ms'] - d['p99_ms']:+.2f}" if gw else "-"
            epc = f"{r['events_per_cpu_s']:.0f}" if gw else "-"
            print(
                f"{users:>6} {key:<20} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {add50:>7}"
                f" {add99:>7} {r['requests']:>6} {r['failed']:>4} {r['events_per_s']:>6.0f}"
                f" {r['cpu_s'] if gw else 0:>6.2f} {epc:>8}"
            )
            if r["first_errors"]:
                print(f"         errors: {r['first_errors'][:2]}")
    for users, res in results.items():
        g, d = res["triton-grpc/gateway"], res["triton-grpc/direct"]
        add = g["p50_ms"] - d["p50_ms"]
        ok = "met" if add <= 1.0 else "MISSED"
        print(
            f"{users:>5} users, gRPC gateway: added TTFT p50 {add:+.2f} ms (target <= 1 ms: {ok})"
        )
        h = res["openai/gateway"]
        print(
            f"      relayed events per CPU-second: gRPC {g['events_per_cpu_s']:.0f}, "
            f"HTTP {h['events_per_cpu_s']:.0f}"
        )
    return 0


if __name__ == "__main__":
    _loadgen.PROTOCOLS["triton-grpc"] = TritonGrpcStreamer  # type: ignore[assignment]
    sys.exit(_loadgen.main())
