"""The serving process's garbage collector: start-up objects frozen, young collections spaced
so that objects living as long as a request are freed before a collection sees them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from expert_router.gateway.server import YOUNG_COLLECTION_THRESHOLD, settle_collector


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_the_young_threshold_raised(collector: None) -> None:
    survivor = [object()]  # a start-up object: alive when the collector is settled
    settle_collector()
    assert gc.get_freeze_count() > 0
    assert not any(o is survivor for o in gc.get_objects())  # frozen: no collection scans it
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD


def test_requests_in_flight_trigger_no_collection(collector: None) -> None:
    settle_collector()
    young = gc.get_stats()[0]["collections"]
    # A few hundred requests' worth of objects alive at once, then freed: at CPython's
    # default threshold (700) this makes several collections of the young generation.
    in_flight = [{"request": i, "parts": [i]} for i in range(YOUNG_COLLECTION_THRESHOLD // 3)]
    del in_flight
    assert gc.get_stats()[0]["collections"] == young


def test_the_default_threshold_would_have_collected(collector: None) -> None:
    """The check above can fail: without the raised threshold the same allocations collect."""
    gc.set_threshold(700)
    young = gc.get_stats()[0]["collections"]
    in_flight = [{"request": i, "parts": [i]} for i in range(YOUNG_COLLECTION_THRESHOLD // 3)]
    del in_flight
    assert gc.get_stats()[0]["collections"] > young
