"""The first-message deadlines of a Triton backend's relayed calls: one timer for all, armed
for the oldest call still waiting; each late call told once, in the order the calls started;
a call that got its first message (or ended) is no longer held. On a virtual clock: each
step is at its exact time, however loaded the machine."""

from __future__ import annotations

import asyncio

import pytest
from virtual_time import run_virtual

from expert_router.backends.triton_grpc import FirstMessageClock

pytestmark = pytest.mark.timeout(10)


class Call:
    def __init__(self, name: str, late: list[str]) -> None:
        self.name, self.late = name, late

    def no_first(self) -> None:
        self.late.append(self.name)


def test_late_calls_are_told_in_order_and_answered_ones_are_let_go() -> None:
    run_virtual(_told_in_order())


async def _told_in_order() -> None:
    late: list[str] = []
    clock = FirstMessageClock(0.2)
    a, b, c = Call("a", late), Call("b", late), Call("c", late)
    clock.start(a)  # type: ignore[arg-type]
    timer = clock.timer
    assert timer is not None
    await asyncio.sleep(0.1)
    clock.start(b)  # type: ignore[arg-type]
    clock.start(c)  # type: ignore[arg-type]
    assert clock.timer is timer  # one timer stands for all three
    clock.stop(a)  # type: ignore[arg-type]  # its first message came
    assert list(clock.waiting) == [b, c]  # type: ignore[comparison-overlap]  # stand-in calls
    await asyncio.sleep(0.15)  # a's deadline passes: nobody is late, the timer moves to b's
    assert late == [] and clock.timer is not None and clock.timer is not timer
    assert clock.timer.when() == pytest.approx(0.3)  # b's: started at 0.1, 0.2 to wait
    clock.stop(c)  # type: ignore[arg-type]
    await asyncio.sleep(0.15)
    assert late == ["b"] and not clock.waiting and clock.timer is None
    d = Call("d", late)
    clock.start(d)  # type: ignore[arg-type]  # an empty clock arms again
    assert clock.timer is not None
    await asyncio.sleep(0.3)
    assert late == ["b", "d"] and not clock.waiting


def test_a_late_call_that_starts_another_is_timed_too() -> None:
    """A call told it is late may retry on another replica from that very callback."""
    run_virtual(_retried())


async def _retried() -> None:
    late: list[str] = []
    clock = FirstMessageClock(0.1)

    class Retrying(Call):
        def no_first(self) -> None:
            super().no_first()
            if self.name == "first":
                clock.start(Call("retry", late))  # type: ignore[arg-type]

    clock.start(Retrying("first", late))  # type: ignore[arg-type]
    await asyncio.sleep(0.15)
    assert late == ["first"] and len(clock.waiting) == 1 and clock.timer is not None
    await asyncio.sleep(0.15)
    assert late == ["first", "retry"] and not clock.waiting
