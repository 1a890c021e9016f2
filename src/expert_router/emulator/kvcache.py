"""KV-cache capacity policies of the engine: whole-request reservation or paged blocks.

``ReserveKV`` is TensorRT-LLM's default ``GUARANTEED_NO_EVICT``: admission reserves prompt +
``max_tokens``, so nothing is ever evicted. ``PagedKV`` is vLLM's: blocks are allocated as
sequences grow; when a decode step finds no free block the newest sequence is preempted.
"""

from __future__ import annotations

from typing import Protocol


class Sized(Protocol):
    prompt_tokens: int
    max_tokens: int
    prefill_total: int
    kv_held: int


class ReserveKV:
    """Reserve prompt + max_tokens tokens per admitted request."""

    paged = False

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self.used = 0

    @property
    def usage(self) -> float:
        return self.used / self.capacity

    def fits_alone(self, req: Sized) -> bool:
        return req.prompt_tokens + req.max_tokens <= self.capacity

    def can_admit(self, req: Sized) -> bool:
        return self.used + req.prompt_tokens + req.max_tokens <= self.capacity

    def admit(self, req: Sized) -> None:
        req.kv_held = req.prompt_tokens + req.max_tokens
        self.used += req.kv_held

    def release(self, req: Sized) -> None:
        self.used -= req.kv_held
        req.kv_held = 0


class PagedKV:
    """Blocks of ``block_size`` tokens; admission keeps a 1% watermark free, as vLLM does."""

    paged = True

    def __init__(self, capacity_tokens: int, block_size: int = 16) -> None:
        self.block = block_size
        self.capacity = capacity_tokens // block_size
        self.watermark = max(1, self.capacity // 100)
        self.used = 0

    @property
    def usage(self) -> float:
        return self.used / self.capacity

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.block)

    def fits_alone(self, req: Sized) -> bool:
        return self.blocks(req.prompt_tokens + req.max_tokens) <= self.capacity - self.watermark

    def can_admit(self, req: Sized) -> bool:
        return self.used + self.blocks(req.prefill_total) <= self.capacity - self.watermark

    def admit(self, req: Sized) -> None:
        req.kv_held = self.blocks(req.prefill_total)
        self.used += req.kv_held

    def release(self, req: Sized) -> None:
        self.used -= req.kv_held
        req.kv_held = 0

    def needs_block(self, req: Sized, length: int) -> bool:
        """Whether a sequence of ``length`` tokens must grow by a block to take one more."""
        return self.blocks(length + 1) > req.kv_held

    def grow(self, req: Sized) -> None:
        req.kv_held += 1
        self.used += 1

    @property
    def free(self) -> int:
        return self.capacity - self.used
