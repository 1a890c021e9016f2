"""Scale-out: real nginx round-robins over two gateway instances; streams stay unbuffered.

The official ``openai`` client (sync and async) streams chat and completions through nginx;
nginx's access log and each gateway's /metrics show that both gateways served traffic.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from nginx_stack import TPOT_MS, ScaleOut, start_nginx_over
from openai import AsyncOpenAI, OpenAI
from procs import free_port
from prometheus_client.parser import text_string_to_metric_families

from expert_router.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IGNORE_EOS = {"ignore_eos": True}  # the emulator answers exactly max_tokens tokens


def _upstreams(access_log: Path) -> Counter[str]:
    """How many requests each ``$upstream_addr`` (``A`` or ``A, B`` after a retry) logged."""
    return Counter(re.findall(r"upstream=(.+?) upstream_time=", access_log.read_text()))


def _requests_served(gateway_url: str) -> float:
    with urllib.request.urlopen(f"{gateway_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "expert_router_requests_total":
                total += sample.value
    return total


def test_cli_config_passes_nginx_syntax_check(nginx_bin: str, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    argv = ["nginx-config", "--upstream", "127.0.0.1:9001", "--upstream", "127.0.0.1:9002"]
    assert main([*argv, "--listen", f"127.0.0.1:{free_port()}", "--out", str(conf)]) == 0
    check = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path), "-c", "nginx.conf", "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr


def test_openai_streams_through_nginx_reach_both_gateways(scaleout: ScaleOut) -> None:
    before = [_requests_served(u) for u in scaleout.gateway_urls]
    with OpenAI(base_url=f"{scaleout.nginx_url}/v1", api_key="unused", max_retries=0) as client:
        for i in range(6):
            raw = client.chat.completions.with_raw_response.create(
                model="cpu-tiny",
                messages=[{"role": "user", "content": f"Explain nginx load balancing, take {i}"}],
                max_tokens=8,
                stream=True,
                extra_body=IGNORE_EOS,
            )
            assert raw.headers["x-expert-router-cluster"].strip()
            with raw.parse() as stream:
                text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text.strip()
        for i in range(2):
            with client.completions.create(
                model="cpu-tiny",
                prompt=f"Once upon a time {i}",
                max_tokens=8,
                stream=True,
                extra_body=IGNORE_EOS,
            ) as stream:
                pieces = [c.choices[0].text for c in stream if c.choices and c.choices[0].text]
            assert len(pieces) >= 2
    served = [_requests_served(u) - b for u, b in zip(scaleout.gateway_urls, before, strict=True)]
    assert all(n >= 2 for n in served), served
    assert sum(served) == 8
    by_upstream = _upstreams(scaleout.access_log)
    gateways = {u.split("://", 1)[1] for u in scaleout.gateway_urls}
    assert set(by_upstream) == gateways, by_upstream


async def test_concurrent_streams_are_relayed_unbuffered(scaleout: ScaleOut) -> None:
    max_tokens = 20  # ~0.4 s of tokens at TPOT_MS per token

    async def one(client: AsyncOpenAI, i: int) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first = last = 0.0
        n = 0
        stream = await client.chat.completions.create(
            model="cpu-tiny",
            messages=[{"role": "user", "content": f"Stream number {i}, about proxies"}],
            max_tokens=max_tokens,
            stream=True,
            extra_body=IGNORE_EOS,
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    last = time.perf_counter() - t0
                    first = first or last
                    n += 1
        return first, last, n

    async with AsyncOpenAI(
        base_url=f"{scaleout.nginx_url}/v1", api_key="unused", max_retries=0, timeout=30
    ) as client:
        results = await asyncio.gather(*(one(client, i) for i in range(8)))
    stream_s = max_tokens * TPOT_MS / 1000
    for first, last, n in results:
        assert n >= max_tokens // 2
        # Buffered relaying would deliver every chunk at the end, all at once.
        assert last - first >= 0.5 * stream_s, (first, last)


def test_nginx_skips_a_dead_gateway(nginx_bin: str, scaleout: ScaleOut, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    url, proc = start_nginx_over(nginx_bin, tmp_path / "nginx", [dead, scaleout.gateway_urls[0]])
    try:
        proc.wait_http(f"{url}/health", timeout=30)
        with OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
            for i in range(4):
                with client.completions.create(
                    model="cpu-tiny",
                    prompt=f"failover {i}",
                    max_tokens=4,
                    stream=True,
                    extra_body=IGNORE_EOS,
                ) as stream:
                    assert any(c.choices and c.choices[0].text for c in stream)
    finally:
        proc.stop()
    live = scaleout.gateway_urls[0].split("://", 1)[1]
    tried = _upstreams(tmp_path / "nginx" / "access.log")
    assert sum(tried.values()) >= 4
    # Each request ended at the live gateway, some after trying the dead one first.
    assert all(addrs.split(", ")[-1] == live for addrs in tried), tried
