"""Active health probes: every replica is probed on an interval; failures count towards
ejection like failed requests do, and one passing probe re-admits an ejected replica.
The probe tries ``health.path`` and falls back to ``/v1/models`` when that answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from expert_router.config import HealthConfig
from expert_router.errors import BackendError, BackendRefused
from expert_router.gateway.pools import Fleet, Replica

log = logging.getLogger("expert_router.gateway")
FALLBACK_PATH = "/v1/models"


async def probe_once(fleet: Fleet, r: Replica, cfg: HealthConfig) -> bool:
    """Probe one replica, update its health; True when it passed."""
    paths = [r.probe_path] if r.probe_path else [cfg.path, FALLBACK_PATH]
    ok = down = False
    for path in paths:
        try:
            status = await r.backend.probe(path, cfg.timeout)
        except BackendError as exc:
            log.debug("probe of %s failed: %s", r.name, exc)
            down = isinstance(exc, BackendRefused)
            break
        if status == 404 and path != paths[-1]:
            continue
        ok = 200 <= status < 300
        if ok:
            r.probe_path = path
        break
    if ok:
        fleet.readmit(r)
    else:
        fleet.record_failure(r, "probe", down=down)
    return ok


class HealthChecker:
    """Runs one probe loop per replica until stopped."""

    def __init__(self, fleet: Fleet, cfg: HealthConfig) -> None:
        self.fleet = fleet
        self.cfg = cfg
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for r in self.fleet.replicas.values():
            self._tasks.append(asyncio.create_task(self._loop(r), name=f"probe {r.name}"))

    async def _loop(self, r: Replica) -> None:
        while True:
            try:
                await probe_once(self.fleet, r, self.cfg)
            except Exception:  # a probe must never kill the loop
                log.exception("probe of %s crashed", r.name)
            await asyncio.sleep(self.cfg.interval)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
