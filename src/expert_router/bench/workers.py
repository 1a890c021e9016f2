"""Spreading users over worker processes when one event loop cannot keep timestamps honest.

Each worker (a ``spawn``-ed process with its own event loop, uvloop when installed) runs a
share of the users against the shared start ``t0_ns``; workers stream progress snapshots and
finally their records back as JSON over a pipe, and the parent merges them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from typing import Any

from expert_router.bench.client import Counters, run_users
from expert_router.bench.protocols import ClientSettings
from expert_router.bench.records import RequestRecord
from expert_router.bench.workload import UserPlan, WorkloadConfig

_PROGRESS_EVERY_S = 0.25
START_DELAY_S = 1.5


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block: a full collection over a run's objects
    stalls the event loop for tens of ms, which would show up as token delay."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def run_loop(main: Any) -> Any:
    """Run a coroutine in a fresh event loop (uvloop when installed), cyclic GC paused."""
    with paused_gc():
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)


def _worker(conn: Connection, payload: str) -> None:
    """Worker process entry point: run the users of ``payload``, send progress then records."""
    job = json.loads(payload)
    counters = Counters()

    async def report() -> None:
        while True:
            await asyncio.sleep(_PROGRESS_EVERY_S)
            conn.send_bytes(json.dumps({"progress": asdict(counters)}).encode())

    async def main() -> list[RequestRecord]:
        reporter = asyncio.create_task(report())
        try:
            return await run_users(
                [UserPlan(**p) for p in job["plans"]],
                WorkloadConfig(**job["cfg"]),
                protocol=job["protocol"],
                settings=ClientSettings(**job["settings"]),
                users=job["users"],
                repetition=job["repetition"],
                t0_ns=job["t0_ns"],
                ramp_s=job["ramp_s"],
                counters=counters,
            )
        finally:
            reporter.cancel()

    try:
        records = run_loop(main())
        conn.send_bytes(json.dumps({"records": [asdict(r) for r in records]}).encode())
    except BaseException as exc:  # the parent turns this into one clean error
        conn.send_bytes(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}).encode())
    finally:
        conn.close()


def run_sharded(
    plans: Sequence[UserPlan],
    cfg: WorkloadConfig,
    *,
    workers: int,
    protocol: str,
    settings: ClientSettings,
    users: int,
    repetition: int,
    ramp_s: float = 0.0,
    on_progress: Callable[[Counters], None] | None = None,
    t0_ns: int | None = None,
) -> list[RequestRecord]:
    """Run ``plans`` over ``workers`` processes (users dealt round robin) and merge records.

    Every record's times are relative to the shared start ``t0_ns`` (default: ``START_DELAY_S``
    from now, enough for the workers to start and import).
    """
    ctx = mp.get_context("spawn")
    if t0_ns is None:
        t0_ns = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
    procs, conns = [], []
    for w in range(workers):
        share = [asdict(p) for p in plans[w::workers]]
        payload = json.dumps(
            {
                "plans": share,
                "cfg": asdict(cfg),
                "protocol": protocol,
                "settings": asdict(settings),
                "users": users,
                "repetition": repetition,
                "t0_ns": t0_ns,
                "ramp_s": ramp_s,
            }
        )
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(child, payload), daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    latest = [Counters() for _ in range(workers)]
    records: list[RequestRecord] = []
    failures: list[str] = []
    pending = dict(enumerate(conns))
    try:
        while pending:
            for conn in wait(list(pending.values()), timeout=_PROGRESS_EVERY_S):
                assert isinstance(conn, Connection)
                i = next(k for k, c in pending.items() if c is conn)
                try:
                    msg = json.loads(conn.recv_bytes())
                except EOFError:
                    failures.append(f"worker {i} exited without results")
                    del pending[i]
                    continue
                if "progress" in msg:
                    latest[i] = Counters(**msg["progress"])
                elif "records" in msg:
                    records.extend(RequestRecord(**r) for r in msg["records"])
                    del pending[i]
                else:
                    failures.append(f"worker {i}: {msg.get('failed')}")
                    del pending[i]
            if on_progress is not None:
                total = Counters()
                for c in latest:
                    total.active += c.active
                    total.done += c.done
                    total.errors += c.errors
                    total.tokens += c.tokens
                on_progress(total)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    if failures:
        raise RuntimeError("; ".join(failures))
    records.sort(key=lambda r: (r.user, r.turn))
    return records
