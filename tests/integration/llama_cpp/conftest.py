"""Fixtures: a tiny GGUF written here, a real llama.cpp server on it, a gateway in front."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import expert_router_cmd, free_port, running  # noqa: E402
from tiny_gguf import write_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def llama_url(tiny_model: Path) -> Iterator[str]:
    """Base URL of ``python -m llama_cpp.server`` serving the tiny model."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install -e '.[test]'")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "1"]
    # Without this, every new request aborts the stream in progress.
    cmd += ["--interrupt_requests", "False", "--verbose", "False"]
    url = f"http://127.0.0.1:{port}"
    log = tiny_model.parent / "llama_cpp.log"
    with running(cmd, log, health_url=f"{url}/v1/models", timeout=60):
        yield url


@pytest.fixture(scope="module")
def gateway_url(llama_url: str, tiny_model: Path) -> Iterator[str]:
    """Base URL of ``expert-router serve`` with the llama.cpp server as every cluster's expert."""
    port = free_port()
    cmd = expert_router_cmd("serve", "--port", str(port), "--expert", f"*={llama_url}")
    url = f"http://127.0.0.1:{port}"
    log = tiny_model.parent / "gateway.log"
    with running(cmd, log, health_url=f"{url}/health", timeout=60):
        yield url
