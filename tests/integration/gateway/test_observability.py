"""/metrics, /v1/route, /ready, /health and the JSON access log."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from gwhelpers import chat_body, make_config, post

from expert_router.emulator import serve_emulator

pytestmark = pytest.mark.integration

METRIC_NAMES = [
    "expert_router_requests_total",
    "expert_router_route_decisions_total",
    "expert_router_classify_seconds_bucket",
    "expert_router_overhead_seconds_bucket",
    "expert_router_upstream_ttft_seconds_bucket",
    "expert_router_in_flight",
    "expert_router_replica_healthy",
    "expert_router_queue_depth",
    "expert_router_spillovers_total",
    "expert_router_retries_total",
    "expert_router_ejections_total",
    "expert_router_upstream_errors_total",
    "expert_router_queue_timeouts_total",
]


async def test_metrics_route_ready_and_access_log(
    gateway: Any, two_topics: Any, caplog: pytest.LogCaptureFixture
) -> None:
    text, cluster, other_text, other_cluster = two_topics
    async with serve_emulator("cpu-tiny", tpot_ms=1) as a, serve_emulator("cpu-tiny") as b:
        cfg = make_config({str(cluster): [a.url], "*": [b.url]}, access_log=True)
        async with gateway(cfg) as g, aiohttp.ClientSession() as s:
            for path in ("/health", "/ready"):
                async with s.get(g.url + path) as resp:
                    assert resp.status == 200
            async with s.post(g.url + "/v1/route", json={"messages": [
                {"role": "user", "content": text}]}) as resp:  # fmt: skip
                route = await resp.json()
            assert route["cluster"] == str(cluster) and route["reason"] == "nearest"
            assert route["replica"] == a.url.removeprefix("http://") and route["url"] == a.url
            assert route["ranked"][0] == cluster and len(route["scores"]) == len(route["ranked"])
            assert a.engine.num_running == 0 and a.engine.cancelled_total == 0
            async with s.post(g.url + "/v1/route", json={"prompt": other_text}) as resp:
                assert (await resp.json())["replica"] == b.url.removeprefix("http://")
            async with s.post(g.url + "/v1/route", json={"prompt": 3}) as resp:
                assert resp.status == 400
            nested = {"prompt": other_text, "metadata": {"messages": 1}}  # a completion still
            async with s.post(g.url + "/v1/route", json=nested) as resp:
                assert resp.status == 200

            caplog.clear()  # only the lines of the requests below (another test may have
            # left the access logger at INFO: the route calls above would count)
            with caplog.at_level(logging.INFO, logger="expert_router.access"):
                for _ in range(3):
                    status, hdrs, _ = await post(s, g.url + "/v1/chat/completions", chat_body(text))
                    assert status == 200
                await post(s, g.url + "/v1/completions", {"prompt": other_text, "max_tokens": 1})
                await post(s, g.url + "/v1/completions", {})
            lines = [json.loads(r.getMessage()) for r in caplog.records]
            assert [x["status"] for x in lines] == [200, 200, 200, 200, 400]
            assert lines[0]["cluster"] == str(cluster) and lines[0]["reason"] == "nearest"
            assert all(text not in r.getMessage() for r in caplog.records)

            async with s.get(g.url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/plain"
                body = await resp.text()
            for name in METRIC_NAMES:
                assert name in body, name
            a_name = a.url.removeprefix("http://")
            assert (
                f'expert_router_requests_total{{cluster="{cluster}",replica="{a_name}",'
                f'status="200"}} 3.0' in body
            )
            assert (
                'expert_router_requests_total{cluster="none",replica="none",status="400"} 1.0'
                in body
            )
            assert "expert_router_overhead_seconds_count 4.0" in body
            assert f'expert_router_in_flight{{replica="{a_name}"}} 0.0' in body
            assert other_cluster != cluster


async def test_the_classifier_reads_at_most_max_chars_of_a_prompt(
    gateway: Any, two_topics: Any
) -> None:
    """``classifier.max_chars`` bounds the text classified (its start); the rest still counts
    for nothing in routing, so one huge prompt cannot hold the event loop."""
    text, cluster, other_text, other_cluster = two_topics
    prompt = text + " " + " ".join([other_text] * 200)  # mostly the other topic
    async with serve_emulator("cpu-tiny") as a:
        experts = {"*": [a.url]}
        for max_chars, want in ((len(text), cluster), (32_768, other_cluster)):
            cfg = make_config(experts, classifier={"max_chars": max_chars})
            async with gateway(cfg) as g, aiohttp.ClientSession() as s:
                async with s.post(g.url + "/v1/route", json={"prompt": prompt}) as resp:
                    assert (await resp.json())["cluster"] == str(want), max_chars
