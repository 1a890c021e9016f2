"""Measured mixes: the gateway's own Prometheus text and access lines, read back into
requests per nearest cluster; a URL, files, and errors that name the source."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from expert_router.errors import ConfigError
from expert_router.gateway.access import access_log, log_access
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.planner.measured import parse_access_log, parse_metrics, read_mix


def _metrics_text() -> str:
    """A gateway's /metrics after 6 requests of cluster 0, 3 of cluster 2 (one of them served
    by cluster 1's pool), one retried from cluster 1 on cluster 0, one never classified."""
    gm = GatewayMetrics()
    for _ in range(6):
        gm.count_request("0", "a", 200)
    gm.count_request("0", "a", 200)  # came from cluster 1: failed over
    gm.failovers.labels("1", "0").inc()
    gm.count_request("2", "c", 200)
    gm.count_request("2", "c", 503)
    gm.count_request("1", "b", 200)  # nearest cluster 2, spilled over to 1
    gm.spillovers.labels("2", "1").inc()
    gm.count_request("none", "none", 400)
    gm.failovers.labels("0", "0").inc()  # a retry inside one pool moves nothing
    return gm.render().decode()


def test_metrics_counts_move_back_to_the_nearest_cluster() -> None:
    counts, notes = parse_metrics(_metrics_text())
    assert dict(counts) == {0: 6, 1: 1, 2: 3}
    assert "2 spilled or failed-over" in notes[0]


def test_access_lines_count_per_cluster(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    try:
        for c in ("3", "3", "1"):
            log_access(
                "/v1/chat/completions", 200, 0.0, cluster=c, nearest=c, replica="r",
                reason="nearest",
            )  # fmt: skip
        # nearest 3, spilled over to 1: counted under 3, where the classifier put it
        log_access(
            "/v1/chat/completions", 200, 0.0, cluster="1", nearest="3", replica="r",
            reason="spillover",
        )  # fmt: skip
        log_access("/health", 200, 0.0, method="GET")  # a probe: no cluster
    finally:
        access_log.removeHandler(handler)
        handler.close()
    old = '{"method": "POST", "path": "/v1/chat/completions", "status": 200, "cluster": "1", '
    old += '"replica": "r", "reason": "spillover"}\n'  # an older gateway's line: no nearest
    text = path.read_text() + old + "expert-router gateway listening on http://x (workers=1)\n"
    counts, notes = parse_access_log(text.splitlines())
    assert dict(counts) == {3: 3, 1: 2}
    assert any("1 spilled-over" in n for n in notes) and any("1 lines" in n for n in notes)
    mix = read_mix([str(path)])
    assert mix.weights(4) == [0.0, 0.25, 0.0, 0.75]
    assert mix.weights() == [0.0, 0.25, 0.0, 0.75]


@pytest.fixture
def metrics_url() -> Iterator[str]:
    body = _metrics_text().encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)  # listening once constructed
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_gateway_url_and_a_saved_copy_sum(metrics_url: str, tmp_path: Path) -> None:
    saved = tmp_path / "metrics.txt"
    saved.write_text(_metrics_text())
    mix = read_mix([metrics_url, str(saved)])
    assert dict(mix.counts) == {0: 12, 1: 2, 2: 6}
    assert mix.weights(3) == pytest.approx([0.6, 0.1, 0.3])
    assert "20 requests" in mix.describe() and metrics_url in mix.describe()


def test_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_mix([str(tmp_path / "missing.log")])
    with pytest.raises(ConfigError, match="cannot fetch"):
        read_mix(["http://127.0.0.1:9/metrics"])
    junk = tmp_path / "junk.log"
    junk.write_text("hello\nworld\n")
    with pytest.raises(ConfigError, match=r"junk.log: no access line"):
        read_mix([str(junk)])
    with pytest.raises(ConfigError, match="beyond the 2 clusters"):
        read_mix([str(_saved(tmp_path))]).weights(2)


def _saved(tmp_path: Path) -> Path:
    p = tmp_path / "m.txt"
    p.write_text(_metrics_text())
    return p
