"""Run a gateway: ``serve_gateway`` (async context manager in the caller's loop, for tests and
benchmarks) and ``run_gateway`` (blocking, for the CLI; uvloop when installed, ``workers`` >
1 = that many processes sharing the port through SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import queue
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from expert_router.config import GatewayConfig
from expert_router.errors import ExpertRouterError, ShuttingDown
from expert_router.gateway.app import ClassifierLike, Gateway
from expert_router.gateway.http_front import HttpFrontend
from expert_router.gateway.http_ingress import PROBE_RESERVE, HttpConnection

log = logging.getLogger("expert_router.gateway")


@dataclass
class RunningGateway:
    """A started gateway: its base URL and the ``Gateway`` object (fleet, metrics)."""

    url: str
    port: int
    gateway: Gateway
    grpc_target: str | None = None
    """``host:port`` of the gRPC ingress (Triton's GRPCInferenceService), when asked for."""
    front: HttpFrontend | None = None
    server: asyncio.Server | None = None
    grpc: Any = None

    async def drain(self, grace: float) -> None:
        """Stop gracefully: stop listening, answer ``/ready`` with 503, let requests in
        flight finish for up to ``grace`` seconds, then end the rest (an error event
        mid-stream, UNAVAILABLE on gRPC)."""
        if self.server is not None:
            self.server.close()
        front = self.front
        assert front is not None
        quiet = front.drain()
        grpc_done = self.grpc.drain(grace) if self.grpc is not None else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(quiet.wait(), grace)
        front.stop(ShuttingDown("the gateway is shutting down"))
        if grpc_done is not None:
            await grpc_done


@contextlib.asynccontextmanager
async def serve_gateway(
    config: GatewayConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    classifier: ClassifierLike | None = None,
    reuse_port: bool = False,
    multiproc_dir: str | None = None,
    probes: bool = True,
    grpc_port: int | None = None,
) -> AsyncIterator[RunningGateway]:
    """Serve ``config`` in the running loop until the block exits.

    >>> async with serve_gateway(cfg, port=0) as gw:   # doctest: +SKIP
    ...     print(gw.url)
    """
    gw = Gateway(config, classifier, multiproc_dir=multiproc_dir, probes=probes)
    await gw.start()
    front = HttpFrontend(gw, config.server)
    server: asyncio.Server | None = None
    grpc_ingress: Any = None
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: HttpConnection(front), host, port, reuse_port=reuse_port or None, backlog=4096
        )
        bound = int(server.sockets[0].getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        if grpc_port is not None:
            from expert_router.gateway.grpc_ingress import GrpcIngress

            grpc_ingress = GrpcIngress(gw, host=host, port=grpc_port, reuse_port=reuse_port)
            await grpc_ingress.start()
        target = grpc_ingress.target if grpc_ingress is not None else None
        url = f"http://{shown}:{bound}"
        yield RunningGateway(url, bound, gw, target, front, server, grpc_ingress)
    finally:
        if grpc_ingress is not None:
            await grpc_ingress.stop()
        if server is not None:
            server.close()
        for conn in list(front.conns):
            conn.t.close()
        await gw.close()


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Tracked objects allocated and not yet freed between two collections of the cyclic
collector's youngest generation (CPython's default: 700). The count rises with the requests in
flight: a stream's objects live as long as its answer, seconds, so at 700 a collection comes
whenever a few requests more than at the last one are in flight (several a second at 1000
streams), finds them alive and promotes them, and the older generations' collections then
walk every request in flight (1-5 ms, 14-18 ms for a full one). At 20,000 a stream's objects
are freed by reference counting before a collection sees them: in the benchmark's runs the
collector's work fell by 60 % and its pauses over 0.5 ms from 30 to 9 (docs/benchmarks.md).
Nothing is given up: the request path leaves no reference cycles, so a collection finds nothing
either way; garbage in a cycle, should some appear, waits a little longer for its collection."""


def settle_collector() -> None:
    """Set the cyclic garbage collector for serving, once start-up is over: everything loaded
    so far (modules, classifier, config) lives as long as the process and is taken out of its
    scans (``gc.freeze``: a full collection under load then costs milliseconds, not tens of
    them), and the young generation waits for ``YOUNG_COLLECTION_THRESHOLD`` objects."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


async def _serve_until_signal(
    config: GatewayConfig,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    multiproc_dir: str | None,
    on_ready: Callable[[str], None],
    grpc_port: int | None = None,
) -> None:
    stop, now = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    hurried: list[int] = []

    def on_signal(signum: int) -> None:  # the first drains; a second one stops at once
        if stop.is_set():
            hurried.append(signum)
            now.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    async with serve_gateway(
        config,
        host=host,
        port=port,
        reuse_port=reuse_port,
        multiproc_dir=multiproc_dir,
        grpc_port=grpc_port,
    ) as gw:
        settle_collector()
        on_ready(gw.url)
        await stop.wait()
        drain = asyncio.ensure_future(gw.drain(config.server.drain_timeout))
        hurry = asyncio.ensure_future(now.wait())
        await asyncio.wait([drain, hurry], return_when=asyncio.FIRST_COMPLETED)
        for task in (drain, hurry):
            task.cancel()
    if hurried:  # cut short: the shell's convention for a process ended by a signal
        raise SystemExit(128 + hurried[0])


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _worker_main(
    config_data: dict[str, Any],
    host: str,
    port: int,
    multiproc_dir: str | None,
    ready: Any,
    grpc_port: int | None = None,
) -> None:
    config = GatewayConfig.model_validate(config_data)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops workers with SIGTERM
    raise_fd_limit(config)

    def on_ready(url: str) -> None:
        ready.put(url)

    _run(
        _serve_until_signal(
            config,
            host,
            port,
            reuse_port=True,
            multiproc_dir=multiproc_dir,
            on_ready=on_ready,
            grpc_port=grpc_port,
        )
    )


FD_RESERVE = 256
"""File descriptors kept for upstream connections, probes and the process's own files."""


def raise_fd_limit(config: GatewayConfig) -> None:
    """Raise the soft limit of open files to the hard one (as nginx's
    ``worker_rlimit_nofile``), and say so when ``server.max_connections`` still does not fit."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    need = config.server.max_connections + PROBE_RESERVE + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit %d is below server.max_connections + reserves (%d): raise "
            "`ulimit -n` or lower server.max_connections",
            soft,
            need,
        )


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_gateway(
    config: GatewayConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    multiproc_dir: str | None = None,
    on_ready: Callable[[str], None] = lambda url: None,
    grpc_port: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. With ``workers`` > 1, ``multiproc_dir`` must be an empty
    directory named by ``PROMETHEUS_MULTIPROC_DIR`` in the environment (the CLI sets both)."""
    if workers <= 1:
        raise_fd_limit(config)
        _run(
            _serve_until_signal(
                config,
                host,
                port,
                reuse_port=False,
                multiproc_dir=None,
                on_ready=on_ready,
                grpc_port=grpc_port,
            )
        )
        return
    if port == 0:
        port = free_port(host)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    data = config.model_dump(mode="json")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(data, host, port, multiproc_dir, ready, grpc_port),
            name=f"gateway-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        """The first signal lets every worker drain (SIGTERM); a second kills them."""
        nonlocal stopping
        hurry, stopping = stopping, True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.kill() if hurry else p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = ""
    started = 0
    while started < len(procs) and not stopping:
        try:
            url = ready.get(timeout=0.5)
            started += 1
        except queue.Empty:
            if any(p.exitcode is not None for p in procs):
                stop(signal.SIGTERM, None)
                msg = f"a gateway worker failed to start on {host}:{port}"
                raise ExpertRouterError(msg) from None
    on_ready(url)
    for p in procs:
        p.join()
    if not stopping and any(p.exitcode for p in procs):
        print("expert-router serve: a worker exited unexpectedly", file=sys.stderr)
