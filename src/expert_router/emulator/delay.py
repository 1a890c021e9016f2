"""The paper's gateway as a condition: a log-normal latency added to each routed request.

The paper measured 442 ms (sd 302 ms) per request in its routing gateway. ``LogNormalDelay``
has exactly those moments; in virtual time each routed request reaches its engine that much
after it was sent (``SimWorkload.gateway``), so its TTFT carries the gateway's cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from expert_router.errors import ConfigError

PAPER_GATEWAY_MEAN_S = 0.442
PAPER_GATEWAY_SD_S = 0.302


@dataclass(frozen=True, slots=True)
class LogNormalDelay:
    """A log-normal delay with mean ``mean_s`` and standard deviation ``sd_s`` (seconds).

    >>> d = LogNormalDelay(0.442, 0.302)
    >>> round(d.sigma, 3), round(d.mu, 3)
    (0.619, -1.008)
    """

    mean_s: float = PAPER_GATEWAY_MEAN_S
    sd_s: float = PAPER_GATEWAY_SD_S

    def __post_init__(self) -> None:
        if not (self.mean_s > 0 and self.sd_s >= 0):
            raise ConfigError(f"gateway delay: mean must be > 0 and sd >= 0, got "
                              f"{self.mean_s}, {self.sd_s}")  # fmt: skip

    @property
    def sigma(self) -> float:
        """sd of the underlying normal: sigma^2 = ln(1 + sd^2 / mean^2)."""
        return math.sqrt(math.log1p((self.sd_s / self.mean_s) ** 2))

    @property
    def mu(self) -> float:
        """mean of the underlying normal: mu = ln(mean) - sigma^2 / 2."""
        return math.log(self.mean_s) - self.sigma**2 / 2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(rng.lognormal(self.mu, self.sigma, n), dtype=float)

    def describe(self) -> str:
        return (f"log-normal gateway latency, mean {self.mean_s * 1e3:.0f} ms, "
                f"sd {self.sd_s * 1e3:.0f} ms, on every routed request")  # fmt: skip


PAPER_GATEWAY = LogNormalDelay()
