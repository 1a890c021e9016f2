"""Fixtures of the hostile-input suite: one fake upstream per session, one server under test
per module (the gateway with the module's config, or with ``HOSTILE_TARGET=nginx`` the nginx
reference), and a report of every case (``HOSTILE_REPORT=FILE`` writes it as a table)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Report, nginx_mode  # noqa: E402
from procs import ensure_nginx  # noqa: E402
from targets import Gateway, Nginx, Target, Upstream, gateway_config  # noqa: E402


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="session")
def upstream(workdir: Path) -> Iterator[Upstream]:
    up = Upstream(workdir)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="session")
def nginx_target(workdir: Path, upstream: Upstream) -> Iterator[Nginx]:
    path, why = ensure_nginx()
    if path is None:
        pytest.skip(f"nginx unavailable: {why}")
    target = Nginx(workdir, path, upstream)
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest, upstream: Upstream, workdir: Path) -> Iterator[Target]:
    """The module's server under test. A module sets ``GATEWAY_SECTIONS`` (config sections
    merged over the suite's) and ``GATEWAY_OPTIONS`` (``nofile``, ``debug``) when it needs
    other limits; ``NGINX_APPLIES = False`` skips it under ``HOSTILE_TARGET=nginx``."""
    module = request.module
    if nginx_mode():
        if not getattr(module, "NGINX_APPLIES", True):
            pytest.skip("gateway-only cases")
        yield request.getfixturevalue("nginx_target")
        return
    sections: dict[str, Any] = getattr(module, "GATEWAY_SECTIONS", {})
    options: dict[str, Any] = getattr(module, "GATEWAY_OPTIONS", {})
    folder = workdir / module.__name__.rpartition(".")[2]
    folder.mkdir(exist_ok=True)
    gateway = Gateway(folder, gateway_config(upstream, **sections), **options)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    rep = Report()
    yield rep
    out = os.environ.get("HOSTILE_REPORT")
    if out:
        rep.write(Path(out))
