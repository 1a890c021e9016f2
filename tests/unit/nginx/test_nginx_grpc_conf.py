"""The gRPC mode of the nginx config renderer and of `nginx-config --grpc`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expert_router.cli.main import main
from expert_router.errors import ConfigError
from expert_router.gateway.nginx_conf import NginxOptions, render_nginx_conf


def _directive(text: str, name: str) -> list[str]:
    return re.findall(rf"^[ \t]*{name} ([^;\n]*);", text, flags=re.MULTILINE)


def test_grpc_config_speaks_http2_and_passes_grpc_round_robin() -> None:
    opts = NginxOptions(listen="127.0.0.1:9000", grpc=True)
    text = render_nginx_conf(["127.0.0.1:9001", "[::1]:9002"], opts)
    assert _directive(text, "listen") == ["127.0.0.1:9000 http2 backlog=4096"]
    assert _directive(text, "grpc_pass") == ["grpc://expert_router_gateways"]
    assert [s.split()[0] for s in _directive(text, "server")] == ["127.0.0.1:9001", "[::1]:9002"]
    assert not re.search(r"^\s*(least_conn|ip_hash|hash|random)\b", text, flags=re.MULTILINE)
    assert _directive(text, "keepalive") == ["256"]  # idle HTTP/2 connections to the upstream
    for name in ("grpc_read_timeout", "grpc_send_timeout", "client_body_timeout", "send_timeout"):
        assert _directive(text, name) == ["3600s"], name
    assert _directive(text, "http2_max_concurrent_streams") == ["4096"]
    assert _directive(text, "client_body_buffer_size") == ["8m", "64k"]  # not 8 MB per call
    assert _directive(text, "keepalive_requests") == ["100000", "100000"]  # no GOAWAY at 1000
    # HTTP/1.1 proxying is off in this mode; nginx's own errors become gRPC statuses.
    assert "proxy_pass" not in text and "proxy_buffering" not in text
    assert _directive(text, "add_header grpc-status") == ["14 always", "4 always"]
    assert _directive(text, "error_page") == ["502 503 = /grpc_unavailable", "504 = /grpc_deadline"]
    assert text.count("{") == text.count("}")


def test_grpc_options_and_bad_values() -> None:
    opts = NginxOptions(grpc=True, max_streams=100, read_timeout_s=90, keepalive=1024)
    text = render_nginx_conf(["10.0.0.1:8001"], opts)
    assert _directive(text, "http2_max_concurrent_streams") == ["100"]
    assert _directive(text, "grpc_read_timeout") == ["90s"]
    assert _directive(text, "keepalive") == ["1024"]
    with pytest.raises(ConfigError, match="max_streams must be at least 1"):
        render_nginx_conf(["10.0.0.1:8001"], NginxOptions(grpc=True, max_streams=0))
    with pytest.raises(ConfigError, match="without a scheme"):
        render_nginx_conf(["grpc://10.0.0.1:8001"], NginxOptions(grpc=True))


def test_cli_grpc_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lb" / "nginx.conf"
    argv = ["nginx-config", "--grpc", "--upstream", "127.0.0.1:9001,127.0.0.1:9002"]
    assert main([*argv, "--listen", "9000", "--max-streams", "64", "--out", str(out)]) == 0
    text = out.read_text()
    assert _directive(text, "listen") == ["9000 http2 backlog=4096"]
    assert _directive(text, "http2_max_concurrent_streams") == ["64"]
    assert len(_directive(text, "server")) == 2
    assert main(["nginx-config", "--upstream", "127.0.0.1:9001"]) == 0
    plain = capsys.readouterr().out
    assert "grpc_pass" not in plain and "http2" not in plain
