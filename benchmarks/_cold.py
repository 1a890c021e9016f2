"""Cold caches on purpose: the benchmarks' way to measure what a woken core pays.

A gateway woken by one request finds its code and data evicted by whatever else the machine
ran; how much is evicted depends on the machine. ``flush()`` reads a buffer twice this
machine's 32 MiB last-level cache through the core, so that the next call pays every miss
from memory, the same on any run (``gateway_python_cost.py --evict``, ``classify_latency.py``'s
cold rows).
"""

from __future__ import annotations

import numpy as np

EVICT_BYTES = 64 * 2**20
"""Read before each cold call: twice the last-level cache of the development machine."""


class CacheFlush:
    """Calling it evicts the caches (allocates its ``EVICT_BYTES`` buffer once)."""

    def __init__(self) -> None:
        self.buffer = np.ones(EVICT_BYTES // 8)

    def __call__(self) -> None:
        self.buffer.sum()
