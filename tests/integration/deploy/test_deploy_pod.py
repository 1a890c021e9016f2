"""The gateway pod as Kubernetes runs it, on loopback: the Deployment's own command line and the
ConfigMap's own gateway.yaml (expert URLs pointed at an emulated expert), the with-model
overlay's --model filled the way its initContainer fills it; probes, a stream, and the real
/metrics scraped and checked against what the Grafana dashboard queries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest
import yaml
from deploy_helpers import K8S, TARGET_LABELS, find, gateway_container, parse, queries, render
from polling import eventually
from procs import ServerProcess, expert_router_cmd, free_port
from prometheus_client.parser import text_string_to_metric_families

from expert_router.classify import default_model_dir
from expert_router.emulator.server import serve_emulator

pytestmark = [pytest.mark.integration]


def _pod_command(kdir: Path, config: Path, port: int) -> list[str]:
    """The Deployment's args with the pod-only paths and address swapped for local ones."""
    args = [str(a) for a in gateway_container(find(render(kdir), "Deployment"))["args"]]
    swap = {"--config": str(config), "--host": "127.0.0.1", "--port": str(port)}
    for i, arg in enumerate(args[:-1]):
        if arg in swap:
            args[i + 1] = swap[arg]
    return args


def _local_config(kdir: Path, expert_url: str, path: Path) -> Path:
    data = yaml.safe_load(find(render(kdir), "ConfigMap")["data"]["gateway.yaml"])
    for pool in data["experts"].values():
        for replica in pool["replicas"]:
            replica["url"] = expert_url
    data["health"] = {"interval": 0.2}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def _wait(session: aiohttp.ClientSession, url: str, proc: ServerProcess) -> None:
    async def answers() -> bool:
        assert proc.alive(), proc.log_tail()
        try:
            async with session.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(answers, within=60, step=0.1, say=lambda: f"{url}; log:\n{proc.log_tail()}")


async def _stream(session: aiohttp.ClientSession, base: str) -> tuple[str, int]:
    body = {
        "model": "expert",
        "messages": [{"role": "user", "content": "How do I bake sourdough bread at home?"}],
        "max_tokens": 8,
        "stream": True,
    }
    events = 0
    async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        cluster = resp.headers["x-expert-router-cluster"]
        async for line in resp.content:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                json.loads(line[6:])
                events += 1
    return cluster, events


@pytest.mark.parametrize("overlay", ["base", "overlays/with-model"])
async def test_the_pod_serves_probes_streams_and_metrics(overlay: str, tmp_path: Path) -> None:
    kdir = K8S / overlay
    port = free_port()
    async with serve_emulator("cpu-tiny") as expert:
        config = _local_config(kdir, expert.url, tmp_path / "gateway.yaml")
        args = _pod_command(kdir, config, port)
        if "--model" in args:
            # What the initContainer does: cp -R /model/. MOUNT/
            model = tmp_path / "model"
            shutil.copytree(default_model_dir(), model)
            args[args.index("--model") + 1] = str(model)
        proc = ServerProcess(expert_router_cmd(*args), tmp_path / "gateway.log")
        try:
            base = f"http://127.0.0.1:{port}"
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await _wait(session, f"{base}/health", proc)
                await _wait(session, f"{base}/ready", proc)
                results = [await _stream(session, base) for _ in range(4)]
                async with session.get(f"{base}/metrics") as resp:
                    assert resp.status == 200
                    exposition = await resp.text()
        finally:
            proc.stop()
    assert all(events > 0 for _, events in results)
    _check_dashboard_against(exposition, requests=len(results))


def _check_dashboard_against(exposition: str, requests: int) -> None:
    samples: dict[str, list[dict[str, str]]] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s.labels)
            values[s.name] = values.get(s.name, 0.0) + s.value
    # Two workers, one port: the counters add up over both.
    assert values["expert_router_requests_total"] == requests
    assert values["expert_router_overhead_seconds_count"] == requests
    used: set[str] = set()
    for expr in queries():
        names, matched, grouped = parse(expr)
        used |= names
        for name in names & set(samples):
            have = set().union(*(set(labels) for labels in samples[name]))
            want = (matched | grouped) - TARGET_LABELS
            assert want <= have, f"{expr}: {sorted(want - have)} missing on {name}"
    # The series that every request produces are on the dashboard and in the scrape.
    for name in ("requests_total", "overhead_seconds_bucket", "classify_seconds_bucket"):
        assert f"expert_router_{name}" in used & set(samples), name
    assert "expert_router_upstream_ttft_seconds_bucket" in used & set(samples)
    assert "expert_router_in_flight" in used & set(samples)
