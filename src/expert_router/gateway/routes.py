"""The gateway's routes: which paths exist, their methods and checks, and the answers of the
ones that are not proxied (models, route, health, ready, metrics).

``ROUTES`` is read by the HTTP ingress while a request head is parsed (authorisation and the
connection cap are decided before the body is read); the proxy routes go to a ``Cycle`` with
an ``HttpProxyRequest``. Answers are plain data; the ingress writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from expert_router.backends import BackendRequest
from expert_router.errors import RequestError
from expert_router.gateway.pools import Replica
from expert_router.gateway.responses import error_for, json_bytes
from expert_router.wire.openai import ParsedRequest, TextMode, classify_text, parse_body, with_model

if TYPE_CHECKING:
    from expert_router.gateway.app import Gateway
    from expert_router.gateway.http_front import HttpFrontend

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole response of the gateway's own."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    log: bool = True
    """Written to the access log (probes only when ``access_log_probes``)."""


Handler = Callable[["Gateway", "HttpFrontend", bytes], Answer]
PROXY: Any = object()  # the handler of the two proxy routes: a Cycle serves them


@dataclass(frozen=True, slots=True)
class Route:
    methods: tuple[bytes, ...]
    handler: Handler
    auth: bool = False
    """Needs ``Authorization: Bearer <key>`` when the gateway has keys."""
    probe: bool = False
    """Answered even past ``server.max_connections``; logged only with ``access_log_probes``."""


class HttpProxyRequest:
    """An OpenAI request read by the HTTP ingress, as a ``Cycle`` needs it."""

    __slots__ = ("route", "text", "stream", "parsed", "body")

    def __init__(self, route: str, parsed: ParsedRequest, body: bytes, mode: TextMode) -> None:
        self.route = route
        self.parsed = parsed
        self.body = body
        self.stream = parsed.stream
        self.text = classify_text(parsed, mode)

    def upstream(self, replica: Replica) -> BackendRequest:
        body = with_model(self.parsed, self.body, replica.model)
        return BackendRequest(self.route, body, self.stream)


def models(gw: Gateway, front: HttpFrontend, body: bytes) -> Answer:
    ids = [gw.config.model_name]
    assert gw.fleet is not None
    for r in gw.fleet.replicas.values():
        if r.model and r.model not in ids:
            ids.append(r.model)
    created = int(gw.started)
    data = [
        {"id": i, "object": "model", "created": created, "owned_by": owner}
        for i, owner in zip(ids, ["expert-router"] + ["upstream"] * len(ids), strict=False)
    ]
    return Answer(200, json_bytes({"object": "list", "data": data}))


def route(gw: Gateway, front: HttpFrontend, body: bytes) -> Answer:
    """The classification and the replica that would be chosen; no upstream call."""
    try:
        parsed = parse_body(body, None)  # a chat when the object has "messages"
    except RequestError as exc:
        status, err, _ = error_for(exc)
        return Answer(status, err)
    t0 = time.perf_counter()
    pred = gw.classify(classify_text(parsed, gw.text_mode))
    classify_ms = (time.perf_counter() - t0) * 1000
    assert gw.fleet is not None
    d = gw.fleet.decide(pred)
    r = gw.fleet.replicas.get(d.replica or "")
    return Answer(
        200,
        json_bytes(
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
        ),
    )


def live(gw: Gateway, front: HttpFrontend, body: bytes) -> Answer:
    return Answer(200, json_bytes({"status": "ok"}), log=gw.config.access_log_probes)


def ready(gw: Gateway, front: HttpFrontend, body: bytes) -> Answer:
    assert gw.fleet is not None
    healthy = sum(r.healthy for r in gw.fleet.replicas.values())
    if front.draining:
        data: dict[str, Any] = {"status": "draining", "healthy_replicas": healthy}
        return Answer(503, json_bytes(data), log=gw.config.access_log_probes)
    data = {"status": "ready" if healthy else "unavailable", "healthy_replicas": healthy}
    return Answer(200 if healthy else 503, json_bytes(data), log=gw.config.access_log_probes)


def metrics(gw: Gateway, front: HttpFrontend, body: bytes) -> Answer:
    return Answer(
        200, gw.metrics.render(), gw.metrics.content_type, log=gw.config.access_log_probes
    )


GET, POST = (b"GET", b"HEAD"), (b"POST",)
ROUTES: dict[bytes, Route] = {
    b"/v1/chat/completions": Route(POST, PROXY, auth=True),
    b"/v1/completions": Route(POST, PROXY, auth=True),
    b"/v1/models": Route(GET, models, auth=True),
    b"/v1/route": Route(POST, route, auth=True),
    b"/health": Route(GET, live, probe=True),
    b"/ready": Route(GET, ready, probe=True),
    b"/metrics": Route(GET, metrics, probe=True),
}
KNOWN = "routes: " + ", ".join(p.decode() for p in ROUTES)
