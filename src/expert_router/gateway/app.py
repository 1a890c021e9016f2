"""The gateway object: builds pools and backends from the config, owns the upstream session,
the health checker and the metrics, and serves the non-proxy routes (models, route, health,
ready, metrics, 404). The proxy routes themselves live in ``gateway/proxy.py``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from expert_router.backends import (
    BackendRequest,
    BackendSettings,
    UpstreamResponse,
    make_backend,
)
from expert_router.config import DEFAULT_CLUSTER, GatewayConfig
from expert_router.errors import BackendError, ConfigError, RequestError, RoutingError
from expert_router.gateway.health import HealthChecker
from expert_router.gateway.metrics import GatewayMetrics
from expert_router.gateway.pools import Fleet, Pool, Replica
from expert_router.gateway.responses import error_response, json_response
from expert_router.routing import RouteDecision, RoutingPolicy
from expert_router.wire.openai import ParsedRequest, classify_text, parse_body, with_model

U = TypeVar("U")


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
        self.max_body = config.limits.max_body_bytes
        self._keys = [k.encode() for k in config.api_keys]
        self._probes = probes
        self.session: aiohttp.ClientSession | None = None
        self.fleet: Fleet | None = None
        self.health: HealthChecker | None = None
        self.started = time.time()

    # -- the hot path's first step, shared by the HTTP ingresses -----------------------------
    def predict(self, parsed: ParsedRequest) -> PredictionLike:
        return self.classifier.predict(classify_text(parsed, self.text_mode))

    def timed(
        self, headers: dict[str, str], pred: PredictionLike, t1: float, t2: float, t3: float
    ) -> None:
        """Account a classification (``t1``..``t2``) and a routing step (``t2``..``t3``): the
        classify histogram, the cluster and ``Server-Timing`` headers."""
        self.metrics.classify_seconds.observe(t2 - t1)
        headers["x-expert-router-cluster"] = str(pred.cluster)
        headers["Server-Timing"] = (
            f"classify;dur={(t2 - t1) * 1000:.3f}, route;dur={(t3 - t2) * 1000:.3f}"
        )

    async def classify_and_acquire(
        self, parsed: ParsedRequest, headers: dict[str, str]
    ) -> tuple[PredictionLike, RouteDecision]:
        """Classify the request and reserve a replica; raises ``RoutingError`` when none can
        take it. Sets ``x-expert-router-cluster`` and ``Server-Timing`` in ``headers`` either way.
        """
        t1 = time.perf_counter()
        pred = self.predict(parsed)
        t2 = time.perf_counter()
        return pred, await self.acquire(pred, headers, t1, t2)

    async def acquire(
        self, pred: PredictionLike, headers: dict[str, str], t1: float, t2: float
    ) -> RouteDecision:
        """Reserve a replica for a request classified between ``t1`` and ``t2``; accounted by
        ``timed`` either way."""
        assert self.fleet is not None
        try:
            return await self.fleet.acquire(pred)
        finally:
            self.timed(headers, pred, t1, t2, time.perf_counter())

    async def start_upstream(
        self,
        path: str,
        parsed: ParsedRequest,
        body: bytes,
        pred: PredictionLike,
        decided: list[RouteDecision],
        headers: dict[str, str],
        t0: float,
        failed: BackendError | None = None,
        *,
        observe: bool = True,
    ) -> tuple[Replica, UpstreamResponse, float]:
        """Send an OpenAI request to ``decided[0]``'s reserved replica, with ``start_on``'s
        retries; the cluster/replica headers name the last replica tried."""

        def send(replica: Replica) -> Awaitable[UpstreamResponse]:
            headers["x-expert-router-cluster"] = decided[0].cluster
            headers["x-expert-router-replica"] = replica.name
            breq = BackendRequest(path, with_model(parsed, body, replica.model), parsed.stream)
            return replica.backend.start(breq)

        return await self.start_on(pred, decided, t0, send, failed, observe=observe)

    async def start_on(
        self,
        pred: PredictionLike,
        decided: list[RouteDecision],
        t0: float,
        send: Callable[[Replica], Awaitable[U]],
        failed: BackendError | None = None,
        *,
        observe: bool = True,
    ) -> tuple[Replica, U, float]:
        """``send`` the request to ``decided[0]``'s (reserved) replica; before the first byte,
        retry on other replicas, ``limits.retries`` times at most.

        ``failed``: the first attempt was made elsewhere (the callback relay) and failed so;
        ``observe=False``: the gateway's overhead was counted already. Returns the replica
        (still reserved: the caller releases it), what ``send`` returned and the time the
        request left. Raises the last ``BackendError`` when no replica answers; ``decided[0]``
        always names the last replica tried.
        """
        fleet = self.fleet
        assert fleet is not None
        exclude: list[str] = []
        while True:
            decision = decided[0]
            assert decision.replica is not None
            replica = fleet.replicas[decision.replica]
            t_sent = time.perf_counter()
            if observe and not exclude and failed is None:
                self.metrics.overhead_seconds.observe(t_sent - t0)
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                return replica, await send(replica), t_sent
            except BackendError as exc:
                fleet.release(replica)
                fleet.record_failure(replica, type(exc).__name__)
                if not exc.retryable or len(exclude) >= self.config.limits.retries:
                    raise
                exclude.append(replica.name)
                self.metrics.retries.labels(replica.name).inc()
                try:
                    decided[0] = await fleet.acquire(pred, exclude)
                except RoutingError:
                    raise exc from None
            except BaseException:
                fleet.release(replica)
                raise

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

    # -- shared helpers ----------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        if not self._keys:
            return True
        return self.key_ok(request.headers.get("Authorization", ""))

    def key_ok(self, header: str) -> bool:
        """``header`` (an Authorization value) carries a valid key, or none is required."""
        if not self._keys:
            return True
        if not header.startswith("Bearer "):
            return False
        given = header[7:].strip().encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        return ok

    @staticmethod
    def unauthorized(headers: dict[str, str] | None = None) -> web.Response:
        return error_response(
            401,
            "Incorrect or missing API key. Send 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers=headers,
        )

    # -- routes ------------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return self.unauthorized()
        ids = [self.config.model_name]
        assert self.fleet is not None
        for r in self.fleet.replicas.values():
            if r.model and r.model not in ids:
                ids.append(r.model)
        created = int(self.started)
        data = [
            {"id": i, "object": "model", "created": created, "owned_by": owner}
            for i, owner in zip(ids, ["expert-router"] + ["upstream"] * len(ids), strict=False)
        ]
        return json_response({"object": "list", "data": data})

    async def route(self, request: web.Request) -> web.Response:
        """Classification and the replica that would be chosen; no upstream call."""
        if not self.authorized(request):
            return self.unauthorized()
        body = await request.read()
        try:
            parsed = parse_body(body, "chat" if b'"messages"' in body else "completion")
        except RequestError as exc:
            return error_response(400, str(exc), param=exc.param, code="invalid_request")
        t0 = time.perf_counter()
        pred = self.classifier.predict(classify_text(parsed, self.text_mode))
        classify_ms = (time.perf_counter() - t0) * 1000
        assert self.fleet is not None
        d = self.fleet.decide(pred)
        r = self.fleet.replicas.get(d.replica or "")
        return json_response(
            {
                "cluster": d.cluster,
                "nearest": d.nearest,
                "ranked": [int(c) for c in pred.ranked],
                "scores": [float(s) for s in pred.scores],
                "replica": d.replica,
                "url": r.url if r else None,
                "reason": d.reason,
                "classify_ms": classify_ms,
            }
        )

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        assert self.fleet is not None
        healthy = sum(r.healthy for r in self.fleet.replicas.values())
        body = {"status": "ready" if healthy else "unavailable", "healthy_replicas": healthy}
        return json_response(body, 200 if healthy else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type}
        )

    async def not_found(self, request: web.Request) -> web.Response:
        return error_response(
            404, f"Unknown route: {request.method} {request.path}", code="unknown_url"
        )
