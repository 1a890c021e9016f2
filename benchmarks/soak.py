"""Soak: many streaming users through the gateway for minutes; nothing lost, memory flat.

Starts an emulated fleet and ``expert-router serve`` in front of it, then runs the load
generator (its own process) for ``--minutes`` after a ramp. Prints requests lost (failed or
never finished), the gateway's resident memory at the start and end of the window and its
growth, and a time series of samples. Prints, never asserts.

    python benchmarks/soak.py                      # 1000 users, 10 minutes
    python benchmarks/soak.py --users 200 --minutes 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _stack import Stack, run_loadgen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=10.0, help="measured window")
    p.add_argument("--fleet", type=int, default=4)
    p.add_argument("--preset", default="cpu-tiny")
    p.add_argument("--tpot-ms", type=float, default=200.0)
    p.add_argument("--think-ms", type=float, default=None, help="user pause U(0, x); =TPOT")
    p.add_argument("--ttft-ms", type=float, default=5.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--route", choices=("chat", "completions"), default="chat")
    p.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--pin", action="store_true", help="load generator on its own core")
    p.add_argument("--out", type=Path, default=None, help="write the raw result as JSON")
    return p.parse_args(argv)


def gateway_statuses(url: str) -> dict[str, float]:
    """Requests the gateway answered, by HTTP status, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "expert_router_requests_total":
                status = s.labels.get("status", "?")
                out[status] = out.get(status, 0.0) + s.value
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    request_s = args.ttft_ms / 1e3 + args.max_tokens * args.tpot_ms / 1e3
    ramp = max(2.0, 1.5 * request_s)
    emu = ["--tpot-ms", str(args.tpot_ms), "--ttft-ms", str(args.ttft_ms)]
    emu += ["--max-batch", str(args.users + 64)]
    cli = ["--users", str(args.users), "--max-tokens", str(args.max_tokens)]
    cli += ["--route", args.route, "--ramp-s", str(ramp), "--warmup-s", str(ramp + request_s)]
    cli += ["--duration-s", str(args.minutes * 60), "--sample-s", str(args.sample_s)]
    cli += ["--drain-s", str(max(60.0, 4 * request_s))]
    cli += ["--think-ms", str(args.tpot_ms if args.think_ms is None else args.think_ms)]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = Stack(Path(tmp), pin=args.pin)
        try:
            experts, model = stack.emulator(args.fleet, args.preset, emu)
            gateway = stack.gateway(experts, model, workers=args.workers)
            timeout = ramp + request_s + args.minutes * 60 + 600
            result: dict[str, Any] = run_loadgen(stack, gateway, cli, timeout)
            statuses = gateway_statuses(gateway.urls[0])
        finally:
            stack.close()
    lost = result["requests_failed"] + result["requests_unfinished"]
    rss0, rss1 = result["rss_start_bytes"], result["rss_end_bytes"]
    peak = max([rss1, *(s["rss_bytes"] for s in result["samples"])])
    growth = (rss1 - rss0) / rss0 * 100 if rss0 else float("nan")
    print(
        f"soak: {args.users} users, {args.minutes:g} min window, fleet={args.fleet} "
        f"tpot={args.tpot_ms}ms max_tokens={args.max_tokens} workers={args.workers} "
        f"({time.time() - started:.0f} s)"
    )
    print(
        f"requests: started {result['requests_started']}, ok {result['requests_ok']}, "
        f"failed {result['requests_failed']}, unfinished {result['requests_unfinished']} "
        f"-> lost {lost} (target 0: {'met' if lost == 0 else 'MISSED'})"
    )
    print(f"gateway answered by status: {json.dumps(statuses)}")
    print(
        f"gateway RSS: {rss0 / 2**20:.1f} MiB at window start, {rss1 / 2**20:.1f} MiB at end, "
        f"peak {peak / 2**20:.1f} MiB -> growth {growth:+.1f}% "
        f"(target < 10%: {'met' if growth < 10 else 'MISSED'})"
    )
    ttft = result["ttft_ms"]
    print(
        f"first-token latency in window: p50 {ttft['p50']:.1f} ms, p99 {ttft['p99']:.1f} ms; "
        f"{result['events_per_s']:.0f} events/s; "
        f"{result['events_per_cpu_s']:.0f} events per gateway CPU-second"
    )
    print(f"{'t s':>7} {'RSS MiB':>8} {'CPU s':>7} {'events':>9} {'finished':>9}")
    for s in result["samples"]:
        print(
            f"{s['t_s']:>7.0f} {s['rss_bytes'] / 2**20:>8.1f} {s['cpu_s']:>7.1f}"
            f" {s['events']:>9} {s['finished']:>9}"
        )
    for err in result["first_errors"]:
        print(f"error: {err}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
