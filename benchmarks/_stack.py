"""The processes a gateway benchmark measures: an emulated fleet, nginx, the gateway, LiteLLM.

Each is started on loopback with ``tests/integration/procs.py`` (one set of process helpers for
tests and benchmarks), registered on an ExitStack so it always stops, and described by a
``Target``: the base URLs a client spreads its users over and the pid whose CPU is measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "src"))

from procs import (  # noqa: E402
    ServerProcess,
    ensure_nginx,
)
from procs import expert_router_cmd as expert_router_cmd  # noqa: E402  (for the benchmarks)
from procs import free_port as free_port  # noqa: E402
from procs import free_port_block as free_port_block  # noqa: E402

from expert_router.gateway.nginx_conf import NginxOptions, render_nginx_conf  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
BYTE_RELAY = Path(__file__).resolve().parent / "_byte_relay.py"
DEFAULT_LITELLM_VENV = Path.home() / ".cache" / "expert-router" / "litellm-venv"


@dataclass
class Target:
    """Where a load generator sends its users, and which process to watch."""

    name: str
    urls: list[str]
    pid: int | None
    model: str
    api_key: str | None = None


class Stack:
    """Starts processes into ``workdir`` and stops them all on ``close()``."""

    def __init__(self, workdir: Path, *, pin: bool = False) -> None:
        self.workdir = workdir
        self.exit = contextlib.ExitStack()
        ncpu = len(os.sched_getaffinity(0))
        # --pin: servers on every core but the last, the load generator on the last one.
        self.server_cpus = f"0-{ncpu - 2}" if pin and ncpu > 1 else None
        self.client_cpus = str(ncpu - 1) if pin and ncpu > 1 else None

    def _wrap(self, cmd: list[str], cpus: str | None) -> list[str]:
        if cpus and shutil.which("taskset"):
            return ["taskset", "-c", cpus, *cmd]
        return cmd

    def start(
        self,
        name: str,
        cmd: list[str],
        health: str,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        proc = ServerProcess(
            self._wrap(cmd, self.server_cpus), self.workdir / f"{name}.log", env=env
        )
        self.exit.callback(proc.stop)
        proc.wait_http(health, timeout=timeout)
        return proc

    def emulator(self, fleet: int, preset: str, extra: list[str]) -> tuple[list[str], str]:
        """Start ``fleet`` experts in one emulator process; returns their URLs and model id."""
        base = free_port_block(fleet)
        cmd = expert_router_cmd("emulate", "--preset", preset, "--port", str(base))
        if fleet > 1:
            cmd += ["--fleet", str(fleet)]
        urls = [f"http://127.0.0.1:{base + i}" for i in range(fleet)]
        proc = self.start("emulator", cmd + extra, f"{urls[0]}/health")
        for url in urls[1:]:
            proc.wait_http(f"{url}/health")
        with urllib.request.urlopen(f"{urls[0]}/v1/models", timeout=5) as resp:
            model = str(json.load(resp)["data"][0]["id"])
        return urls, model

    def nginx(self, upstreams: list[str], model: str, workers: int = 1) -> Target:
        proc, port = self._nginx("nginx", upstreams, worker_processes=str(workers))
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/health")
        return Target("nginx", [url], proc.pid, model)

    def nginx_grpc(
        self, upstreams: list[str], model: str, workers: int = 1, keepalive: int = 1024
    ) -> Target:
        """nginx proxying gRPC (``nginx-config --grpc``) round-robin over ``grpc://`` URLs.

        nginx opens one upstream connection per call in flight; ``keepalive`` idle ones are kept.
        """
        proc, port = self._nginx(
            "nginx-grpc", upstreams, worker_processes=str(workers), grpc=True, keepalive=keepalive
        )
        wait_grpc_live(f"127.0.0.1:{port}", proc)
        return Target("nginx", [f"grpc://127.0.0.1:{port}"], proc.pid, model)

    def _nginx(self, name: str, upstreams: list[str], **options: Any) -> tuple[ServerProcess, int]:
        """Start nginx (config in ``workdir/name``) in front of ``upstreams``; (process, port)."""
        nginx, why = ensure_nginx()
        if nginx is None:
            raise RuntimeError(why)
        prefix = self.workdir / name
        prefix.mkdir(parents=True, exist_ok=True)
        port = free_port()
        hostports = [u.split("://", 1)[1] for u in upstreams]
        conf = NginxOptions(listen=f"127.0.0.1:{port}", **options)
        (prefix / "nginx.conf").write_text(render_nginx_conf(hostports, conf))
        cmd = [nginx, "-p", str(prefix), "-c", "nginx.conf", "-e", "stderr"]
        proc = ServerProcess(self._wrap(cmd, self.server_cpus), prefix / "nginx.log")
        self.exit.callback(proc.stop)
        return proc, port

    def gateway(
        self, experts: list[str], model: str, workers: int = 1, src: Path | None = None
    ) -> Target:
        """``expert-router serve`` over ``experts``; from the package under ``src`` (another
        checkout's ``src``, its C parts built there) instead of this one's: ``gateway-b``."""
        port = free_port()
        cmd = expert_router_cmd("serve", "--port", str(port))
        for url in experts:
            cmd += ["--expert", f"*={url}"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        url = f"http://127.0.0.1:{port}"
        name, env = ("gateway", None) if src is None else ("gateway-b", {"PYTHONPATH": str(src)})
        proc = self.start(name, cmd, f"{url}/ready", env=env)  # >= 1 replica is healthy
        return Target(name, [url], proc.pid, model)

    def relay(self, upstreams: list[str], model: str, strict: bool = False) -> Target:
        """The bare uvloop byte relay (``_byte_relay.py``): the floor under any Python proxy;
        ``strict``: the floor under one that reads both sides with httptools (``strict``)."""
        name = "strict" if strict else "relay"
        port = free_port()
        cmd = [sys.executable, str(BYTE_RELAY), "--port", str(port)]
        for url in upstreams:
            cmd += ["--upstream", url.split("://", 1)[1]]
        if strict:
            cmd.append("--strict")
        url = f"http://127.0.0.1:{port}"
        proc = self.start(name, cmd, f"{url}/health")
        return Target(name, [url], proc.pid, model)

    def litellm(self, venv: Path, experts: list[str], model: str) -> Target | str:
        """LiteLLM's proxy in front of the fleet, or the reason it cannot run."""
        exe = venv / "bin" / "litellm"
        if not exe.exists():
            return f"LiteLLM not installed in {venv} (see --install-litellm)"
        entries = [
            {
                "model_name": "emulated",
                "litellm_params": {"model": f"openai/{model}", "api_base": f"{u}/v1"}
                | {"api_key": "unused"},
            }
            for u in experts
        ]
        config: dict[str, Any] = {
            "model_list": entries,
            "litellm_settings": {"drop_params": True, "telemetry": False},
            "router_settings": {"routing_strategy": "simple-shuffle"},
        }
        path = self.workdir / "litellm.json"  # JSON is YAML
        path.write_text(json.dumps(config))
        port = free_port()
        cmd = [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
        key = "sk-bench-" + secrets.token_hex(16)
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        env["LITELLM_MASTER_KEY"] = key
        proc = ServerProcess(
            self._wrap(cmd, self.server_cpus), self.workdir / "litellm.log", env=env
        )
        self.exit.callback(proc.stop)
        url = f"http://127.0.0.1:{port}"
        try:
            proc.wait_http(f"{url}/health/liveliness", timeout=120)
        except RuntimeError as exc:
            return f"LiteLLM did not start: {str(exc)[-300:]}"
        return Target("litellm", [url], proc.pid, "emulated", api_key=key)

    def close(self) -> None:
        self.exit.close()


def wait_grpc_live(target: str, proc: ServerProcess, timeout: float = 30.0) -> None:
    """Call ServerLive on ``target`` (HOST:PORT) until it answers; raise with ``proc``'s log."""
    import time

    import grpc
    from tritonclient.grpc import service_pb2 as pb2
    from tritonclient.grpc import service_pb2_grpc as pb2_grpc

    deadline = time.monotonic() + timeout
    last = "no answer"
    with grpc.insecure_channel(target) as channel:
        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if not proc.alive():
                break
            try:
                if stub.ServerLive(pb2.ServerLiveRequest(), timeout=2).live:
                    return
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.05)
    raise RuntimeError(f"{target} not live ({last}); log:\n{proc.log_tail()}")


def install_litellm(venv: Path) -> str:
    """Create ``venv`` and pip-install ``litellm[proxy]`` there (never into the project's)."""
    if (venv / "bin" / "litellm").exists():
        return "already installed"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"pip install failed: {proc.stderr.strip()[-300:]}"
    return "installed"


def run_loadgen(stack: Stack, target: Target, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``_loadgen.py`` in its own process against ``target``; returns its JSON result."""
    cmd = [sys.executable, str(LOADGEN), "--model", target.model, *args]
    for url in target.urls:
        cmd += ["--url", url]
    if target.pid is not None:
        cmd += ["--watch", str(target.pid)]
    env = dict(os.environ)
    if target.api_key:
        env["LOADGEN_API_KEY"] = target.api_key  # not on the command line
    proc = subprocess.run(
        stack._wrap(cmd, stack.client_cpus),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
