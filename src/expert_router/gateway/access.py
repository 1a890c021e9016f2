"""The access line: one JSON line per answered request on the ``expert_router.access``
logger. It names the route, status, the cluster that served it and the classifier's nearest
one, the replica, routing reason, duration and client address; never a header, key, prompt
or any other byte the client sent.
"""

from __future__ import annotations

import json
import logging
from time import perf_counter

access_log = logging.getLogger("expert_router.access")


def log_access(
    path: str,
    status: int,
    t0: float,
    *,
    method: str = "POST",
    cluster: str | None = None,
    nearest: str | None = None,
    replica: str | None = None,
    reason: str | None = None,
    remote: str | None = None,
) -> None:
    """Write one access line for a request that arrived at ``t0`` (``perf_counter``)."""
    entry = {
        "method": method,
        "path": path,
        "status": status,
        "cluster": cluster,
        "nearest": nearest,
        "replica": replica,
        "reason": reason,
        "duration_ms": round((perf_counter() - t0) * 1000, 3),
        "remote": remote,
    }
    access_log.info(json.dumps(entry))
