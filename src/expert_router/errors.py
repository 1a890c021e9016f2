"""The exception tree of Expert Router. Status codes live in the gateway, not here.

ExpertRouterError
├── ConfigError            a config file or flag is invalid (names the field)
│   └── UsageError         a command-line argument is invalid (the CLI exits 2, not 1)
├── ArtifactError          a classifier artifact is missing, corrupt or of another version
├── CorpusError            a training/evaluation corpus cannot be read (names file and line)
├── RequestError           a client request is malformed (names the field)
├── RoutingError           no replica can take the request
│   ├── NoCapacity         every candidate is saturated and the wait queue timed out
│   └── ShuttingDown       the gateway stopped before the answer was complete
└── BackendError           an upstream expert failed (raised inside backends/ only)
    ├── BackendUnavailable     could not connect / no first byte: safe to retry elsewhere
    │   └── BackendRefused         connection refused: the replica is down (ejected at once)
    ├── BackendTimeout         the upstream did not answer in time (retryable)
    ├── BackendStatusError     the upstream answered with an error status (429/5xx: retryable)
    └── BackendProtocolError   the upstream answered something we cannot parse (retryable)
        └── BackendTooLarge        a non-streaming answer over the size the gateway buffers
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ExpertRouterError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(ExpertRouterError):
    """A configuration value is invalid; the message names the field."""


class UsageError(ConfigError):
    """A command-line argument (or a combination of them) is invalid; names the flag."""


def invalid(exc: ValidationError, where: str) -> ConfigError:
    """A one-line ``ConfigError`` naming ``where`` and the first invalid field of ``exc``.

    A model-level check names its field as its message's first word (``"field: why"``).
    """
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    if not field and ": " in msg:
        field, msg = msg.split(": ", 1)
    return ConfigError(f"{where}: {field or 'value'}: {msg}")


class ArtifactError(ExpertRouterError):
    """A classifier artifact cannot be loaded; the message names the file."""


class CorpusError(ExpertRouterError):
    """A corpus record cannot be read; the message names the file and line."""


class RequestError(ExpertRouterError):
    """A client request is malformed; ``param`` names the field, ``code`` the kind of error
    (``invalid_request`` unless said otherwise, e.g. ``invalid_json``)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str = "invalid_request"
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class RoutingError(ExpertRouterError):
    """No replica can take the request."""


class ShuttingDown(RoutingError):
    """The gateway is stopping: the request was ended before its answer was complete."""


class NoCapacity(RoutingError):
    """Every candidate replica is saturated and the wait queue timed out."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(ExpertRouterError):
    """An upstream expert failed."""

    retryable: bool = False


class BackendUnavailable(BackendError):
    """The upstream could not be reached or sent nothing: safe to retry on another replica."""

    retryable = True


class BackendRefused(BackendUnavailable):
    """Nothing listens where the replica should be (connection refused): it is down now,
    not slow; the replica is ejected at once, and the probe re-admits it."""


class BackendTimeout(BackendError):
    """The upstream did not answer in time (another replica may)."""

    retryable = True


class BackendStatusError(BackendError):
    """The upstream answered with an error status; ``body`` is its error payload and
    ``retry_after`` its ``Retry-After`` in seconds, when it sent one."""

    def __init__(
        self, message: str, *, status: int, body: bytes = b"", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.retryable = status in (429, 502, 503, 504)  # busy or unreachable: ask another


class BackendProtocolError(BackendError):
    """The upstream answered something that does not parse (another replica may not)."""

    retryable = True


class BackendTooLarge(BackendProtocolError):
    """The upstream's answer is larger than the gateway buffers (another would be too)."""

    retryable = False
