"""``expert-router emulate`` as a real process: a fleet from flags and a mixed fleet from YAML."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration


async def _run_until_urls(args: list[str], n: int) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "emulate", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    urls: list[str] = []
    async with asyncio.timeout(20):
        while len(urls) < n:
            line = (await proc.stdout.readline()).decode()
            assert line, f"emulate exited: {(await proc.stderr.read()).decode()}"  # type: ignore[union-attr]
            urls += re.findall(r"http://\S+", line)
    return proc, urls


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    async with asyncio.timeout(10):
        await proc.wait()


async def test_emulate_fleet_flags_and_fleet_config(tmp_path: Path) -> None:
    proc, urls = await _run_until_urls(["--preset", "C", "--port", "0", "--fleet", "2",
                                        "--tpot-ms", "1", "--model-name", "c13"], 2)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as s:
            for url in urls:
                async with s.get(url + "/health") as r:
                    assert r.status == 200
                async with s.get(url + "/v1/models") as r:
                    assert (await r.json())["data"][0]["id"] == "c13"
    finally:
        await _stop(proc)

    config = tmp_path / "fleet.yaml"
    config.write_text(
        "experts:\n"
        "  - {preset: D, count: 2, overrides: {model_name: d8}}\n"
        "  - {preset: cpu-tiny, overrides: {tpot_ms: 1, ttft_ms: 1}}\n"
    )
    proc, urls = await _run_until_urls(["--fleet-config", str(config)], 3)
    try:
        async with aiohttp.ClientSession() as s:
            names = []
            for url in urls:
                async with s.get(url + "/v1/models") as r:
                    names.append((await r.json())["data"][0]["id"])
            assert names == ["d8", "d8", "cpu-tiny"]
            body = {"prompt": "hello", "max_tokens": 3, "ignore_eos": True}
            async with s.post(urls[2] + "/v1/completions", json=body) as r:
                assert (await r.json())["usage"]["completion_tokens"] == 3
    finally:
        await _stop(proc)


async def test_emulate_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("experts:\n  - {preset: C, count: 0}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", "emulate", "--fleet-config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "experts.0.count" in err.decode() and "Traceback" not in err.decode()
