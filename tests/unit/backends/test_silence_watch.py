"""``SilenceWatch``: one timer for all watched calls; a call that heard nothing between two
looks fails, one that heard something (or holds what its listener could not take) is kept;
a failure that starts another watched call (a retry) leaves one timer, not two."""

from __future__ import annotations

import asyncio
from typing import Any

from expert_router.backends.triton_grpc import SilenceWatch


class Call:
    def __init__(self) -> None:
        self.heard = False
        self.unread = 0


class Relay:
    def __init__(self, watch: SilenceWatch, then: Any = None) -> None:
        self.call = Call()
        self.watch, self.then, self.failed = watch, then, False

    def silent(self) -> None:
        self.failed = True
        if self.then is not None:
            self.watch.watch(self.then)  # a retry on another replica, watched in turn


async def test_one_timer_looks_at_every_call_and_a_retry_keeps_it_one() -> None:
    watch = SilenceWatch(0.01)
    retry = Relay(watch)
    quiet, talking, held = Relay(watch, then=retry), Relay(watch), Relay(watch)
    held.call.unread = 10  # its listener is full: the silence is ours
    for relay in (quiet, talking, held):
        watch.watch(relay)  # type: ignore[arg-type]  # stand-in relays
    first = watch.timer
    loop = asyncio.get_running_loop()
    armed: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def counting(delay: float, callback: Any) -> asyncio.TimerHandle:
        armed.append(call_later(delay, callback))
        return armed[-1]

    loop.call_later = counting  # type: ignore[method-assign,assignment]
    talking.call.heard = True
    watch._look()
    assert len(armed) == 1  # the retry's watch armed it; the look did not arm a second
    assert quiet.failed and not talking.failed and not held.failed
    assert watch.watched == {talking, held, retry} and not talking.call.heard  # type: ignore[comparison-overlap]
    assert watch.timer is not None and watch.timer is not first
    timer = watch.timer
    watch._look()  # talking heard nothing since: it fails now; retry fails too
    assert talking.failed and retry.failed and watch.watched == {held}
    assert watch.timer is not None and watch.timer is not timer
    del loop.call_later
    for t in (first, *armed):
        t.cancel()
    await asyncio.sleep(0)
