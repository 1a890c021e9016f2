"""How honest are the bench client's timestamps? Prints figures, asserts nothing.

1. 1000 concurrent users at 10 tokens/s each (TPOT 100 ms, TTFT 100 ms) against the paced
   reference emulator (``expert_router.bench.calibrate``; its own process): the client's TPOT
   error (mean over requests; target <= 1 ms) and TTFT error (p99; target <= 5 ms), both
   measured minus nominal, so they also contain the server's own lag (an upper bound).
2. One client process at rising event rates (1000 users, shorter TPOT): token delivery lag
   behind the nominal send time; the largest rate whose p99 lag stays under 10 ms and whose
   mean TPOT error stays under 1 ms is the capacity one process keeps honest.

    python benchmarks/bench_client_capacity.py [--users 1000] [--tokens 100] [--ramp 10]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from expert_router.bench.calibrate import reference_server, relative_recv, timing_errors
from expert_router.bench.client import Counters
from expert_router.bench.protocols import ClientSettings
from expert_router.bench.runner import SweepConfig, run_once
from expert_router.bench.workload import Workload, WorkloadConfig, load_documents


def measure(
    workload: Workload, users: int, tpot_ms: float, ttft_ms: float, ramp_s: float, workers: int
) -> dict[str, Any]:
    with reference_server(ttft_ms, tpot_ms) as srv:
        config = SweepConfig(
            settings=ClientSettings(srv.url), users=[users], workers=workers, ramp_s=ramp_s
        )
        plans = workload.plan(users, seed=0)
        t = time.perf_counter()
        records, t0_ns = run_once(
            workload, plans, config, users=users, repetition=0, counters=Counters()
        )
        wall = time.perf_counter() - t
    relative_recv(records, t0_ns)
    out = {"all": timing_errors(records, ttft_ms=ttft_ms, tpot_ms=tpot_ms)}
    for turn, name in ((0, "base"), (1, "continuation")):
        subset = [r for r in records if r.turn == turn]
        out[name] = timing_errors(subset, ttft_ms=ttft_ms, tpot_ms=tpot_ms)
    out["server_lag"] = srv.server_lag
    out["wall_s"] = wall
    # the steady event rate: every user streaming at once
    out["nominal_events_per_s"] = users * 1000.0 / tpot_ms
    return out


def fmt(x: Any, d: int = 2) -> str:
    return f"{x:.{d}f}" if isinstance(x, int | float) else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=100, help="output tokens per request")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which users start")
    parser.add_argument("--tpots", default="100,50,33.3,25,20", help="TPOTs (ms) for part 2")
    args = parser.parse_args()
    cfg = WorkloadConfig(base_tokens=100, continuation_tokens=100 + args.tokens + 20,
                         output_tokens=args.tokens, jitter=10)  # fmt: skip
    workload = Workload(load_documents(), None, cfg)
    print(f"cpus={os.cpu_count()} users={args.users} tokens/request={args.tokens} "
          f"ramp={args.ramp}s; errors: measured minus nominal (client + server lag)")  # fmt: skip

    print("\n1) 1000 users x 10 tokens/s (TPOT 100 ms, TTFT 100 ms), one client process")
    r = measure(workload, args.users, 100.0, 100.0, args.ramp, 1)
    print("   turn          TPOT err mean  p99 | TTFT err mean   p99 | request lag p99"
          " | token lag p50  p99 (ms)")  # fmt: skip
    for name in ("base", "continuation", "all"):
        e = r[name]
        t, p, g = e["ttft_error_ms"], e["tpot_error_ms"], e["token_lag_ms"]
        q = e["request_lag_ms"]
        print(f"   {name:<13} {fmt(p['mean'], 3):>12} {fmt(p['p99']):>5} | {fmt(t['mean']):>12}"
              f" {fmt(t['p99']):>6} | {fmt(q['p99']):>15} | {fmt(g['p50']):>13} {fmt(g['p99']):>5}"
              f"   errors {e['errors']}")  # fmt: skip
    print(f"   server lag: {r['server_lag']}")

    print("\n2) one client process at rising event rates")
    print("   TPOT ms  events/s nominal  peak 1 s | TPOT err mean | lag p50    p99 (ms) | honest")
    best = 0.0
    for tpot in (float(x) for x in args.tpots.split(",")):
        r = measure(workload, args.users, tpot, tpot, args.ramp, 1)
        e = r["continuation"]
        lag, perr = e["token_lag_ms"], e["tpot_error_ms"]
        honest = (
            e["errors"] == 0
            and isinstance(lag["p99"], float) and lag["p99"] <= 10.0
            and isinstance(perr["mean"], float) and abs(perr["mean"]) <= 1.0
        )  # fmt: skip
        if honest:
            best = max(best, r["nominal_events_per_s"])
        rate = fmt(r["all"]["peak_events_per_s"], 0)
        print(f"   {tpot:7.1f} {r['nominal_events_per_s']:>17.0f} {rate:>9}"
              f" | {fmt(perr['mean'], 3):>13} | {fmt(lag['p50']):>7} {fmt(lag['p99']):>6}"
              f"          | {'yes' if honest else 'no'}")  # fmt: skip
    print(f"\n   one process keeps timestamps honest up to ~{best:.0f} events/s "
          "(continuation turns, all users streaming; past that, use --workers)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
