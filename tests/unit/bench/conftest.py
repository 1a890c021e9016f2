"""Helpers for the bench unit tests: hand-made request records."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from expert_router.bench.records import RequestRecord


def make_record(
    *,
    user: int = 0,
    turn: int = 0,
    start: float = 0.0,
    end: float = 1.0,
    times: Sequence[float] = (),
    status: str = "ok",
    repetition: int = 0,
    users: int = 1,
    max_tokens: int | None = None,
    cluster: int | None = 0,
    **kw: object,
) -> RequestRecord:
    """A record whose output tokens arrived at ``times``."""
    return RequestRecord(
        users=users,
        repetition=repetition,
        user=user,
        turn=turn,
        cluster=cluster,
        prompt_tokens=10,
        max_tokens=len(times) if max_tokens is None else max_tokens,
        start=start,
        end=end,
        first_token=times[0] if times else None,
        token_times=list(times),
        output_tokens=len(times),
        status=status,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def rec() -> Callable[..., RequestRecord]:
    return make_record
