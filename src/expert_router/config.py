"""Pydantic models of the gateway's YAML config, and loaders whose errors name the field.

``load_gateway_config(path)`` reads a file; ``gateway_config_from_experts`` builds the quick
``--expert CLUSTER=URL`` set-up. Every default is documented in docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from expert_router.errors import ConfigError
from expert_router.urls import check_base_url

ClassifyText = Literal["last_user", "all_user", "full"]
SpilloverPolicy = Literal["never", "unhealthy", "saturated"]
DEFAULT_CLUSTER = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassifierConfig(_Strict):
    """Which router model to load and what part of a request it reads."""

    model: str | None = None
    """Directory of a trained classifier; ``None`` = the bundled default model."""
    text: ClassifyText = "last_user"
    """``last_user`` message, ``all_user`` messages joined, or the ``full`` conversation."""
    max_chars: int = Field(default=32_768, ge=1)
    """The classifier reads this many characters of that text at most, from its start (the
    whole text still goes upstream). It bounds the CPU one request holds the event loop for:
    a 7 MB prompt outside ASCII took ~230 ms to classify, 32 KiB (~8k tokens, Llama 3's
    context) takes ~1 ms."""


class ReplicaConfig(_Strict):
    """One expert server."""

    url: str
    """Base URL; its scheme selects the protocol (``http(s)://`` = OpenAI-compatible)."""
    name: str | None = None
    """Label in metrics and headers; defaults to ``host:port``."""
    model: str | None = None
    """Upstream model name written into the request; ``None`` = pass the client's through."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight before the replica counts as saturated; ``None`` = unlimited."""
    weight: float = Field(default=1.0, gt=0)
    """Relative capacity: least-outstanding compares ``outstanding / weight``."""
    api_key: str | None = None
    """Bearer key sent to this upstream (never logged)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_base_url(value)

    @property
    def protocol(self) -> str:
        """The URL scheme, which names the backend (``http``, ``https``, later ``grpc``...)."""
        return urlsplit(self.url).scheme.lower()

    @property
    def label(self) -> str:
        return self.name or urlsplit(self.url).netloc


class PoolConfig(_Strict):
    """The replicas serving one cluster."""

    replicas: list[ReplicaConfig] = Field(min_length=1)


class TimeoutConfig(_Strict):
    """Upstream timeouts in seconds."""

    connect: float = Field(default=5.0, gt=0)
    """Opening a TCP connection to a replica."""
    first_byte: float = Field(default=120.0, gt=0)
    """From sending the request to the upstream's response headers."""
    read: float = Field(default=120.0, gt=0)
    """Longest silence between two chunks of a response."""


class LimitConfig(_Strict):
    """Request limits and the wait queue."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    """Larger request bodies get 413."""
    queue_size: int = Field(default=1024, ge=0)
    """Requests that may wait for a free replica; beyond it, 503 at once."""
    queue_timeout: float = Field(default=10.0, ge=0)
    """Seconds a request waits in the queue before 503 with Retry-After."""
    retries: int = Field(default=2, ge=0)
    """Other replicas tried when one fails before its first byte."""
    max_connections: int = Field(default=0, ge=0)
    """Upstream connection pool size across all replicas; 0 = unlimited."""
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest non-streaming upstream answer the gateway buffers; beyond, 502."""
    max_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest single chunk of a chunked upstream answer; beyond, the upstream is broken."""


class ServerConfig(_Strict):
    """How the gateway serves its clients: every resource a client can hold is bounded.

    The defaults follow nginx 1.22 and grpc where they have one (the reason is given for each);
    a request beyond a size limit is answered with its status and the connection closed.
    """

    head_timeout: float = Field(default=10.0, gt=0)
    """Seconds to receive a whole request head (slowloris); then 408 and close. nginx's
    ``client_header_timeout`` is 60 s; a client on a LAN sends its head in one packet. The
    gRPC ingress gives a new connection as long to send its HTTP/2 preface."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Longest silence while a request body is read; then 408 and close (nginx's
    ``client_body_timeout``, 60 s, measured the same way: between two reads)."""
    idle_timeout: float = Field(default=75.0, gt=0)
    """Seconds a kept-alive connection may wait for its next request (nginx's
    ``keepalive_timeout``); on the gRPC ingress, a connection with no call open (then GOAWAY
    NO_ERROR: clients reconnect for their next call)."""
    drain_timeout: float = Field(default=30.0, ge=0)
    """On SIGTERM/SIGINT, seconds streams in flight may run on before they are ended."""
    max_connections: int = Field(default=4096, ge=1)
    """Open client connections per process. Beyond it requests get 503 (``/health``,
    ``/ready`` and ``/metrics`` are still answered) and connections past it plus a small
    reserve are closed at once, so file descriptors remain for upstreams and probes. Each gRPC
    ingress listener has as many: past it the oldest connection with no call open is closed,
    and with none idle the newcomer is refused (GOAWAY, close: its calls fail UNAVAILABLE)."""
    max_head_bytes: int = Field(default=32 * 1024, ge=1024)
    """Request line plus headers; beyond, 431 (nginx: 4 buffers of 8 KB)."""
    max_headers: int = Field(default=100, ge=1)
    """Header fields in one request; beyond, 431 (aiohttp's and h2's order of magnitude)."""
    write_buffer_bytes: int = Field(default=256 * 1024, ge=4096)
    """Bytes queued for a slow client before the gateway stops reading from its upstream
    (and from the client itself); reading resumes when a quarter is left."""
    http2_max_streams: int = Field(default=100, ge=1)
    """``SETTINGS_MAX_CONCURRENT_STREAMS`` of the gRPC ingress (nginx's
    ``http2_max_concurrent_streams``, 128; grpc's default, 100)."""
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest gRPC message received (grpc's ``max_receive_message_length``, 4 MiB)."""


class SpilloverConfig(_Strict):
    """When a request may go to the next-nearest cluster's pool."""

    policy: SpilloverPolicy = "saturated"
    """``never``; ``unhealthy`` (every replica down); ``saturated`` (down or at max concurrency)."""
    max_distance: int = Field(default=1, ge=0)
    """How far down the ranked clusters a request may spill (1 = the second nearest only)."""


class HealthConfig(_Strict):
    """Active probes and passive ejection."""

    interval: float = Field(default=5.0, gt=0)
    """Seconds between two probes of a replica."""
    timeout: float = Field(default=2.0, gt=0)
    """Seconds a probe may take."""
    path: str = "/health"
    """Probe path; when it answers 404 the probe falls back to ``/v1/models``."""
    eject_after: int = Field(default=3, ge=1)
    """Consecutive failures (requests or probes) that eject a replica."""


class GatewayConfig(_Strict):
    """The whole gateway config file."""

    classifier: ClassifierConfig = ClassifierConfig()
    experts: dict[str, PoolConfig] = Field(min_length=1)
    """Cluster id (``"0"``, ``"1"``...) or ``"*"`` (every cluster without its own) -> pool."""
    model_name: str = "expert-router"
    """The model id the gateway lists on ``GET /v1/models``."""
    api_keys: list[str] = []
    """Bearer keys clients must send; empty = no authentication."""
    timeouts: TimeoutConfig = TimeoutConfig()
    limits: LimitConfig = LimitConfig()
    server: ServerConfig = ServerConfig()
    spillover: SpilloverConfig = SpilloverConfig()
    health: HealthConfig = HealthConfig()
    access_log: bool = False
    """One JSON line per request on the ``expert_router.access`` logger (no prompt text)."""
    access_log_probes: bool = False
    """With ``access_log``, also a line for ``/health``, ``/ready`` and ``/metrics``."""

    @field_validator("experts")
    @classmethod
    def _check_clusters(cls, value: dict[str, PoolConfig]) -> dict[str, PoolConfig]:
        for key in value:
            if key != DEFAULT_CLUSTER and not key.strip().isdigit():
                raise ValueError(f"cluster keys are integers or '*', got {key!r}")
        return {k.strip(): v for k, v in value.items()}

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        if any(not k for k in value):
            raise ValueError("an API key is empty")
        return value


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_gateway_config(data: Any, *, source: str = "config") -> GatewayConfig:
    """Validate a parsed mapping; raises ``ConfigError`` naming the first bad field."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(tuple(first["loc"])) or "(top level)"
        raise ConfigError(f"{source}: {field}: {first['msg']}") from exc


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML gateway config."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return validate_gateway_config(data, source=str(p))


def parse_expert_flags(flags: list[str]) -> dict[str, list[str]]:
    """``["0=http://a", "*=http://b", "0=http://c"]`` -> ``{"0": [a, c], "*": [b]}``."""
    out: dict[str, list[str]] = {}
    for flag in flags:
        cluster, sep, url = flag.partition("=")
        if not sep or not cluster.strip() or not url.strip():
            raise ConfigError(f"--expert {flag!r}: expected CLUSTER=URL (CLUSTER = id or '*')")
        out.setdefault(cluster.strip(), []).append(url.strip())
    return out


def gateway_config_from_experts(
    experts: dict[str, list[str]], *, model: str | None = None, **overrides: Any
) -> GatewayConfig:
    """The config of a quick ``serve --expert CLUSTER=URL`` set-up."""
    data: dict[str, Any] = {
        "classifier": {"model": model},
        "experts": {c: {"replicas": [{"url": u} for u in urls]} for c, urls in experts.items()},
        **overrides,
    }
    return validate_gateway_config(data, source="--expert")
