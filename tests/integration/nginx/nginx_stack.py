"""What the nginx scale-out tests share: the emulated TPOT, the running set-up, and starting
nginx over a list of upstream base URLs with a config from ``render_nginx_conf``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from procs import ServerProcess, free_port, start_nginx

from expert_router.gateway.nginx_conf import NginxOptions, render_nginx_conf

TPOT_MS = 20


@dataclass
class ScaleOut:
    nginx_url: str
    gateway_urls: list[str]
    access_log: Path


def start_nginx_over(nginx: str, prefix: Path, upstreams: list[str]) -> tuple[str, ServerProcess]:
    """Render the config for ``upstreams`` (base URLs) into ``prefix``; nginx's URL + context."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    hostports = [u.split("://", 1)[1] for u in upstreams]
    options = NginxOptions(
        listen=f"127.0.0.1:{port}", worker_processes="1", access_log="access.log"
    )
    (prefix / "nginx.conf").write_text(render_nginx_conf(hostports, options))
    return f"http://127.0.0.1:{port}", start_nginx(nginx, prefix)
