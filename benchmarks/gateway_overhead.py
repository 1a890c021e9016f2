"""Gateway overhead: the same upstream fleet measured direct, through nginx, through the gateway.

One run starts an upstream fleet, nginx (round robin over it), ``expert-router serve`` (and
LiteLLM's proxy when installed), then drives each with the load generator in its own process:
first-token latency at 1 user and at many concurrent streaming users, the latency each proxy
ADDS over direct, and SSE events relayed per CPU-second of the proxy process. Prints, never
asserts.

The default upstream is PACED (``_paced_upstream.py``): every request's first token leaves
exactly TTFT after the server receives it, then one every TPOT, so the added latency is not
buried under an emulator's batching phase (``--upstream emulator`` keeps the emulator). With
``--pin`` (default on >= 2 cores) the proxies run on core 0, upstream and load generator on
the others. The load average at the start and end is printed: the figures are only as quiet
as the machine.

    python benchmarks/gateway_overhead.py            # full run (a few minutes)
    python benchmarks/gateway_overhead.py --quick    # short windows, fewer users
    python benchmarks/gateway_overhead.py --gateway-b OTHER/src  # A/B two versions, one run

``--gateway-b`` runs a second gateway from another checkout's ``src`` (``git worktree add``,
its C parts built there) beside this one, in the same rounds: on a machine whose figures move
from run to run, two versions are compared only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _loadgen import LEGS
from _stack import (
    DEFAULT_LITELLM_VENV,
    Stack,
    Target,
    free_port_block,
    install_litellm,
    run_loadgen,
)

PACED = Path(__file__).resolve().parent / "_paced_upstream.py"

PROTOCOLS = ("openai", "triton-grpc")  # triton-grpc: benchmarks/_grpc_loadgen.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short windows and 200 users")
    p.add_argument("--protocol", choices=PROTOCOLS, default="openai")
    p.add_argument("--users", default=None, help="user counts, comma-separated (1,1000)")
    p.add_argument("--upstream", choices=("paced", "emulator"), default="paced")
    p.add_argument("--fleet", type=int, default=4, help="upstream experts (one process)")
    p.add_argument("--preset", default="cpu-tiny", help="emulator preset")
    p.add_argument("--tpot-ms", type=float, default=500.0, help="fixed upstream TPOT")
    p.add_argument("--think-ms", type=float, default=None, help="user pause U(0, x); =TPOT")
    p.add_argument("--ttft-ms", type=float, default=5.0, help="fixed upstream TTFT")
    p.add_argument("--max-tokens", type=int, default=16, help="per request, many users")
    p.add_argument("--max-tokens-1", type=int, default=1, help="per request, 1 user")
    p.add_argument("--route", choices=("chat", "completions"), default="chat")
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=0,
        help="prompts of the bundled set cut to this many tokens (0: ~18-word prompts)",
    )
    p.add_argument("--window-s", type=float, default=None, help="measured seconds per case")
    p.add_argument("--rounds", type=int, default=1, help="repeat; medians are reported")
    p.add_argument("--targets", default="direct,nginx,gateway,litellm")
    p.add_argument("--litellm-venv", type=Path, default=DEFAULT_LITELLM_VENV)
    p.add_argument(
        "--install-litellm", action="store_true", help="pip install litellm[proxy] there"
    )
    p.add_argument("--workers", type=int, default=1, help="nginx and gateway processes")
    p.add_argument(
        "--gateway-b",
        type=Path,
        default=None,
        metavar="SRC",
        help="A/B: a second gateway from another checkout's src/ (target gateway-b)",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) > 1,
        help="proxies on core 0; upstream and load generator on the other cores",
    )
    p.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    return p.parse_args(argv)


def _case_args(args: argparse.Namespace, users: int) -> tuple[list[str], float]:
    window = args.window_s or (5.0 if args.quick else 15.0 if users == 1 else 30.0)
    max_tokens = args.max_tokens_1 if users == 1 else args.max_tokens
    request_s = args.ttft_ms / 1e3 + max_tokens * args.tpot_ms / 1e3
    ramp = 0.0 if users == 1 else max(2.0, request_s * 1.5)
    warmup = 1.0 if users == 1 else ramp + request_s
    cli = ["--users", str(users), "--max-tokens", str(max_tokens), "--route", args.route]
    cli += ["--prompt-tokens", str(args.prompt_tokens)]
    cli += ["--protocol", args.protocol, "--ramp-s", str(ramp), "--warmup-s", str(warmup)]
    think = args.think_ms if args.think_ms is not None else 0.0 if users == 1 else args.tpot_ms
    cli += ["--think-ms", str(think)]
    cli += ["--duration-s", str(window), "--drain-s", "30", "--sample-s", str(window)]
    return cli, warmup + window + 60 + request_s


def _median(results: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for r in results:
        v: Any = r
        for k in keys:
            v = v[k]
        values.append(float(v))
    return statistics.median(values)


GATEWAY_HISTOGRAMS = {
    "overhead": "expert_router_overhead_seconds",  # arrival -> upstream request sent
    "upstream_ttft": "expert_router_upstream_ttft_seconds",  # sent -> first upstream chunk
}


def scrape_histograms(url: str) -> dict[str, dict[str, float]]:
    """Cumulative bucket counts (by ``le``), sum and count of the gateway's own histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, dict[str, float]] = {k: {} for k in GATEWAY_HISTOGRAMS}
    names = {v: k for k, v in GATEWAY_HISTOGRAMS.items()}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for suffix in ("_bucket", "_sum", "_count"):
                base = s.name.removesuffix(suffix)
                if s.name.endswith(suffix) and base in names:
                    key = s.labels["le"] if suffix == "_bucket" else suffix
                    bucket = out[names[base]]
                    bucket[key] = bucket.get(key, 0.0) + s.value
    return out


def histogram_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean and bucket-bound p50/p99 (ms) of the observations between two scrapes."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = delta.pop("_count", 0.0)
    total = delta.pop("_sum", 0.0)
    bounds = sorted((float(le), n) for le, n in delta.items())

    def quantile(q: float) -> float:
        for le, n in bounds:
            if n >= q * count:
                return le * 1e3
        return float("nan")

    mean = total / count * 1e3 if count else float("nan")
    return {
        "count": count,
        "mean_ms": mean,
        "p50_le_ms": quantile(0.5),
        "p99_le_ms": quantile(0.99),
    }


def measure(
    args: argparse.Namespace, stack: Stack, targets: list[Target], users: int
) -> dict[str, Any]:
    cli, timeout = _case_args(args, users)
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    inside: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for target in targets:
            load = load_average()
            print(f"  {users:>5} users -> {target.name} (load {load})", file=sys.stderr, flush=True)
            before = scrape_histograms(target.urls[0]) if target.name == "gateway" else None
            runs[target.name].append(run_loadgen(stack, target, cli, timeout))
            if before is not None:
                after = scrape_histograms(target.urls[0])
                inside = {k: histogram_summary(before[k], after[k]) for k in GATEWAY_HISTOGRAMS}
    out = {}
    for name, results in runs.items():
        out[name] = {
            "p50_ms": _median(results, "ttft_ms", "p50"),
            "p99_ms": _median(results, "ttft_ms", "p99"),
            "hdr_p50_ms": _median(results, "headers_ms", "p50"),
            "hdr_p99_ms": _median(results, "headers_ms", "p99"),
            "requests": int(_median(results, "ok_in_window")),
            "failed": int(sum(r["requests_failed"] for r in results)),
            "events_per_s": _median(results, "events_per_s"),
            "cpu_s": _median(results, "watched_cpu_s"),
            "events_per_cpu_s": _median(results, "events_per_cpu_s"),
            "first_errors": results[-1]["first_errors"],
        }
        if all("outside_ms" in r for r in results):  # the paced upstream stamps its first token
            for leg in LEGS:
                for q in ("p50", "p99"):
                    out[name][f"{leg}_{q}_ms"] = _median(results, f"{leg}_ms", q)
    if inside and "gateway" in out:
        out["gateway"]["inside"] = inside
    for name in ("gateway", "gateway-b", "litellm", "relay", "strict"):
        if name in runs and "nginx" in runs:  # round by round: nginx's rate moves between rounds
            pairs = zip(runs[name], runs["nginx"], strict=True)
            out[name]["epc_ratios"] = [
                g["events_per_cpu_s"] / n["events_per_cpu_s"] for g, n in pairs
            ]
    return out


def report(all_results: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "TTFT = time to the first token (ms); + = added over direct; CPU s = proxy process",
        f"{'users':>6} {'target':<9} {'TTFT p50':>8} {'p99':>8} {'+p50':>8} {'+p99':>8}"
        f" {'reqs':>6} {'fail':>4} {'ev/s':>6} {'CPU s':>6} {'ev/CPU-s':>8}",
    ]
    for users, res in all_results.items():
        d = res.get("direct")
        for name, r in res.items():
            base = d if name != "direct" else None

            def add(key: str, r: dict[str, Any] = r, base: dict[str, Any] | None = base) -> str:
                return f"{r[key] - base[key]:+.2f}" if base else "-"

            epc = r["events_per_cpu_s"]
            lines.append(
                f"{users:>6} {name:<9} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                f" {add('p50_ms'):>8} {add('p99_ms'):>8} {r['requests']:>6} {r['failed']:>4}"
                f" {r['events_per_s']:>6.0f} {r['cpu_s'] if name != 'direct' else 0:>6.2f}"
                f" {'-' if name == 'direct' or epc != epc else f'{epc:.0f}':>8}"
            )
            if r["first_errors"]:
                lines.append(f"         errors: {r['first_errors'][:2]}")
    lines.append("")
    for users, res in all_results.items():
        for key, h in res.get("gateway", {}).get("inside", {}).items():
            lines.append(
                f"{users:>6} users, gateway's own {key} histogram (last round): mean "
                f"{h['mean_ms']:.3f} ms, p50 <= {h['p50_le_ms']:g} ms, p99 <= {h['p99_le_ms']:g} ms"
            )
    lines.append("")
    lines += legs(all_results)
    lines += ratios(all_results)
    return lines


def legs(all_results: dict[int, dict[str, Any]]) -> list[str]:
    """The first token outside the upstream, by leg: forward = request sent -> upstream received
    it, return = upstream sent the token -> client read it, outside = both (the first-token time
    less the upstream's own, so without its timers' lateness); + = added over direct."""
    lines: list[str] = []
    for users, res in all_results.items():
        d = res.get("direct")
        if not d or "outside_p99_ms" not in d:
            continue
        if not lines:
            lines += [
                "first token outside the upstream (ms): forward = sent -> upstream received,"
                " return = upstream sent -> client read, outside = both",
                f"{'users':>6} {'target':<9}"
                + "".join(f" {leg + ' p50':>11} {'p99':>6}" for leg in LEGS)
                + f" {'+p50':>6} {'+p99':>6}",
            ]
        for name, r in res.items():
            if "outside_p99_ms" not in r:
                continue
            cells = "".join(
                f" {r[f'{leg}_p50_ms']:>11.2f} {r[f'{leg}_p99_ms']:>6.2f}" for leg in LEGS
            )
            added = [r[f"outside_{q}_ms"] - d[f"outside_{q}_ms"] for q in ("p50", "p99")]
            plus = "".join(f" {a:>+6.2f}" if name != "direct" else f" {'-':>6}" for a in added)
            lines.append(f"{users:>6} {name:<9}{cells}{plus}")
    return lines + [""] if lines else []


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def ratios(all_results: dict[int, dict[str, Any]]) -> list[str]:
    lines = []
    for users, res in all_results.items():
        d, n = res.get("direct"), res.get("nginx")
        if not d:
            continue
        for name in ("gateway", "gateway-b", "litellm"):
            g = res.get(name)
            if not g:
                continue
            add50, add99 = g["p50_ms"] - d["p50_ms"], g["p99_ms"] - d["p99_ms"]
            line = f"{users:>5} users, {name}: added TTFT p50 {add50:+.2f} ms"
            line += f" (target <= 0.5 ms: {_verdict(add50 <= 0.5)})"
            lines.append(line)
            if n and users > 1:
                n99 = n["p99_ms"] - d["p99_ms"]
                epc = g["events_per_cpu_s"] / n["events_per_cpu_s"]
                ok99 = add99 <= 1.5 * max(n99, 0.0)
                ratio99 = f"ratio {add99 / n99:.2f}" if n99 > 0 else "nginx adds nothing"
                lines.append(
                    f"      added p99 {add99:+.2f} ms vs nginx {n99:+.2f} ms: {ratio99}"
                    f" (target <= 1.5 x nginx's: {_verdict(ok99)})"
                )
                if "outside_p99_ms" in g and "outside_p99_ms" in n:
                    o99 = g["outside_p99_ms"] - d["outside_p99_ms"]
                    on99 = n["outside_p99_ms"] - d["outside_p99_ms"]
                    ratio = f"ratio {o99 / on99:.2f}" if on99 > 0 else "nginx adds nothing"
                    lines.append(
                        f"      the same outside the upstream (its pacing taken out): {o99:+.2f}"
                        f" ms vs nginx {on99:+.2f} ms: {ratio}"
                    )
                lines.append(
                    f"      events per CPU-second {g['events_per_cpu_s']:.0f} vs nginx "
                    f"{n['events_per_cpu_s']:.0f}: ratio {epc:.2f}"
                    f" (target >= 0.7, aim 0.8: {_verdict(epc >= 0.7)})"
                )
                paired = g.get("epc_ratios", [])
                if len(paired) > 1:
                    each = ", ".join(f"{r:.2f}" for r in paired)
                    lines.append(
                        f"      the same ratio round by round: {each}"
                        f" (median {statistics.median(paired):.2f})"
                    )
        lines += _floor(users, res)
    return lines


def _floor(users: int, res: dict[str, Any]) -> list[str]:
    """The relays beside nginx and the gateway: how much of the gateway's CPU per event is the
    Python runtime under it (event loop, interpreter, kernel: ``relay``), how much reading
    both sides with httptools (``strict``), and how much is ours."""
    n, g = res.get("nginx"), res.get("gateway")
    if users == 1:
        return []
    lines: list[str] = []
    floors = (
        ("relay", "a uvloop byte relay, no parsing: a Python proxy's floor"),
        ("strict", "the same relay reading both sides with httptools, responses framed again"),
    )
    for name, what in floors:
        r = res.get(name)
        if not r:
            continue
        lines.append(f"{users:>5} users, {name} ({what})")
        if n:
            paired = ", ".join(f"{x:.2f}" for x in r.get("epc_ratios", []))
            epc = r["events_per_cpu_s"] / n["events_per_cpu_s"]
            lines.append(
                f"      events per CPU-second {r['events_per_cpu_s']:.0f} vs nginx "
                f"{n['events_per_cpu_s']:.0f}: ratio {epc:.2f} (round by round: {paired})"
            )
        if g:
            us_r, us_g = 1e6 / r["events_per_cpu_s"], 1e6 / g["events_per_cpu_s"]
            ratio = g["events_per_cpu_s"] / r["events_per_cpu_s"]
            lines.append(
                f"      gateway vs {name}: ratio {ratio:.2f}; CPU per event {us_g:.1f} us"
                f" vs {us_r:.1f} us: the difference {us_g - us_r:+.1f} us"
            )
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pin_cpus(stack: Stack, pin: bool) -> str | None:
    """Proxies (the stack's servers) on the first CPU, the load generator and the upstream on
    the rest; returns the upstream's CPU list (None: not pinned)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None
    rest = ",".join(str(c) for c in cpus[1:])
    stack.server_cpus, stack.client_cpus = str(cpus[0]), rest
    return rest


def start_upstream(
    args: argparse.Namespace, stack: Stack, users: int, cpus: str | None
) -> tuple[list[str], str, Any]:
    """The fleet every target shares: its URLs, model id and process."""
    if args.upstream == "emulator":
        extra = ["--tpot-ms", str(args.tpot_ms), "--ttft-ms", str(args.ttft_ms)]
        extra += ["--max-batch", str(users + 64)]
        saved, stack.server_cpus = stack.server_cpus, cpus
        try:
            urls, model = stack.emulator(args.fleet, args.preset, extra)
        finally:
            stack.server_cpus = saved
        return urls, model, None
    base = free_port_block(args.fleet)
    cmd = [sys.executable, str(PACED), "--port", str(base), "--fleet", str(args.fleet)]
    cmd += ["--ttft-ms", str(args.ttft_ms), "--tpot-ms", str(args.tpot_ms)]
    if cpus:
        cmd += ["--cpus", cpus]
    urls = [f"http://127.0.0.1:{base + i}" for i in range(args.fleet)]
    proc = stack.start("paced", cmd, f"{urls[0]}/health")
    for url in urls[1:]:
        proc.wait_http(f"{url}/health")
    return urls, "paced", proc


def paced_lag(log: str) -> str:
    for line in reversed(log.splitlines()):
        if line.startswith('{"paced_upstream"'):
            s = json.loads(line)["paced_upstream"]
            return (
                f"{s['tokens']} tokens, mean {s['lag_mean_ms']:.3f} ms, "
                f"p50 {s['lag_p50_ms']:.3f} ms, p99 {s['lag_p99_ms']:.3f} ms"
            )
    return "not reported"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    users = [int(u) for u in (args.users or ("1,200" if args.quick else "1,1000")).split(",")]
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.protocol == "triton-grpc":
        from _grpc_loadgen import run_grpc

        return run_grpc(args, users)
    notes: list[str] = []
    if "litellm" in wanted and args.install_litellm:
        notes.append(f"litellm: {install_litellm(args.litellm_venv)}")
    started = time.time()
    load_start = load_average()
    lag = "n/a"
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as tmp:
        stack = Stack(Path(tmp))
        upstream_cpus = pin_cpus(stack, args.pin)
        try:
            experts, model, upstream = start_upstream(args, stack, max(users), upstream_cpus)
            targets = [Target("direct", experts, None, model)]
            if "nginx" in wanted:
                targets.append(stack.nginx(experts, model, workers=args.workers))
            if "gateway" in wanted:
                targets.append(stack.gateway(experts, model, workers=args.workers))
            if args.gateway_b is not None:
                b = stack.gateway(experts, model, workers=args.workers, src=args.gateway_b)
                targets.append(b)
            if "relay" in wanted:
                targets.append(stack.relay(experts, model))
            if "strict" in wanted:
                targets.append(stack.relay(experts, model, strict=True))
            if "litellm" in wanted:
                lite = stack.litellm(args.litellm_venv, experts, model)
                if isinstance(lite, str):
                    notes.append(f"litellm skipped: {lite}")
                else:
                    targets.append(lite)
            results = {u: measure(args, stack, targets, u) for u in users}
        finally:
            stack.close()
        if args.upstream == "paced":
            lag = paced_lag(upstream.log_tail())
    load_end = load_average()
    print(
        f"gateway_overhead: upstream={args.upstream} protocol={args.protocol} fleet={args.fleet} "
        f"tpot={args.tpot_ms}ms ttft={args.ttft_ms}ms max_tokens={args.max_tokens} "
        f"route={args.route} prompt_tokens={args.prompt_tokens} rounds={args.rounds} "
        f"workers={args.workers} pin={args.pin} "
        f"({time.time() - started:.0f} s)"
    )
    print(f"load average (1/5/15 min): start {load_start}, end {load_end} on {os.cpu_count()} CPUs")
    if args.upstream == "paced":
        print(f"paced upstream, token lag behind its deadline: {lag}")
    print("events = SSE data events received by the clients; ev/CPU-s = per proxy CPU-second")
    for line in report(results):
        print(line)
    for note in notes:
        print(note)
    if args.out:
        write_results(args, load_start, load_end, results)
    return 0


def write_results(
    args: argparse.Namespace, load_start: str, load_end: str, results: dict[int, Any]
) -> None:
    """Every case's figures, rounds included, as JSON to ``--out``."""
    args.out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"out": str(args.out)},
                "load_average": {"start": load_start, "end": load_end},
                "results": results,
            },
            default=str,
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
