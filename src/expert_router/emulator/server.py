"""The live emulator: an aiohttp app speaking the OpenAI API in front of one ``Engine``.

``serve_emulator`` / ``serve_fleet`` run one or many experts inside the caller's event loop
(tests, the CLI); each expert has its own engine, real-time driver and listening socket, and
``drain`` shuts it down gracefully (``emulator.drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from expert_router.emulator.drain import REFUSED, Drain, Drained, error_event
from expert_router.emulator.drain import error_body as shutdown_body
from expert_router.emulator.engine import CANCELLED, DONE, Engine, EngineRequest
from expert_router.emulator.live import LiveDriver, StreamSink
from expert_router.emulator.openai_api import (
    ChunkEncoder,
    Plan,
    error_body,
    full_response,
    parse_request,
)
from expert_router.emulator.paced import DEFAULT_TTFT_MS, PacedDriver, PacedEngine
from expert_router.emulator.presets import Preset, get_preset
from expert_router.errors import RequestError
from expert_router.tokenizer import TokenGenerator

_ids = itertools.count(1)


class EmulatorServer:
    """One emulated expert: preset, engine, driver and (once started) its URL."""

    def __init__(self, preset: Preset, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.preset = preset
        self.model_name = preset.model_name
        self.context = preset.context
        self.engine: Engine | PacedEngine
        self.driver: LiveDriver | PacedDriver
        if preset.pacing == "per-request":
            assert preset.tpot_ms is not None  # the preset's validator checks it
            ttft_ms = preset.ttft_ms if preset.ttft_ms is not None else DEFAULT_TTFT_MS
            self.engine = PacedEngine(ttft_s=ttft_ms / 1e3, tpot_s=preset.tpot_ms / 1e3)
            self.driver = PacedDriver(self.engine)
        else:
            self.engine = Engine(
                preset.timing(),
                max_batch=preset.max_batch,
                kv_tokens=preset.kv_capacity,
                prefill_chunk=preset.prefill_chunk,
                kv_policy=preset.kv_policy,
                block_size=preset.block_size,
            )
            self.driver = LiveDriver(self.engine)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._active: dict[int, asyncio.BaseTransport] = {}
        self.shutdown = Drain()
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        from expert_router.emulator.grpc_server import add_http_routes

        add_http_routes(app, self)  # Triton's /v2 generate, generate_stream, health
        return app

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.driver.start()
        runner = web.AppRunner(
            self.app(), handle_signals=False, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def drain(self, limit_s: float, *, grace_s: float = 1.0) -> int:
        """Refuse new requests (readiness 503) and let those in flight finish for up to
        ``limit_s``; then end the rest with an error and give them ``grace_s`` to write it.
        Returns how many were cut. ``stop`` closes the server afterwards."""
        self.shutdown.begin()
        if await self.shutdown.wait_idle(limit_s):
            return 0
        cut = self.shutdown.expire()
        await self.shutdown.wait_idle(grace_s)
        return cut

    async def stop(self) -> None:
        """Abort the requests in flight (their clients see a dropped connection), then close."""
        for transport in list(self._active.values()):
            transport.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.driver.stop()

    # -- handlers ---------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.shutdown.draining else 200)

    def refused(self) -> web.Response | None:
        """The 503 that answers a new request while the server shuts down, else None."""
        if not self.shutdown.draining:
            return None
        return web.json_response(
            shutdown_body(REFUSED), status=503, headers={"Connection": "close"}
        )

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "expert-router-emulator",
            "max_model_len": self.context,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def _metrics(self, request: web.Request) -> web.Response:
        e, label = self.engine, f'{{model_name="{self.model_name}"}}'
        rows = [
            ("vllm:num_requests_running", "gauge", e.num_running),
            ("vllm:num_requests_waiting", "gauge", e.num_waiting),
            ("vllm:gpu_cache_usage_perc", "gauge", e.kv_usage),
            ("vllm:num_preemptions_total", "counter", e.preemptions_total),
            ("vllm:generation_tokens_total", "counter", e.generation_tokens_total),
            ("vllm:prompt_tokens_total", "counter", e.prompt_tokens_total),
            ("vllm:request_success_total", "counter", e.finished_total),
            ("vllm:request_aborted_total", "counter", e.cancelled_total),
            ("emulator:iterations_total", "counter", e.iterations),
            ("emulator:late_iterations_total", "counter", self.driver.late_iterations),
        ]
        if isinstance(e, PacedEngine):
            rows += e.metric_rows()
        lines = []
        for name, kind, value in rows:
            lines += [f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        refused = self.refused()
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except ValueError:
            err = RequestError("the request body is not valid JSON", param="body")
            return web.json_response(error_body(err), status=400)
        try:
            plan, _ = parse_request(
                body,
                chat=chat,
                context=self.context,
                eos_mean_tokens=self.preset.eos_mean_tokens,
            )
        except RequestError as exc:
            return web.json_response(error_body(exc), status=400)
        rid = next(_ids)
        sink = StreamSink(per_token=plan.stream)
        req = EngineRequest(rid, plan.prompt_tokens, plan.max_tokens, plan.target, sink)
        name = f"{'chatcmpl' if chat else 'cmpl'}-{rid}"
        if request.transport is not None:
            self._active[rid] = request.transport
        try:
            with self.shutdown.track(sink):
                self.engine.submit(req, self.driver.now())
                if plan.stream:
                    return await self._stream(request, plan, sink, name)
                while not sink.done:
                    sink.pending = 0  # not streamed: wake only when the answer is complete
                    await self.shutdown.next(sink)
            text = "".join(plan.texts) if plan.texts else _text(plan.seed, plan.target)
            return web.json_response(full_response(plan, self.model_name, name, text, plan.target))
        except Drained as exc:
            return web.json_response(shutdown_body(str(exc)), status=503)
        finally:
            self._active.pop(rid, None)
            if req.state not in (DONE, CANCELLED):
                self.engine.cancel(req, self.driver.now())

    async def _stream(
        self, request: web.Request, plan: Plan, sink: StreamSink, name: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        enc = ChunkEncoder(plan, self.model_name, name)
        gen, texts = TokenGenerator(plan.seed), plan.texts
        sent, target = 0, plan.target
        first = enc.role
        try:
            while sent < target:
                await self.shutdown.next(sink)
                n, sink.pending = sink.pending, 0
                parts = [first] if first else []
                first = b""
                for _ in range(n):
                    text = texts[sent] if texts is not None else gen.next()
                    sent += 1
                    if sent == target:
                        parts.append(enc.last(text, plan.finish_reason))
                    else:
                        parts.append(enc.token(text))
                if parts:
                    await resp.write(b"".join(parts))
            tail = enc.usage(sent) if plan.include_usage else b""
            await resp.write(tail + b"data: [DONE]\n\n")
            await resp.write_eof()
        except Drained as exc:
            await end_stream(resp, error_event(str(exc)))
        except ConnectionError:
            pass  # the client went away; the caller's ``finally`` frees the slot
        return resp


async def end_stream(resp: web.StreamResponse, last: bytes) -> None:
    """Write ``last`` and close the stream, unless the client has gone already."""
    with contextlib.suppress(ConnectionError):
        await resp.write(last)
        await resp.write_eof()


def _text(seed: int, n: int) -> str:
    gen = TokenGenerator(seed)
    return "".join(gen.next() for _ in range(n))


class Fleet:
    """Several emulated experts sharing one event loop."""

    def __init__(self, servers: Sequence[EmulatorServer]) -> None:
        self.servers = list(servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


@asynccontextmanager
async def serve_emulator(
    preset: str | Preset = "cpu-tiny", *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
) -> AsyncIterator[EmulatorServer]:
    """Run one emulated expert until the block exits; ``port=0`` picks a free port.

    ``overrides`` replace preset fields: ``max_batch``, ``kv_tokens``, ``tpot_ms``,
    ``ttft_ms``, ``model_name``, ``prefill_chunk``, ``eos_mean_tokens``, ...
    """
    server = EmulatorServer(get_preset(preset, **overrides), host=host, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def serve_fleet(
    presets: Sequence[str | Preset],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ports: Sequence[int] | None = None,
    model_names: Sequence[str] | None = None,
    **overrides: Any,
) -> AsyncIterator[Fleet]:
    """Run one expert per preset on ports ``port``..``port+N-1`` (free ports if 0).

    ``ports`` gives each expert's port explicitly instead (0 = any free port);
    ``model_names`` gives each expert its own served model name.
    """
    if ports is None:
        ports = [port + i if port else 0 for i in range(len(presets))]
    if len(ports) != len(presets):
        raise ValueError(f"{len(ports)} ports for {len(presets)} presets")
    if model_names is not None and len(model_names) != len(presets):
        raise ValueError(f"{len(model_names)} model names for {len(presets)} presets")
    servers = []
    for i, (p, pt) in enumerate(zip(presets, ports, strict=True)):
        preset = get_preset(p, **overrides)
        if model_names is not None:
            preset = preset.with_overrides(model_name=model_names[i])
        servers.append(EmulatorServer(preset, host=host, port=pt))
    started: list[EmulatorServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
        yield Fleet(servers)
    finally:
        await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)
