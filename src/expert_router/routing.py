"""The routing policy: prediction + pool state -> one frozen ``RouteDecision``. Pure, no I/O.

Nearest cluster first; inside a pool least outstanding requests by power of two choices
among healthy, non-saturated replicas; spill-over down the ranked clusters per policy.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

SpilloverPolicy = Literal["never", "unhealthy", "saturated"]
Reason = Literal["nearest", "spillover", "failover", "queued", "unavailable"]


class PredictionLike(Protocol):
    """What the policy needs from a classifier prediction."""

    @property
    def cluster(self) -> int: ...

    @property
    def ranked(self) -> Sequence[int]: ...


class ReplicaView(Protocol):
    """What the policy needs to know of one replica."""

    @property
    def name(self) -> str: ...

    @property
    def outstanding(self) -> int: ...

    @property
    def max_concurrency(self) -> int | None: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def weight(self) -> float: ...

    @property
    def paused(self) -> bool:
        """Backing off after the replica answered 429: takes no request for a while."""
        ...


class PoolView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def replicas(self) -> Sequence[ReplicaView]: ...


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes. ``replica`` is ``None`` when it must wait (``queued``) or
    nothing can take it (``unavailable``)."""

    cluster: str
    """The cluster whose pool serves the request (the nearest one unless spilled)."""
    replica: str | None
    reason: Reason
    scores: tuple[float, ...] = ()
    nearest: str = ""
    """The classifier's nearest cluster, whatever pool was chosen."""


def _saturated(r: ReplicaView) -> bool:
    cap = r.max_concurrency
    return r.paused or cap is not None and r.outstanding >= cap


class RoutingPolicy:
    """Decide where a request goes. ``pools`` maps every cluster id (as ``str``) to its pool.

    >>> policy = RoutingPolicy("saturated", max_distance=1)
    """

    __slots__ = ("policy", "max_distance", "_rng")

    def __init__(
        self,
        policy: SpilloverPolicy = "saturated",
        *,
        max_distance: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        self.policy: SpilloverPolicy = policy
        self.max_distance = max_distance
        self._rng = rng or random.Random()

    def pick(self, pool: PoolView, exclude: Collection[str] = ()) -> ReplicaView | None:
        """Least outstanding (relative to weight) of two random available replicas."""
        candidates = [
            r
            for r in pool.replicas
            if r.healthy and not _saturated(r) and (not exclude or r.name not in exclude)
        ]
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        draw = self._rng.random  # two distinct picks, cheaper than rng.sample
        i = int(draw() * n)
        j = int(draw() * (n - 1))
        a, b = candidates[i], candidates[j + (j >= i)]
        return a if a.outstanding / a.weight <= b.outstanding / b.weight else b

    def decide(
        self,
        prediction: PredictionLike,
        pools: Mapping[str, PoolView],
        *,
        exclude: Collection[str] = (),
        scores: tuple[float, ...] = (),
    ) -> RouteDecision:
        """Route one request; ``exclude`` names replicas that already failed it (failover)."""
        nearest = str(prediction.cluster)
        home = pools[nearest]
        base: Reason = "failover" if exclude else "nearest"
        replica = self.pick(home, exclude)
        if replica is not None:
            return RouteDecision(nearest, replica.name, base, scores, nearest)
        home_live = [r for r in home.replicas if r.healthy and r.name not in exclude]
        may_spill = self.policy == "saturated" or (self.policy == "unhealthy" and not home_live)
        any_live = bool(home_live)
        if may_spill and self.max_distance > 0:
            seen = {home.name}
            distance = 0
            for cluster in prediction.ranked:
                key = str(cluster)
                if key == nearest:
                    continue
                distance += 1
                if distance > self.max_distance:
                    break
                pool = pools.get(key)
                if pool is None or pool.name in seen:
                    continue
                seen.add(pool.name)
                replica = self.pick(pool, exclude)
                if replica is not None:
                    return RouteDecision(key, replica.name, "spillover", scores, nearest)
                any_live = any_live or any(r.healthy for r in pool.replicas)
        if any_live:
            return RouteDecision(nearest, None, "queued", scores, nearest)
        return RouteDecision(nearest, None, "unavailable", scores, nearest)
