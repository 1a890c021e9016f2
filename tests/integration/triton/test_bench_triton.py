"""``expert-router bench --protocol triton-grpc / triton-http`` clients against the emulator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from triton_helpers import Emulator

from expert_router.bench.protocols import ClientSettings, Message, StreamFailed, make_client
from expert_router.tokenizer import count_tokens

pytestmark = pytest.mark.integration


class Sink:
    def __init__(self) -> None:
        self.status: int | None = None
        self.hdrs: Mapping[str, str] = {}
        self.texts: list[tuple[int, str]] = []

    def headers(self, status: int, headers: Mapping[str, str]) -> None:
        self.status, self.hdrs = status, headers

    def text(self, t_ns: int, text: str) -> None:
        self.texts.append((t_ns, text))


def _target(emu: Emulator, protocol: str) -> str:
    return f"grpc://{emu.target}" if protocol == "triton-grpc" else emu.url


MESSAGES = [Message("system", "be brief"), Message("user", "How do I bake sourdough bread?")]


@pytest.mark.parametrize("protocol", ["triton-grpc", "triton-http"])
async def test_exact_tokens_each_stamped(emu: Emulator, protocol: str) -> None:
    client = make_client(protocol, ClientSettings(_target(emu, protocol)))
    try:
        sink = Sink()
        await client.stream(MESSAGES, 12, sink)
        assert sink.status == 200
        assert count_tokens("".join(t for _, t in sink.texts)) == 12
        times = [t for t, _ in sink.texts]
        assert times == sorted(times) and len(times) >= 2  # streamed, not one block
        await client.stream(MESSAGES, 3, Sink())  # the connection is reused
    finally:
        await client.aclose()


@pytest.mark.parametrize("protocol", ["triton-grpc", "triton-http"])
async def test_unknown_model_fails_with_its_status(emu: Emulator, protocol: str) -> None:
    client = make_client(protocol, ClientSettings(_target(emu, protocol), model="llama"))
    try:
        with pytest.raises(StreamFailed, match="unknown model") as e:
            await client.stream(MESSAGES, 4, Sink())
        assert e.value.http_status in (200, 404)  # gRPC: in-stream error; HTTP: 404
    finally:
        await client.aclose()


async def test_through_the_gateway_records_the_route(
    emu: Emulator, gateway: Callable[..., Any]
) -> None:
    async with gateway(f"grpc://{emu.target}") as (_, ingress):
        client = make_client("triton-grpc", ClientSettings(f"grpc://{ingress.target}"))
        try:
            sink = Sink()
            await client.stream(MESSAGES, 5, sink)
        finally:
            await client.aclose()
    assert count_tokens("".join(t for _, t in sink.texts)) == 5
    assert "x-expert-router-cluster" in sink.hdrs and "x-expert-router-replica" in sink.hdrs
