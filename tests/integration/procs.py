"""Start real server processes on loopback for integration tests and benchmarks, and stop them.

One place for: free ports, a child process in its own process group with its output in a log
file, waiting for an HTTP health URL, stopping (TERM, then KILL) and locating/installing nginx.
Import from a test folder's conftest.py (``sys.path`` gets ``tests/integration``) or a benchmark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_NGINX = REPO_ROOT / "scripts" / "install-nginx.sh"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """The first of ``count`` consecutive free ports (for ``emulate --fleet N``)."""
    for _ in range(tries):
        base = free_port(host)
        if base + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {count} free ports found")


def expert_router_cmd(*args: str) -> list[str]:
    """The command line of ``expert-router ARGS`` with this interpreter."""
    return [sys.executable, "-m", "expert_router.cli.main", *args]


class ServerProcess:
    """A child process in its own session, with stdout+stderr in ``log_path``."""

    def __init__(
        self,
        cmd: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0, status: int = 200) -> None:
        """Poll ``url`` until it answers ``status``; raise with the log tail if it never does."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.cmd[:4]} exited with {self.proc.returncode} before {url} answered;"
                    f" log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == status:
                        return
                    last = f"status {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"status {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{url} not ready after {timeout:.0f} s ({last}); log:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """TERM the process group, KILL it after ``timeout`` s; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # Children that outlived their leader (e.g. workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    log_path: Path,
    *,
    health_url: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[ServerProcess]:
    """Start ``cmd``, wait for ``health_url`` (when given), and always stop it on exit."""
    server = ServerProcess(cmd, log_path, env=env, cwd=cwd)
    try:
        if health_url is not None:
            server.wait_http(health_url, timeout=timeout)
        yield server
    finally:
        server.stop()


def find_nginx() -> str | None:
    """The nginx binary on PATH or in the usual sbin folders, or None."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in NGINX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx(timeout: float = 300.0) -> tuple[str | None, str]:
    """(nginx path, "") when nginx is or can be installed, else (None, why not)."""
    found = find_nginx()
    if found:
        return found, ""
    if shutil.which("apt-get") is None:
        return None, "nginx is not installed and apt-get is not available to install it"
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        return None, "nginx is not installed and this user is not root (cannot apt-get install)"
    proc = subprocess.run(
        ["bash", str(INSTALL_NGINX)], capture_output=True, text=True, timeout=timeout
    )
    found = find_nginx()
    if found:
        return found, ""
    return None, f"scripts/install-nginx.sh could not install nginx: {proc.stderr.strip()[-500:]}"


def start_nginx(nginx: str, prefix: Path, conf_name: str = "nginx.conf") -> ServerProcess:
    """Run nginx in the foreground with ``prefix`` as its prefix dir (pid, temp files there)."""
    cmd = [nginx, "-p", str(prefix), "-c", conf_name, "-e", "stderr", "-g", "daemon off;"]
    conf = (prefix / conf_name).read_text()
    if "daemon off;" in conf:
        cmd = cmd[:-2]
    return ServerProcess(cmd, prefix / "nginx.log")
