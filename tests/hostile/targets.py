"""The processes a hostile case runs against: the fake upstream, and the server under test.

``Upstream`` is ``fake_upstream.py`` on two ports. A ``Target`` is what the client talks to:
``Gateway`` (``expert-router serve --config FILE`` as a child process, with the suite's small
timeouts and limits) or ``Nginx`` (nginx 1.22 in front of the same upstream, the reference,
with the same timeouts and sizes). Both report their memory from ``/proc``, are restarted by
``ensure`` when a case left them dead or frozen, and are polled, never slept on.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from procs import ServerProcess, expert_router_cmd, free_port

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
MAX_RESPONSE = 1024 * 1024  # limits.max_response_bytes of the gateway under test
MAX_CHUNK = 256 * 1024  # limits.max_chunk_bytes


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def poll(cond: Any, within: float, step: float = 0.02) -> bool:
    """Evaluate ``cond()`` until it is true or ``within`` seconds pass; its last value."""
    end = time.monotonic() + within
    while True:
        if cond():
            return True
        if time.monotonic() > end:
            return bool(cond())
        time.sleep(step)


class Upstream:
    """The fake faulty upstream, two ports served by one process."""

    def __init__(self, workdir: Path) -> None:
        self.ports = [free_port(), free_port()]
        script = str(HERE / "fake_upstream.py")
        cmd = [sys.executable, script, "--ports", ",".join(map(str, self.ports))]
        self.proc = ServerProcess(cmd, workdir / "fake-upstream.log")
        for port in self.ports:
            self.proc.wait_http(f"http://{HOST}:{port}/stats", timeout=30)

    @property
    def urls(self) -> list[str]:
        return [f"http://{HOST}:{p}" for p in self.ports]

    def record(self, rid: str) -> dict[str, Any]:
        """What the upstream did for request id ``rid`` (attempts, peer_closed, written...)."""
        _, body = http_get(f"{self.urls[0]}/stats?rid={rid}")
        data: dict[str, Any] = json.loads(body)
        return data

    def release(self, rid: str) -> None:
        """Tell the fault waiting on request id ``rid`` that the client has its answer."""
        http_get(f"{self.urls[0]}/release?rid={rid}")

    def probes(self) -> dict[str, int]:
        _, body = http_get(f"{self.urls[0]}/stats")
        probes: dict[str, int] = json.loads(body)["probes"]
        return probes

    def stop(self) -> None:
        self.proc.stop()


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


class Target:
    """The server under test, as the cases see it."""

    kind = "target"
    port = 0
    proc: ServerProcess | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=2)
            self.proc = None

    def serving_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory(self) -> tuple[int, int]:
        try:
            return memory_kb(self.serving_pid())
        except (OSError, KeyError):
            return 0, 0

    def responsive(self) -> bool:
        return http_get(f"http://{HOST}:{self.port}/health", timeout=1.0)[0] == 200

    def ensure(self) -> None:
        """Restart the server when the last case left it dead, frozen or unable to route."""
        alive = self.proc is not None and self.proc.alive() and self.responsive()
        if alive and poll(self.ready, 3.0):
            return
        self.stop()
        self.start()
        assert poll(self.ready, 10.0), f"{self.kind} not ready after a restart"

    def ready(self) -> bool:
        return self.responsive()

    def log_text(self) -> str:
        if self.proc is None:
            return ""
        return self.proc.log_path.read_text(errors="replace")


def gateway_config(upstream: Upstream, **sections: dict[str, Any]) -> dict[str, Any]:
    """The suite's gateway config: both upstream ports serve every cluster; small timeouts."""
    config: dict[str, Any] = {
        "experts": {"*": {"replicas": [{"url": u} for u in upstream.urls]}},
        "timeouts": {"connect": 1, "first_byte": 1, "read": 2},
        "limits": {
            "max_response_bytes": MAX_RESPONSE,
            "max_chunk_bytes": MAX_CHUNK,
            "queue_timeout": 1,
        },
        "server": {"head_timeout": 1, "body_timeout": 1, "idle_timeout": 2, "drain_timeout": 0},
        "health": {"interval": 0.25, "timeout": 1, "eject_after": 3},
        "access_log": True,
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


class Gateway(Target):
    """``expert-router serve`` as a child process, restarted on demand.

    ``nofile`` caps its file descriptors (``prlimit``), ``debug`` turns every logger to DEBUG
    (the CLI has no flag for it: ``debug_serve.py`` sets the root logger first).
    """

    kind = "gateway"

    def __init__(
        self, workdir: Path, config: dict[str, Any], *, nofile: int = 0, debug: bool = False
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.nofile = nofile
        self.debug = debug
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.port = free_port()
        args = ["serve", "--config", str(self.config_path), "--port", str(self.port)]
        cmd = expert_router_cmd(*args)
        if self.debug:
            cmd = [sys.executable, str(HERE / "debug_serve.py"), *args]
        if self.nofile:
            cmd = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *cmd]
        self.starts += 1
        self.proc = ServerProcess(cmd, self.workdir / f"gateway-{self.starts}.log")
        self.proc.wait_http(f"http://{HOST}:{self.port}/health", timeout=60)

    def ready(self) -> bool:
        """Serving, and every replica counted healthy (probes re-admit a replica a case made
        fail within ``health.interval``)."""
        status, body = http_get(f"http://{HOST}:{self.port}/metrics", timeout=1.0)
        if status != 200:
            return False
        healthy = re.findall(rb"^expert_router_replica_healthy\{[^}]*\} (\S+)$", body, re.M)
        return bool(healthy) and all(float(v) == 1.0 for v in healthy)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (``name`` without labels), NaN when unreadable."""
        status, body = http_get(f"http://{HOST}:{self.port}/metrics", timeout=1.0)
        if status != 200:
            return float("nan")
        pattern = rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, body, re.M))


NGINX_CONF = """
daemon off;
worker_processes 1;
pid nginx.pid;
error_log stderr info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_header_timeout 1s;
    client_body_timeout 1s;
    keepalive_timeout 2s;
    send_timeout 10s;
    client_max_body_size 8m;
    client_body_buffer_size 16m;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    upstream fake {{
        server {a} max_fails=0;
        server {b} max_fails=0;
        keepalive 16;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1s;
            proxy_next_upstream error timeout invalid_header http_502 http_503 http_504;
        }}
    }}
}}
"""


class Nginx(Target):
    """nginx 1.22 in front of the fake upstream: the reference the client-side cases record.

    Its limits mirror the gateway's (head/body timeouts 1 s, keep-alive 2 s, 8 MB bodies,
    nginx's default 4 x 8 KB header buffers, upstream read timeout 1 s)."""

    kind = "nginx"

    def __init__(self, workdir: Path, nginx: str, upstream: Upstream) -> None:
        self.workdir = workdir
        self.nginx = nginx
        self.upstream = upstream
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.port = free_port()
        a, b = (f"{HOST}:{p}" for p in self.upstream.ports)
        prefix = self.workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = NGINX_CONF.format(a=a, b=b, listen=f"{HOST}:{self.port}")
        (prefix / "nginx.conf").write_text(conf)
        self.starts += 1
        cmd = [self.nginx, "-p", str(prefix), "-c", "nginx.conf", "-e", "stderr"]
        self.proc = ServerProcess(cmd, self.workdir / f"nginx-{self.starts}.log")
        self.proc.wait_http(f"http://{HOST}:{self.port}/health", timeout=30)

    def serving_pid(self) -> int:
        """The worker process (the master only supervises)."""
        assert self.proc is not None
        master = self.proc.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return int(children[0]) if children else master
