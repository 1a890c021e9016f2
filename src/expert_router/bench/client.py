"""The timed user simulator of one process: every user sends its base prompt, then history.

Each request becomes a ``RequestRecord`` whatever happens (a failure is a record with
``status="error"``). Times are seconds since the shared start ``t0_ns`` (``perf_counter_ns``,
the same monotonic clock in every process); a chunk of k tokens gives k equal arrival times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from expert_router.bench.protocols import (
    ClientSettings,
    Message,
    ProtocolClient,
    StreamFailed,
    make_client,
)
from expert_router.bench.records import BASE_TURN, CONTINUATION_TURN, RequestRecord
from expert_router.bench.tokens import BUILTIN, TokenCounter
from expert_router.bench.workload import UserPlan, WorkloadConfig

CLUSTER_HEADER = "x-expert-router-cluster"
REPLICA_HEADER = "x-expert-router-replica"


@dataclass(slots=True)
class Counters:
    """Live counters of a run (read by the progress display)."""

    active: int = 0
    done: int = 0
    errors: int = 0
    tokens: int = 0


def parse_server_timing(value: str) -> dict[str, float]:
    """``Server-Timing`` entries with a ``dur`` (ms).

    >>> parse_server_timing('classify;dur=0.12, route;desc="x";dur=0.03, cache')
    {'classify': 0.12, 'route': 0.03}
    """
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for p in params:
            key, _, val = p.partition("=")
            if key.strip().lower() == "dur" and name:
                try:
                    out[name] = float(val.strip().strip('"'))
                except ValueError:
                    pass
    return out


class _Recorder:
    """The ``StreamSink`` of one request: builds its record as the stream arrives."""

    __slots__ = ("t0_ns", "times", "parts", "tokens", "status", "hdrs", "counters", "count")

    def __init__(self, t0_ns: int, counters: Counters, counter: TokenCounter = BUILTIN) -> None:
        self.count = counter.count
        self.t0_ns = t0_ns
        self.times: list[float] = []
        self.parts: list[str] = []
        self.tokens = 0
        self.status: int | None = None
        self.hdrs: Mapping[str, str] = {}
        self.counters = counters

    def headers(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.hdrs = headers

    def text(self, t_ns: int, text: str) -> None:
        self.parts.append(text)
        n = self.count(text)
        if n:
            t = (t_ns - self.t0_ns) / 1e9
            if n == 1:
                self.times.append(t)
            else:
                self.times.extend([t] * n)
            self.tokens += n
            self.counters.tokens += n


async def send(
    client: ProtocolClient,
    messages: Sequence[Message],
    *,
    record: RequestRecord,
    t0_ns: int,
    counters: Counters,
    counter: TokenCounter = BUILTIN,
) -> str:
    """Send one request, fill ``record`` (times, tokens, headers, status) and return the text.

    Never raises except on cancellation: failures are written into the record.
    """
    rec = _Recorder(t0_ns, counters, counter)
    counters.active += 1
    record.start = (time.perf_counter_ns() - t0_ns) / 1e9
    try:
        await client.stream(messages, record.max_tokens, rec)
    except StreamFailed as exc:
        record.status, record.error = "error", str(exc)
        record.http_status = exc.http_status
    except Exception as exc:  # noqa: BLE001 - a failed request is data, never a crash
        record.status, record.error = "error", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        record.end = (time.perf_counter_ns() - t0_ns) / 1e9
        counters.active -= 1
    counters.done += 1
    counters.errors += record.status == "error"
    record.http_status = record.http_status or rec.status
    record.token_times = rec.times
    record.first_token = rec.times[0] if rec.times else None
    record.output_tokens = rec.tokens
    _apply_headers(record, rec.hdrs)
    return "".join(rec.parts)


def _apply_headers(record: RequestRecord, headers: Mapping[str, str]) -> None:
    cluster = headers.get(CLUSTER_HEADER)
    if cluster is not None:
        try:
            record.routed_cluster = int(cluster)
        except ValueError:
            pass
    record.replica = headers.get(REPLICA_HEADER) or record.replica
    timing = headers.get("Server-Timing") or headers.get("server-timing")
    if timing:
        record.server_timing = parse_server_timing(timing)


async def run_user(
    client: ProtocolClient,
    plan: UserPlan,
    cfg: WorkloadConfig,
    *,
    users: int,
    repetition: int,
    t0_ns: int,
    start_s: float,
    counters: Counters,
) -> list[RequestRecord]:
    """One user's session: the base prompt at ``start_s``, then its continuation."""
    # Timers may fire up to a clock tick (1 ms) early: sleep a tick longer, so that no
    # request starts before its time (which is what its record's ``start`` will say).
    delay = start_s - (time.perf_counter_ns() - t0_ns) / 1e9
    if delay > 0:
        await asyncio.sleep(delay + 0.001)

    def new_record(turn: int, prompt_tokens: int) -> RequestRecord:
        return RequestRecord(
            users=users,
            repetition=repetition,
            user=plan.user,
            turn=turn,
            cluster=plan.cluster,
            prompt_tokens=prompt_tokens,
            max_tokens=cfg.output_tokens,
            start=0.0,
            end=0.0,
        )

    counter = cfg.counter
    base = new_record(BASE_TURN, plan.base_tokens)
    history = [Message("user", plan.base)]
    answer = await send(
        client, history, record=base, t0_ns=t0_ns, counters=counters, counter=counter
    )
    followup = plan.followup(base.output_tokens, cfg.followup_min_tokens, counter)
    convo = [*history, Message("assistant", answer), Message("user", followup)]
    tokens = plan.base_tokens + counter.count(answer) + counter.count(followup)
    cont = new_record(CONTINUATION_TURN, tokens)
    await send(client, convo, record=cont, t0_ns=t0_ns, counters=counters, counter=counter)
    return [base, cont]


async def run_users(
    plans: Sequence[UserPlan],
    cfg: WorkloadConfig,
    *,
    protocol: str,
    settings: ClientSettings,
    users: int,
    repetition: int,
    t0_ns: int,
    ramp_s: float = 0.0,
    counters: Counters | None = None,
) -> list[RequestRecord]:
    """Run ``plans`` concurrently in this event loop; user ``i`` of ``users`` starts at
    ``ramp_s * i / users`` seconds after ``t0_ns``. Returns every request's record."""
    counters = counters if counters is not None else Counters()
    client = make_client(protocol, settings)
    try:
        warm_up = getattr(client, "warm_up", None)
        if warm_up is not None:  # connections opened before the start, outside every TTFT
            await warm_up(len(plans), t0_ns)
        tasks = [
            run_user(
                client,
                plan,
                cfg,
                users=users,
                repetition=repetition,
                t0_ns=t0_ns,
                start_s=ramp_s * plan.user / max(1, users),
                counters=counters,
            )
            for plan in plans
        ]
        results = await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    return [r for rs in results for r in rs]
