"""gateway_overhead.py --protocol triton-grpc: direct gRPC vs the gateway's gRPC ingress.

As a script it is ``_loadgen.py`` with one more protocol, ``triton-grpc`` (the paper's client:
one decoupled ModelStreamInfer call per request on a shared grpc.aio channel). ``run_grpc``
starts an emulator fleet serving gRPC (``--upstream paced``, the default: ``--pacing
per-request``, so no batch step turns 1000 streams into token bursts; ``emulator``: batched),
nginx proxying gRPC (``nginx-config --grpc``, when nginx is available), a gateway relaying gRPC
(``--grpc-port``, experts ``grpc://``) and, for the events-per-CPU-second comparison, the
gateway relaying the same load over HTTP/OpenAI; then measures every target with the load
generator in its own process, ``--rounds`` times interleaved (medians are reported).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import _loadgen
from _loadgen import PROMPTS, Counters, Record

HERE = Path(__file__).resolve()
_NO_GC_MAIN = (
    "import gc, sys; gc.disable(); from expert_router.cli.main import main; "
    "sys.exit(main(sys.argv[1:]))"
)


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
        prompts: tuple[str, ...] = PROMPTS,
    ) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb2
        from tritonclient.grpc import service_pb2_grpc as pb2_grpc

        from expert_router.wire import kserve
        from expert_router.wire import triton as tw

        self.grpc, self.pb2, self.tw, self.kserve = grpc, pb2, tw, kserve
        self.channels = [grpc.aio.insecure_channel(u.split("://", 1)[-1]) for u in urls]
        self.stubs = [pb2_grpc.GRPCInferenceServiceStub(ch) for ch in self.channels]
        self.names = tw.TritonNames("ensemble")
        self.max_tokens = max_tokens
        self.counters = c
        self.prompts = prompts
        self._ids = itertools.count(1)

    async def request(self, user: int, seq: int) -> Record:
        tw, kserve, grpc = self.tw, self.kserve, self.grpc
        prompts = self.prompts
        prompt = f"{prompts[(user + seq) % len(prompts)]} (user {user}, request {seq})"
        req = tw.TritonRequest(prompt, self.max_tokens, min_length=self.max_tokens)
        msg = kserve.infer_request(self.pb2, req, self.names, str(next(self._ids)))
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
                if kserve.is_final(r):
                    rec.ok = rec.first_ns > 0
                    rec.end_ns = time.perf_counter_ns()
                    # Read the call to its end (its status), as tritonclient does: cancelling
                    # right after the final message would race the server's own ending.
                    await call.read()
                    break
        except grpc.aio.AioRpcError as exc:
            rec.error = f"{exc.code().name}: {exc.details()}"[:200]
        finally:
            call.cancel()  # a no-op once the call is over
            rec.end_ns = rec.end_ns or time.perf_counter_ns()
        return rec

    async def aclose(self) -> None:
        for ch in self.channels:
            await ch.close()


def _start_emulator(
    args: argparse.Namespace, stack: Any, users: int, cpus: str | None
) -> tuple[list[str], list[str], str]:
    """One emulator process serving the fleet over HTTP and gRPC (``--grpc-port``); paced per
    request (``--upstream paced``) or batched (``--upstream emulator``)."""
    from procs import expert_router_cmd, free_port_block

    extra = ["--tpot-ms", str(args.tpot_ms), "--ttft-ms", str(args.ttft_ms)]
    if args.upstream == "paced":
        extra += ["--pacing", "per-request"]
    else:
        batch = users + 64  # every user admitted at once: no emulated queueing
        extra += ["--max-batch", str(batch), "--kv-tokens", str(batch * 512)]
    base, gbase = free_port_block(args.fleet), free_port_block(args.fleet)
    cmd = expert_router_cmd("emulate", "--preset", args.preset, "--port", str(base))
    if args.upstream == "paced":
        # Cyclic GC paused, as the HTTP benchmark's paced upstream runs (bench.workers.run_loop):
        # a full collection over 1000 calls in flight stalls every due token for ~70 ms.
        cmd[1:3] = ["-c", _NO_GC_MAIN]
    cmd += ["--fleet", str(args.fleet), "--grpc-port", str(gbase), *extra]
    experts = [f"http://127.0.0.1:{base + i}" for i in range(args.fleet)]
    saved, stack.server_cpus = stack.server_cpus, cpus  # the upstream beside the load generator
    try:
        emu = stack.start("emulator", cmd, f"{experts[0]}/health")
    finally:
        stack.server_cpus = saved
    for url in experts[1:]:
        emu.wait_http(f"{url}/health")
    with urllib.request.urlopen(f"{experts[0]}/v1/models", timeout=5) as resp:
        model = str(json.load(resp)["data"][0]["id"])
    return experts, [f"grpc://127.0.0.1:{gbase + i}" for i in range(args.fleet)], model


def _lag_counters(experts: list[str]) -> dict[str, float]:
    """The paced emulator's token-lag counters from its /metrics, summed over the fleet."""
    total = {"tokens": 0.0, "lag": 0.0, "max": 0.0, "late": 0.0}
    names = {
        "vllm:generation_tokens_total": "tokens",
        "emulator:paced_token_lag_seconds_total": "lag",
        "emulator:paced_late_tokens_total": "late",
    }
    for url in experts:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
                if name in names:
                    total[names[name]] += value
                elif name == "emulator:paced_token_lag_seconds_max":
                    total["max"] = max(total["max"], value)
    return total


def _lag_text(before: dict[str, float], after: dict[str, float]) -> str:
    tokens = after["tokens"] - before["tokens"]
    if not tokens:
        return "no tokens"
    mean = (after["lag"] - before["lag"]) / tokens * 1e3
    return f"{tokens:.0f} tokens, mean {mean:.3f} ms, {after['late'] - before['late']:.0f} > 50 ms"


def _summary(runs: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Medians over rounds; ``add*``: the median of each round's difference to direct."""
    from gateway_overhead import _median

    out: dict[str, Any] = {
        "p50_ms": _median(runs, "ttft_ms", "p50"),
        "p99_ms": _median(runs, "ttft_ms", "p99"),
        "requests": int(_median(runs, "ok_in_window")),
        "failed": int(sum(r["requests_failed"] for r in runs)),
        "events_per_s": _median(runs, "events_per_s"),
        "cpu_s": _median(runs, "watched_cpu_s"),
        "events_per_cpu_s": _median(runs, "events_per_cpu_s"),
        "events_per_cpu_s_rounds": [r.get("events_per_cpu_s") for r in runs],
        "first_errors": runs[-1]["first_errors"],
        "upstream_lag": [r["upstream_lag"] for r in runs if "upstream_lag" in r],
    }
    if base is not None:
        for q in ("p50", "p99"):
            diffs = [r["ttft_ms"][q] - d["ttft_ms"][q] for r, d in zip(runs, base, strict=True)]
            out[f"add_{q}"] = statistics.median(diffs)
            out[f"add_{q}_rounds"] = diffs
    return out


def run_grpc(args: argparse.Namespace, users_list: list[int]) -> int:
    """The --protocol triton-grpc run of gateway_overhead.py (prints a table, asserts nothing)."""
    import tempfile

    from procs import expert_router_cmd, free_port

    import _stack
    from _stack import Stack, Target, run_loadgen
    from gateway_overhead import _case_args, load_average, pin_cpus, write_results

    _stack.LOADGEN = HERE  # this script: _loadgen plus the triton-grpc streamer
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    started, load_start = time.time(), load_average()
    notes: list[str] = []
    results: dict[int, dict[str, dict[str, Any]]] = {}
    lag = "n/a"
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-grpc-") as tmp:
        stack = Stack(Path(tmp))
        upstream_cpus = pin_cpus(stack, args.pin)  # proxies on core 0, the rest elsewhere
        try:
            experts, grpc_experts, model = _start_emulator(
                args, stack, max(users_list), upstream_cpus
            )
            grpc_targets = [Target("direct", grpc_experts, None, model)]
            http_targets = [Target("direct", experts, None, model)]
            if "nginx" in wanted:
                try:
                    keep = max(users_list) + 64  # one upstream connection per call in flight
                    grpc_targets.append(stack.nginx_grpc(grpc_experts, model, keepalive=keep))
                except RuntimeError as exc:
                    notes.append(f"nginx (gRPC) skipped: {str(exc)[:300]}")
            if "gateway" in wanted:
                port, gport = free_port(), free_port()
                # One client connection carries every user's calls: allow them all (the
                # default, 100 concurrent calls per connection, would queue the rest).
                config = stack.workdir / "gateway-grpc.yaml"
                replicas = ", ".join(f"{{url: '{u}'}}" for u in grpc_experts)
                config.write_text(
                    f"experts: {{'*': {{replicas: [{replicas}]}}}}\n"
                    f"server: {{http2_max_streams: {max(users_list) + 64}}}\n"
                )
                cmd = expert_router_cmd("serve", "--port", str(port), "--grpc-port", str(gport))
                cmd += ["--config", str(config)]
                proc = stack.start("gateway-grpc", cmd, f"http://127.0.0.1:{port}/ready")
                grpc_targets.append(
                    Target("gateway", [f"grpc://127.0.0.1:{gport}"], proc.pid, model)
                )
                http_targets.append(stack.gateway(experts, model, workers=1))
            plan = [("triton-grpc", t) for t in grpc_targets]
            plan += [("openai", t) for t in http_targets]
            for users in users_list:
                cli, timeout = _case_args(args, users)
                runs: dict[str, list[dict[str, Any]]] = {f"{p}/{t.name}": [] for p, t in plan}
                for r in range(args.rounds):  # rounds interleave the targets
                    for proto, t in plan:
                        proto_cli = [proto if a == args.protocol else a for a in cli]
                        print(
                            f"  {users:>5} users -> {proto} {t.name} (round {r + 1}/{args.rounds},"
                            f" load {load_average()})",
                            file=sys.stderr,
                            flush=True,
                        )
                        lag0 = _lag_counters(experts) if args.upstream == "paced" else None
                        result = run_loadgen(stack, t, proto_cli, timeout)
                        if lag0 is not None:
                            result["upstream_lag"] = _lag_text(lag0, _lag_counters(experts))
                        runs[f"{proto}/{t.name}"].append(result)
                res = {}
                for key, key_runs in runs.items():
                    direct = runs[key.split("/")[0] + "/direct"]
                    res[key] = _summary(key_runs, None if key.endswith("/direct") else direct)
                results[users] = res
            if args.upstream == "paced":
                end = _lag_counters(experts)
                lag = _lag_text(dict.fromkeys(end, 0.0), end) + f", max {end['max'] * 1e3:.1f} ms"
        finally:
            stack.close()
    upstream = "paced (emulator --pacing per-request)" if args.upstream == "paced" else (
        "emulator (batched)"
    )  # fmt: skip
    print(
        f"gateway_overhead: protocol=triton-grpc upstream={upstream} fleet={args.fleet} "
        f"preset={args.preset} tpot={args.tpot_ms}ms ttft={args.ttft_ms}ms "
        f"max_tokens={args.max_tokens} rounds={args.rounds} pin={args.pin} "
        f"({time.time() - started:.0f} s)"
    )
    load_end = load_average()
    print(f"load average (1/5/15 min): start {load_start}, end {load_end}")
    if args.upstream == "paced":
        print(f"paced emulator, token lag behind its deadline: {lag}")
    for line in report_grpc(results, args.rounds):
        print(line)
    for note in notes:
        print(note)
    if args.out:
        write_results(args, load_start, load_end, results)
    return 0


def report_grpc(results: dict[int, dict[str, dict[str, Any]]], rounds: int) -> list[str]:
    """The table and the per-user-count lines (added = median over rounds of the difference)."""
    lines = [
        "events = streamed token messages received; ev/CPU-s = per proxy CPU-second",
        f"{'users':>6} {'path':<20} {'TTFT p50':>8} {'p99':>8} {'+p50':>7} {'+p99':>7}"
        f" {'reqs':>6} {'fail':>4} {'ev/s':>6} {'CPU s':>6} {'ev/CPU-s':>8}",
    ]
    for users, res in results.items():
        for key, r in res.items():
            proxy = "add_p50" in r
            add50 = f"{r['add_p50']:+.2f}" if proxy else "-"
            add99 = f"{r['add_p99']:+.2f}" if proxy else "-"
            epc = f"{r['events_per_cpu_s']:.0f}" if proxy else "-"
            lines.append(
                f"{users:>6} {key:<20} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {add50:>7}"
                f" {add99:>7} {r['requests']:>6} {r['failed']:>4} {r['events_per_s']:>6.0f}"
                f" {r['cpu_s'] if proxy else 0:>6.2f} {epc:>8}"
            )
            if r["first_errors"]:
                lines.append(f"         errors: {r['first_errors'][:2]}")
    if any(r["upstream_lag"] for res in results.values() for r in res.values()):
        lines.append("paced emulator's token lag behind its deadlines during each run:")
        for users, res in results.items():
            for key, r in res.items():
                lines.append(f"{users:>6} {key:<20} {'; '.join(r['upstream_lag'])}")
    for users, res in results.items():
        lines.append(f"{users:>5} users, added TTFT over direct gRPC (median of {rounds} rounds):")
        for name in ("gateway", "nginx"):
            g = res.get(f"triton-grpc/{name}")
            if g is None:
                continue
            line = f"      gRPC {name:<8} p50 {g['add_p50']:+.2f} ms, p99 {g['add_p99']:+.2f} ms"
            if name == "gateway":
                line += f" (target p50 <= 1 ms: {'met' if g['add_p50'] <= 1.0 else 'MISSED'})"
            if rounds > 1:
                line += " rounds p50: " + " ".join(f"{v:+.2f}" for v in g["add_p50_rounds"])
            lines.append(line)
        g, h = res.get("triton-grpc/gateway"), res.get("openai/gateway")
        if g and h:
            lines.append(
                f"      relayed events per CPU-second: gRPC {g['events_per_cpu_s']:.0f}, "
                f"HTTP {h['events_per_cpu_s']:.0f}"
            )
            pairs = zip(g["events_per_cpu_s_rounds"], h["events_per_cpu_s_rounds"], strict=True)
            ratios = [a / b for a, b in pairs if a and b]
            if len(ratios) > 1:
                lines.append(
                    "      gRPC / HTTP round by round: "
                    + ", ".join(f"{x:.2f}" for x in ratios)
                    + f" (median {statistics.median(ratios):.2f})"
                )
        n = res.get("triton-grpc/nginx")
        if g and n:
            lines.append(
                f"      gRPC events per CPU-second, gateway vs nginx: {g['events_per_cpu_s']:.0f}"
                f" vs {n['events_per_cpu_s']:.0f} (ratio "
                f"{g['events_per_cpu_s'] / n['events_per_cpu_s']:.2f})"
            )
    return lines


if __name__ == "__main__":
    _loadgen.PROTOCOLS["triton-grpc"] = TritonGrpcStreamer  # type: ignore[assignment]
    sys.exit(_loadgen.main())
