"""The demo end to end with tiny parameters: every output is written and no server, thread or
process outlives it, also when it is interrupted (Ctrl-C) or fails half-way."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from expert_router.experiment import demo as demo_mod
from expert_router.experiment.demo import DemoSettings, run_demo
from expert_router.experiment.paper import Protocol
from expert_router.experiment.stack import ServerStack

pytestmark = pytest.mark.integration

LIVE = Protocol(users=(1, 2), repeat=1, output_tokens=4, base_tokens=40,
                continuation_tokens=70, jitter=4, window_s=0.5)  # fmt: skip
SIM = Protocol(users=(1, 5), repeat=1, output_tokens=20, base_tokens=40,
               continuation_tokens=70, jitter=4, window_s=1.0)  # fmt: skip
FAST = {"tpot_ms": 2.0, "ttft_ms": 5.0}


def _listening(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def _healthy(url: str) -> bool:
    """A whole request (not a bare connect the server may not have accepted yet)."""
    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
        return bool(resp.status == 200)


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "expert-router-servers"]


def _settings(out: Path) -> DemoSettings:
    return DemoSettings(out=out, preset_overrides=FAST, live=LIVE, simulate=SIM, configs=("A", "D"))


def test_demo_writes_the_report_and_stops_everything(tmp_path: Path) -> None:
    result = run_demo(_settings(tmp_path / "demo"))
    out = tmp_path / "demo"
    for name in ("index.html", "report.html", "sweep.csv", "ttft.png", "session_throughput.png",
                 "live/report.html", "live/sweep.csv", "live/tpot.png",
                 "simulate/A/users-5/summary.json", "simulate/D/report.html"):  # fmt: skip
        assert (out / name).is_file(), name
    index = (out / "index.html").read_text()
    assert 'href="report.html"' in index and 'href="live/report.html"' in index
    # the live sweep went through the gateway to the 8 experts, without errors
    live = json.loads((out / "live" / "users-2" / "summary.json").read_text())
    assert live["totals"] == {
        "requests": 4,
        "errors": 0,
        "output_tokens": 16,
        "errors_by_reason": {},
    }
    assert live["gateway_overhead"]["n"] == 4
    assert [len(v) for v in result.sim_summaries.values()] == [2, 2]
    assert set(result.timings) == {"start", "live", "simulate", "report", "total"}
    # nothing left running: 9 servers (gateway + 8 experts) closed, no thread, no process
    assert len(result.server_urls) == 9
    assert not any(_listening(u) for u in result.server_urls)
    assert not _server_threads() and not multiprocessing.active_children()


def test_interrupted_demo_stops_its_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def interrupted(target: str, *args: object, **kwargs: object) -> None:
        assert _healthy(target)  # the gateway is up while the sweep runs
        seen.append(target)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_mod, "bench_sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(_settings(tmp_path / "demo"))
    assert len(seen) == 1 and not _listening(seen[0])
    assert not _server_threads()


def test_stack_stops_servers_on_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), ServerStack() as stack:
        urls = stack.fleet(["cpu-tiny", "cpu-tiny"])
        gateway = stack.gateway({"0": [urls[0]], "*": [urls[1]]})
        assert all(_healthy(u) for u in (gateway, *urls))
        raise RuntimeError("boom")
    assert stack.closed and not stack.alive
    assert not any(_listening(u) for u in (gateway, *urls))
    stack.close()  # idempotent


def test_ctrl_c_on_the_command_exits_cleanly(tmp_path: Path) -> None:
    """SIGINT to the real command while it runs the live sweep: exit 130, ports closed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    out = str(tmp_path / "d")
    cmd = [sys.executable, "-m", "expert_router.cli.main", "demo", "--quick",
           "--live-users", "1,2", "--output-tokens", "2000", "--out", out]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            lines.append(line)
            if "step 2/4" in line or time.monotonic() > deadline:
                break
        assert any("step 2/4" in ln for ln in lines), "".join(lines)
        gateway = next(ln.split(" on ")[-1].strip() for ln in lines if "gateway (" in ln)
        time.sleep(1.0)
        assert _listening(gateway)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert not _listening(gateway)
