"""The per-request record shared by the live user simulator and the emulator's virtual-time runs.

One record per request. Times are seconds since the start of the run (``perf_counter`` for
live runs, the virtual clock for simulations), so live and simulated runs compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "error"]

BASE_TURN = 0
CONTINUATION_TURN = 1


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, as the client saw it."""

    users: int
    """Concurrent users in the run this request belongs to."""
    repetition: int
    """Index of the repetition of that run (0-based)."""
    user: int
    """User index within the run (0-based)."""
    turn: int
    """0 = base prompt, 1 = continuation prompt (history + follow-up), and so on."""
    cluster: int | None
    """Cluster the router model assigns to the user's prompt (the workload's label)."""
    prompt_tokens: int
    """Prompt length in tokens (``expert_router.tokenizer``)."""
    max_tokens: int
    """Output tokens requested."""
    start: float
    """Seconds since run start when the request was sent."""
    end: float
    """Seconds since run start when the response ended (or failed)."""
    first_token: float | None = None
    """Seconds since run start when the first output token arrived."""
    token_times: list[float] = field(default_factory=list)
    """Arrival time of every output token (a chunk of k tokens gives k equal entries)."""
    output_tokens: int = 0
    """Output tokens received."""
    status: Status = "ok"
    error: str | None = None
    http_status: int | None = None
    routed_cluster: int | None = None
    """The gateway's ``x-expert-router-cluster`` header, when present."""
    replica: str | None = None
    """The gateway's ``x-expert-router-replica`` header, when present."""
    server_timing: dict[str, float] = field(default_factory=dict)
    """The gateway's ``Server-Timing`` entries in milliseconds (e.g. ``classify``, ``route``)."""
