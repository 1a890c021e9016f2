"""A rolling restart behind real nginx: each of two gateways is stopped with SIGTERM (it
drains) and started again on its port, one after the other, while clients stream through
nginx without pause. Not one request may fail.

As a real rollout does, the next gateway is stopped only once the restarted one takes traffic
again: nginx keeps a gateway that refused connections out of rotation for ``fail_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from nginx_stack import start_nginx_over
from procs import ServerProcess, expert_router_cmd, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BODY = {
    "model": "cpu-tiny",
    "messages": [{"role": "user", "content": "Tell me about rolling restarts"}],
    "max_tokens": 8,
    "stream": True,
    "ignore_eos": True,
}


def start_gateway(workdir: Path, name: str, port: int, expert_url: str) -> ServerProcess:
    cmd = expert_router_cmd("serve", "--port", str(port), "--expert", f"*={expert_url}")
    gateway = ServerProcess(cmd, workdir / f"rolling-{name}.log")
    gateway.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
    return gateway


def served(gateway_url: str) -> float:
    """Requests a gateway answered since it started (its ``/metrics``)."""
    with urllib.request.urlopen(f"{gateway_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    prefix = "expert_router_requests_total{"
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


class Outcomes(list[str]):
    """Each request's outcome, and an event per count reached."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()

    def add(self, outcome: str) -> None:
        self.append(outcome)
        self.grew.set()

    async def wait_for(self, n: int) -> None:
        while len(self) < n:
            self.grew.clear()
            await self.grew.wait()


async def client_loop(url: str, stop: asyncio.Event, outcomes: Outcomes) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            try:
                async with s.post(url + "/v1/chat/completions", json=BODY) as resp:
                    body = await resp.read()
                ok = resp.status == 200 and body.rstrip().endswith(b"data: [DONE]")
                outcomes.add("ok" if ok else f"{resp.status} {body[-200:]!r}")
            except aiohttp.ClientError as exc:
                outcomes.add(f"{type(exc).__name__}: {exc}")


async def test_rolling_restart_loses_no_request(
    nginx_bin: str, workdir: Path, expert_url: str
) -> None:
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        gateways = [
            start_gateway(workdir, n, p, expert_url) for n, p in zip("ab", ports, strict=True)
        ]
        stack.callback(lambda: [g.stop() for g in gateways])
        upstreams = [f"http://127.0.0.1:{p}" for p in ports]
        url, nginx = start_nginx_over(nginx_bin, workdir / "nginx-rolling", upstreams)
        stack.callback(nginx.stop)
        nginx.wait_http(f"{url}/health", timeout=30)

        stop, outcomes = asyncio.Event(), Outcomes()
        clients = [asyncio.create_task(client_loop(url, stop, outcomes)) for _ in range(4)]
        loop = asyncio.get_running_loop()
        try:
            await outcomes.wait_for(20)
            for i, (name, port) in enumerate(zip("ab", ports, strict=True)):
                code = await loop.run_in_executor(None, gateways[i].stop, 30.0)
                assert code == 0, gateways[i].log_tail()
                gateways[i] = await loop.run_in_executor(
                    None, start_gateway, workdir, f"{name}2", port, expert_url
                )
                async with asyncio.timeout(30):  # until nginx sends it traffic again
                    while not await loop.run_in_executor(None, served, upstreams[i]):
                        await outcomes.wait_for(len(outcomes) + 1)
            await outcomes.wait_for(len(outcomes) + 20)
        finally:
            stop.set()
            await asyncio.gather(*clients)
    failed = [o for o in outcomes if o != "ok"]
    assert not failed, failed[:5]
    assert len(outcomes) >= 60
