"""Fixtures: real nginx (installed by scripts/install-nginx.sh when missing) in front of two
gateway instances, both streaming from one emulated expert."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nginx_stack import TPOT_MS, ScaleOut, start_nginx_over  # noqa: E402
from procs import (  # noqa: E402
    ServerProcess,
    ensure_nginx,
    expert_router_cmd,
    free_port,
    running,
)


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    path, why = ensure_nginx()
    if path is None:
        pytest.skip(f"nginx unavailable: {why}")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nginx-scaleout")


@pytest.fixture(scope="module")
def expert_url(workdir: Path) -> Iterator[str]:
    port = free_port()
    cmd = expert_router_cmd("emulate", "--preset", "cpu-tiny", "--port", str(port))
    cmd += ["--tpot-ms", str(TPOT_MS), "--ttft-ms", "5"]
    url = f"http://127.0.0.1:{port}"
    with running(cmd, workdir / "emulator.log", health_url=f"{url}/health", timeout=60):
        yield url


@pytest.fixture(scope="module")
def gateway_urls(workdir: Path, expert_url: str) -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with contextlib.ExitStack() as stack:
        gateways = []
        for name, port in zip("ab", ports, strict=True):
            cmd = expert_router_cmd("serve", "--port", str(port), "--expert", f"*={expert_url}")
            gateway = ServerProcess(cmd, workdir / f"gateway-{name}.log")
            stack.callback(gateway.stop)
            gateways.append(gateway)
        for gateway, url in zip(gateways, urls, strict=True):
            gateway.wait_http(f"{url}/health", timeout=60)
        yield urls


@pytest.fixture(scope="module")
def scaleout(nginx_bin: str, workdir: Path, gateway_urls: list[str]) -> Iterator[ScaleOut]:
    prefix = workdir / "nginx"
    url, proc = start_nginx_over(nginx_bin, prefix, gateway_urls)
    try:
        proc.wait_http(f"{url}/health", timeout=30)
        yield ScaleOut(url, gateway_urls, prefix / "access.log")
    finally:
        proc.stop()
