"""The nginx config renderer and the `nginx-config` command: directives, options, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expert_router.cli.main import main
from expert_router.errors import ConfigError
from expert_router.gateway.nginx_conf import NginxOptions, parse_hostport, render_nginx_conf

SSE_DIRECTIVES = (
    "proxy_http_version 1.1;",
    'proxy_set_header Connection "";',
    "proxy_buffering off;",
    "proxy_cache off;",
    "proxy_request_buffering off;",
)


def _directive(text: str, name: str) -> list[str]:
    return re.findall(rf"^[ \t]*{name} ([^;\n]*);", text, flags=re.MULTILINE)


def test_default_config_is_sse_safe_round_robin_with_keepalive() -> None:
    text = render_nginx_conf(["127.0.0.1:9001", "gw-2.internal:9002", "[::1]:9003"])
    for directive in SSE_DIRECTIVES:
        assert directive in text
    servers = _directive(text, "server")
    assert [s.split()[0] for s in servers] == [
        "127.0.0.1:9001",
        "gw-2.internal:9002",
        "[::1]:9003",
    ]
    # Round robin is nginx's default: no other balancing method is named.
    assert not re.search(r"^\s*(least_conn|ip_hash|hash|random)\b", text, flags=re.MULTILINE)
    assert _directive(text, "keepalive") == ["256"]
    assert _directive(text, "proxy_read_timeout") == ["3600s"]
    assert _directive(text, "access_log") == ["off"]
    assert _directive(text, "listen") == ["8080 backlog=4096"]
    assert _directive(text, "daemon") == ["off"]
    assert _directive(text, "pid") == ["nginx.pid"]
    # Every temp path is relative (under the prefix dir), so no root-owned folder is needed.
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert _directive(text, f"{name}_temp_path") == [f"{name}_temp"]
    assert "include" not in text
    assert text.count("{") == text.count("}")


def test_options_change_the_directives() -> None:
    options = NginxOptions(
        listen="127.0.0.1:18080",
        worker_processes="4",
        worker_connections=1000,
        keepalive=32,
        read_timeout_s=90,
        max_body="16m",
        access_log="logs/access.log",
        daemon=True,
    )
    text = render_nginx_conf(["10.0.0.1:80"], options)
    assert _directive(text, "listen") == ["127.0.0.1:18080 backlog=4096"]
    assert _directive(text, "worker_processes") == ["4"]
    assert _directive(text, "worker_connections") == ["1000"]
    assert _directive(text, "worker_rlimit_nofile") == ["2064"]
    assert _directive(text, "keepalive") == ["32"]
    assert _directive(text, "proxy_read_timeout") == ["90s"]
    assert _directive(text, "client_max_body_size") == ["16m"]
    assert _directive(text, "access_log") == ["logs/access.log upstream"]
    assert "upstream=$upstream_addr" in text
    assert _directive(text, "daemon") == ["on"]


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ("http://127.0.0.1:9001", "without a scheme"),
        ("127.0.0.1", "expected HOST:PORT"),
        (":9001", "expected HOST:PORT"),
        ("127.0.0.1:0", "port must be"),
        ("127.0.0.1:65536", "port must be"),
        ("127.0.0.1:http", "port must be"),
        ("bad host:80", "expected HOST:PORT"),
        ("x;y:80", "expected HOST:PORT"),
    ],
)
def test_bad_upstreams_are_named(upstream: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        render_nginx_conf([upstream])
    assert repr(upstream) in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (NginxOptions(listen="0"), "listen"),
        (NginxOptions(listen="localhost:"), "listen"),
        (NginxOptions(worker_processes="0"), "worker_processes"),
        (NginxOptions(worker_processes="many"), "worker_processes"),
        (NginxOptions(keepalive=0), "keepalive"),
        (NginxOptions(max_body="8 MB"), "max_body"),
        (NginxOptions(access_log="a b.log"), "access_log"),
        (NginxOptions(access_log="x; daemon on"), "access_log"),
    ],
)
def test_bad_options_are_named(options: NginxOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_nginx_conf(["127.0.0.1:9001"], options)


def test_no_upstream_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        render_nginx_conf([])


def test_parse_hostport() -> None:
    assert parse_hostport(" 127.0.0.1:8001 ") == ("127.0.0.1", 8001)
    assert parse_hostport("[::1]:80") == ("[::1]", 80)


def test_cli_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nginx-config", "--upstream", "127.0.0.1:9001,127.0.0.1:9002"]) == 0
    printed = capsys.readouterr().out
    assert [s.split()[0] for s in _directive(printed, "server")] == [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
    ]
    out = tmp_path / "conf" / "nginx.conf"
    argv = ["nginx-config", "--upstream", "127.0.0.1:9001", "--upstream", "127.0.0.1:9002"]
    argv += ["--listen", "9000", "--worker-processes", "2", "--out", str(out)]
    assert main(argv) == 0
    written = out.read_text()
    assert _directive(written, "listen") == ["9000 backlog=4096"]
    assert _directive(written, "worker_processes") == ["2"]
    assert len(_directive(written, "server")) == 2
    assert "nginx -p" in capsys.readouterr().err


def test_cli_reports_a_bad_upstream_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nginx-config", "--upstream", "localhost"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("expert-router nginx-config: error: upstream 'localhost'")
    assert "\n" not in err
