"""`expert-router serve` as a subprocess: --expert flags, --config, --workers N with metrics
that add up across workers."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, post

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration


async def start_serve(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "serve", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    match = re.search(r"listening on (http://\S+)", line.decode())
    if not match:
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"serve did not start: {line!r} {err.decode()[-2000:]}")
    return proc, match.group(1)


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_serve_with_expert_flags(two_topics: Any) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        proc, url = await start_serve("--expert", f"*={srv.url}")
        try:
            async with aiohttp.ClientSession() as s:
                status, hdrs, _ = await post(s, url + "/v1/chat/completions", chat_body("hi"))
                assert status == 200 and "x-expert-router-cluster" in hdrs
                async with s.get(url + "/health") as resp:
                    assert resp.status == 200
        finally:
            assert await stop(proc) == 0


async def test_serve_config_errors_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("experts:\n  '*': {replicas: [{url: 'http://h:1', weight: -1}]}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "serve", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "experts.*.replicas[0].weight" in err.decode()
    assert len(err.decode().strip().splitlines()) == 1


@pytest.mark.slow
async def test_workers_share_port_and_metrics_add_up(tmp_path: Path) -> None:
    async with serve_emulator("cpu-tiny", tpot_ms=1) as srv:
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(f"experts:\n  '*': {{replicas: [{{url: '{srv.url}'}}]}}\n")
        proc, url = await start_serve("--config", str(cfg), "--workers", "2")
        try:
            n = 40
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)  # new connection each time
            ) as s:
                results = await asyncio.gather(
                    *(post(s, url + "/v1/chat/completions", chat_body("hello")) for _ in range(n))
                )
                assert [r[0] for r in results] == [200] * n
                for _ in range(2):
                    async with s.get(url + "/metrics") as resp:
                        text = await resp.text()
                    assert metric(text, "expert_router_requests_total") == n
                    assert metric(text, "expert_router_overhead_seconds_count") == n
        finally:
            assert await stop(proc) == 0
        assert srv.engine.num_running == 0
