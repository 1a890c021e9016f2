"""The gateway object: builds pools and backends from the config and owns the classifier,
the upstream session, the health checker and the metrics. Requests are read by the ingresses
(``http_ingress``, ``grpc_ingress``) and served by ``cycle.Cycle``; routes in ``routes``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from expert_router.backends import BackendSettings, make_backend
from expert_router.config import DEFAULT_CLUSTER, GatewayConfig
from expert_router.errors import ConfigError
from expert_router.gateway.health import HealthChecker
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.gateway.pools import Fleet, Pool, Replica
from expert_router.routing import RoutingPolicy


class PredictionLike(Protocol):
    @property
    def cluster(self) -> int: ...

    @property
    def ranked(self) -> Sequence[int]: ...

    @property
    def scores(self) -> Any: ...


class ClassifierLike(Protocol):
    """What the gateway needs of ``expert_router.classify``'s classifier."""

    @property
    def n_clusters(self) -> int: ...

    def predict(self, text: str) -> PredictionLike: ...


def load_classifier(model: str | None) -> ClassifierLike:
    from expert_router.classify import load

    clf: ClassifierLike = load(model)
    return clf


class Gateway:
    """One gateway instance; ``await start()`` inside the loop, ``await close()`` to stop."""

    def __init__(
        self,
        config: GatewayConfig,
        classifier: ClassifierLike | None = None,
        *,
        multiproc_dir: str | None = None,
        probes: bool = True,
    ) -> None:
        self.config = config
        self.classifier = classifier or load_classifier(config.classifier.model)
        self.metrics = GatewayMetrics(multiproc_dir)
        self.text_mode = config.classifier.text
        self.classify_chars = config.classifier.max_chars
        self.max_body = config.limits.max_body_bytes
        self._keys = [k.encode() for k in config.api_keys]
        self._probes = probes
        self.session: aiohttp.ClientSession | None = None
        self.fleet: Fleet | None = None
        self.health: HealthChecker | None = None
        self.started = time.time()

    def classify(self, text: str) -> PredictionLike:
        """The prediction for a request's text, of which the classifier reads at most
        ``classifier.max_chars`` characters (a shorter text is not copied)."""
        return self.classifier.predict(text[: self.classify_chars])

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.limits.max_connections, limit_per_host=0, keepalive_timeout=30.0
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are not ours to keep
        )
        try:
            self.fleet = self._build_fleet(self.session)
        except BaseException:
            await self.close()  # a config error must not leak the session
            raise
        self.health = HealthChecker(self.fleet, cfg.health)
        if self._probes:
            self.health.start()

    async def close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.fleet is not None:
            for r in self.fleet.replicas.values():
                await r.backend.aclose()
        if self.session is not None:
            await self.session.close()

    def _build_fleet(self, session: aiohttp.ClientSession) -> Fleet:
        cfg = self.config
        n = self.classifier.n_clusters
        for key in cfg.experts:
            if key != DEFAULT_CLUSTER and int(key) >= n:
                raise ConfigError(f"experts.{key}: the classifier has clusters 0..{n - 1} only")
        by_url: dict[str, Replica] = {}
        names: set[str] = set()
        pools: dict[str, Pool] = {}
        built: dict[str, Pool] = {}
        for key, pool_cfg in cfg.experts.items():
            replicas = []
            for rc in pool_cfg.replicas:
                r = by_url.get(rc.url)
                if r is None:
                    settings = BackendSettings(
                        url=rc.url,
                        session=session,
                        connect_timeout=cfg.timeouts.connect,
                        first_byte_timeout=cfg.timeouts.first_byte,
                        read_timeout=cfg.timeouts.read,
                        api_key=rc.api_key,
                        max_chunk_bytes=cfg.limits.max_chunk_bytes,
                    )
                    name = rc.label
                    while name in names:
                        name += "'"
                    names.add(name)
                    r = Replica(
                        name=name,
                        url=rc.url,
                        backend=make_backend(rc.protocol, settings),
                        model=rc.model,
                        max_concurrency=rc.max_concurrency,
                        weight=rc.weight,
                    )
                    by_url[rc.url] = r
                replicas.append(r)
            built[key] = Pool(key, replicas)
        for c in range(n):
            pool = built.get(str(c)) or built.get(DEFAULT_CLUSTER)
            if pool is None:
                raise ConfigError(f"experts: cluster {c} has no pool (add it or a '*' pool)")
            pools[str(c)] = pool
        policy = RoutingPolicy(cfg.spillover.policy, max_distance=cfg.spillover.max_distance)
        return Fleet(
            pools,
            policy,
            self.metrics,
            queue_size=cfg.limits.queue_size,
            queue_timeout=cfg.limits.queue_timeout,
            eject_after=cfg.health.eject_after,
        )

    # -- checks shared by the ingresses -------------------------------------------------------
    @property
    def keys_required(self) -> bool:
        """Requests must carry one of the configured API keys."""
        return bool(self._keys)

    def key_ok(self, header: bytes | None) -> bool:
        """``header`` (an Authorization value, raw bytes) carries a valid key, or none is
        required. The scheme is case-insensitive; any other byte compares as it came."""
        if not self._keys:
            return True
        if header is None:
            return False
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = token.strip()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        return ok
