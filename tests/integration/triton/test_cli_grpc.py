"""The contract: ``emulate --grpc-port`` and ``serve --grpc-port`` with ``grpc://`` experts,
as processes, driven by the official tritonclient."""

from __future__ import annotations

import asyncio
import signal
import sys
from functools import partial

import pytest
import tritonclient.grpc.aio as grpcclient
from polling import eventually
from triton_helpers import inputs, stream_texts

from expert_router.gateway.server import free_port
from expert_router.tokenizer import count_tokens

pytestmark = pytest.mark.integration


async def _start(*args: str, expect: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expert_router.cli.main", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = b""
    for _ in range(4):
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        seen += line
        if expect.encode() in line:
            return proc
    proc.kill()
    _, err = await proc.communicate()
    raise AssertionError(f"{args[0]} did not start: {seen!r} {err.decode()[-2000:]}")


async def _ready(client: grpcclient.InferenceServerClient) -> bool:
    try:
        return bool(await client.is_model_ready("ensemble"))
    except Exception:  # noqa: BLE001 - not up yet
        return False


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def test_emulate_and_serve_speak_triton_grpc() -> None:
    port, gport, sport, sgport = (free_port("127.0.0.1") for _ in range(4))
    emu = await _start(
        "emulate", "--preset", "cpu-tiny", "--tpot-ms", "2", "--ttft-ms", "5",
        "--port", str(port), "--grpc-port", str(gport), expect="gRPC on",
    )  # fmt: skip
    gw = None
    try:
        gw = await _start(
            "serve", "--port", str(sport), "--grpc-port", str(sgport),
            "--expert", f"*=grpc://127.0.0.1:{gport}", expect="gRPC ingress",
        )  # fmt: skip
        for target in (f"127.0.0.1:{gport}", f"127.0.0.1:{sgport}"):
            client = grpcclient.InferenceServerClient(target)
            try:
                await eventually(partial(_ready, client), step=0.05)  # (a moment after the line)
                req = {"model_name": "ensemble", "inputs": inputs("bread", 4), "request_id": "1"}
                got = await stream_texts(client, [req])
                assert count_tokens("".join(t for t, _ in got["1"])) == 4
                assert got["1"][-1][1]
            finally:
                await client.close()
    finally:
        if gw is not None:
            assert await _stop(gw) in (0, -signal.SIGTERM)
        assert await _stop(emu) in (0, -signal.SIGTERM)
