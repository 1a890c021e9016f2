"""The benchmarks' load generator, run for a second against a real emulator: its counts add up
and the /proc readings of the watched process are live (keeps benchmarks/ from rotting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from procs import expert_router_cmd, free_port, running  # noqa: E402

from _loadgen import PROMPTS, percentile, prompts_of  # noqa: E402

pytestmark = [pytest.mark.integration]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) != percentile([], 50)  # nan


def test_prompts_are_the_short_ones_or_the_bundled_set_cut() -> None:
    from expert_router.tokenizer import count_tokens

    assert prompts_of(0) == PROMPTS
    cut = prompts_of(335)
    assert len(cut) > 100 and len(set(cut)) == len(cut)
    assert all(count_tokens(p) <= 335 for p in cut)
    assert sum(count_tokens(p) == 335 for p in cut) > len(cut) // 2  # the set's texts are longer


def _emulator(port: int) -> list[str]:
    cmd = expert_router_cmd("emulate", "--preset", "cpu-tiny", "--port", str(port))
    return cmd + ["--tpot-ms", "10", "--ttft-ms", "5"]


def _loadgen(url: str, users: int, watch: int) -> dict[str, Any]:
    """One second of ``_loadgen.py`` against ``url``, watching process ``watch``: its result."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "_loadgen.py"), "--url", url]
    argv += ["--model", "cpu-tiny", "--users", str(users), "--max-tokens", "5"]
    argv += ["--warmup-s", "0.3", "--duration-s", "1", "--sample-s", "0.5", "--watch", str(watch)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_loadgen_against_the_emulator(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(_emulator(port), tmp_path / "emulator.log", health_url=f"{url}/health") as emu:
        result = _loadgen(url, 4, emu.pid)
    assert result["requests_failed"] == 0, result["first_errors"]
    assert result["requests_unfinished"] == 0
    assert result["requests_ok"] == result["requests_started"] > 4
    assert 0 < result["ok_in_window"] <= result["requests_ok"]
    # 5 tokens + the role chunk of a chat stream per request, at least 5 SSE events each
    assert result["events_in_window"] >= 5 * (result["ok_in_window"] - 4)
    ttft = result["ttft_ms"]
    assert 0 < result["headers_ms"]["p50"] <= ttft["p50"] <= ttft["p99"] <= ttft["max"]
    assert result["watched_cpu_s"] > 0
    assert result["rss_start_bytes"] > 10 * 2**20
    assert len(result["samples"]) == 2
    assert "outside_ms" not in result  # the emulator does not stamp its events


def test_loadgen_splits_a_stamped_first_token_in_its_legs(tmp_path: Path) -> None:
    """Against the paced upstream (first token 20 ms after it receives a request, its event
    stamped with both times), the load generator splits each first token: the way there and
    back are each positive and, with the server's own 20 ms or more, account for it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    paced = [sys.executable, str(ROOT / "benchmarks" / "_paced_upstream.py"), "--port", str(port)]
    paced += ["--ttft-ms", "20", "--tpot-ms", "5"]
    with running(paced, tmp_path / "paced.log", health_url=f"{url}/health") as upstream:
        result = _loadgen(url, 4, upstream.pid)
    assert result["requests_failed"] == 0, result["first_errors"]
    assert result["legs_n"] == result["ok_in_window"] > 0
    ttft, outside = result["ttft_ms"], result["outside_ms"]
    assert result["forward_ms"]["p50"] > 0 and result["return_ms"]["p50"] > 0
    # per request: first token = outside + the server's own time, 20 ms (a timer of the loop's
    # 1 ms clock may fire up to 1 ms early) or late by its lag
    for q in ("p50", "p99", "max"):
        assert outside[q] + 19 <= ttft[q] <= outside[q] + 20 + 15, (q, outside, ttft)


@pytest.mark.parametrize("strict", [False, True], ids=["bytes", "strict"])
def test_byte_relay_carries_streams_whole(tmp_path: Path, strict: bool) -> None:
    """The byte relay (gateway_overhead.py's floor of a Python proxy) loses nothing: every
    stream through it ends, and its own process is the one watched; so does its strict form
    (both sides read by httptools, the answers framed again)."""
    port, relay_port = free_port(), free_port()
    url, relay_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{relay_port}"
    relay = [sys.executable, str(ROOT / "benchmarks" / "_byte_relay.py"), "--port", str(relay_port)]
    relay += ["--upstream", f"127.0.0.1:{port}"] + (["--strict"] if strict else [])
    with (
        running(_emulator(port), tmp_path / "emulator.log", health_url=f"{url}/health"),
        running(relay, tmp_path / "relay.log", health_url=f"{relay_url}/health") as proxy,
    ):
        result = _loadgen(relay_url, 8, proxy.pid)
    assert result["requests_failed"] == 0, result["first_errors"]
    assert result["requests_unfinished"] == 0
    assert result["requests_ok"] == result["requests_started"] > 8
    assert result["events_in_window"] >= 5 * (result["ok_in_window"] - 8)
    assert result["watched_cpu_s"] > 0


def test_gateway_b_runs_from_the_source_tree_it_is_given(tmp_path: Path) -> None:
    """``gateway_overhead.py --gateway-b SRC``: the second gateway is started with ``SRC``
    first on its path, under its own name, and serves."""
    from _stack import Stack

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    src = ROOT / "src"
    stack = Stack(tmp_path / "stack")
    try:
        with running(_emulator(port), tmp_path / "emulator.log", health_url=f"{url}/health"):
            target = stack.gateway([url], "cpu-tiny", src=src)
            environ = Path(f"/proc/{target.pid}/environ").read_bytes().split(b"\0")
            assert target.pid is not None
            result = _loadgen(target.urls[0], 4, target.pid)
    finally:
        stack.close()
    assert target.name == "gateway-b"
    assert b"PYTHONPATH=" + str(src).encode() in environ
    assert result["requests_failed"] == 0, result["first_errors"]
    assert result["requests_ok"] > 4 and result["watched_cpu_s"] > 0
