"""nginx as a gRPC proxy (the paper's set-up): real nginx with `nginx-config --grpc` in front of
two emulated experts' Triton gRPC ports; the official tritonclient grpc.aio client streams
ModelStreamInfer through it, round robin, unbuffered; nginx's own failures are gRPC statuses.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcclient
from polling import eventually
from procs import ServerProcess, free_port, start_nginx
from triton_inputs import inputs
from tritonclient.utils import InferenceServerException

from expert_router.cli.main import main
from expert_router.emulator.grpc_server import TritonGrpcServer
from expert_router.emulator.server import EmulatorServer, serve_emulator
from expert_router.gateway.nginx_conf import NginxOptions, render_nginx_conf
from expert_router.tokenizer import count_tokens

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TPOT_MS = 20.0


def _start_grpc_nginx(nginx: str, prefix: Path, upstreams: list[str]) -> tuple[str, ServerProcess]:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    options = NginxOptions(
        listen=f"127.0.0.1:{port}", worker_processes="1", access_log="access.log", grpc=True
    )
    (prefix / "nginx.conf").write_text(render_nginx_conf(upstreams, options))
    return f"127.0.0.1:{port}", start_nginx(nginx, prefix)


async def _wait_live(client: grpcclient.InferenceServerClient, proc: ServerProcess) -> None:
    async def live() -> bool:
        assert proc.alive(), proc.log_tail()
        try:
            return bool(await client.is_server_live())
        except InferenceServerException:
            return False

    say = lambda: f"nginx not proxying gRPC: {proc.log_tail()}"  # noqa: E731
    await eventually(live, within=30, step=0.05, say=say)


async def _stream(
    client: grpcclient.InferenceServerClient, prompt: str, n: int
) -> list[tuple[float, str, bool]]:
    """One ModelStreamInfer call with one request: (seconds since start, text, final)."""

    async def gen() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "ensemble", "inputs": inputs(prompt, n), "request_id": prompt}

    out: list[tuple[float, str, bool]] = []
    t0 = time.perf_counter()
    async for result, error in client.stream_infer(gen()):
        if error is not None:
            raise error
        resp = result.get_response()
        final = resp.parameters.get("triton_final_response")
        arr = result.as_numpy("text_output")
        text = b"".join(arr.ravel()).decode() if arr is not None else ""
        out.append((time.perf_counter() - t0, text, bool(final and final.bool_param)))
        if out[-1][2]:
            break
    return out


def test_cli_grpc_config_passes_nginx_syntax_check(nginx_bin: str, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    argv = ["nginx-config", "--grpc", "--upstream", "127.0.0.1:9001,127.0.0.1:9002"]
    assert main([*argv, "--listen", f"127.0.0.1:{free_port()}", "--out", str(conf)]) == 0
    check = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path), "-c", "nginx.conf", "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


async def test_triton_streams_through_nginx_reach_both_experts(
    nginx_bin: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        experts: list[EmulatorServer] = []
        targets = []
        for _ in range(2):
            emu = await stack.enter_async_context(
                serve_emulator("cpu-tiny", tpot_ms=TPOT_MS, ttft_ms=5, pacing="per-request")
            )
            g = TritonGrpcServer(emu)
            await g.start()
            stack.push_async_callback(g.stop)
            experts.append(emu)
            targets.append(g.target)
        target, proc = _start_grpc_nginx(nginx_bin, tmp_path / "nginx", targets)
        stack.callback(proc.stop)
        client = grpcclient.InferenceServerClient(target)
        stack.push_async_callback(client.close)
        await _wait_live(client, proc)
        assert await client.is_model_ready("ensemble")

        n = 12  # 240 ms of tokens each
        runs = await asyncio.gather(*(_stream(client, f"prompt {i}", n) for i in range(6)))
        unary = await client.infer("ensemble", inputs("prompt 0", n)[:2])
        served = [e.engine.finished_total for e in experts]

    for msgs in runs:
        assert len(msgs) == n and [f for *_, f in msgs] == [False] * (n - 1) + [True]
        assert count_tokens("".join(t for _, t, _ in msgs)) == n
        # Relayed as produced: buffering would deliver everything at the end, at once.
        assert msgs[-1][0] - msgs[0][0] >= 0.5 * (n - 1) * TPOT_MS / 1e3
    whole = b"".join(unary.as_numpy("text_output").ravel()).decode()
    assert whole == "".join(t for _, t, _ in runs[0])  # same prompt, same answer
    assert sum(served) == 7 and min(served) >= 2, served  # round robin over both
    log = (tmp_path / "nginx" / "access.log").read_text()
    assert log.count("ModelStreamInfer") == 6
    assert {p.split("=", 1)[1] for p in log.split() if p.startswith("upstream=")} == set(targets)


async def test_unreachable_upstream_is_grpc_unavailable(nginx_bin: str, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    target, proc = _start_grpc_nginx(nginx_bin, tmp_path / "nginx", [dead])
    client = grpcclient.InferenceServerClient(target)
    try:
        seen: list[str] = []

        async def unavailable_through_nginx() -> bool:
            assert proc.alive(), proc.log_tail()
            try:
                await client.is_server_live()
            except InferenceServerException as exc:
                seen.append(str(exc))
                return exc.status() == "StatusCode.UNAVAILABLE" and "through nginx" in str(exc)
            return False

        await eventually(
            unavailable_through_nginx, within=30, step=0.05, say=lambda: "; ".join(seen[-1:])
        )
    finally:
        await client.close()
        proc.stop()
