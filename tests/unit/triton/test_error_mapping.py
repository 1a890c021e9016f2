"""gRPC failures -> BackendError subclasses, and BackendErrors -> gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from expert_router.backends.triton_grpc import parse_target, rpc_error
from expert_router.errors import (
    BackendRefused,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
)
from expert_router.gateway.grpc_ingress import for_error
from expert_router.gateway.responses import status_for
from expert_router.h2.grpc import GrpcError
from expert_router.wire.openai import error_bytes


def _rpc(code: grpc.StatusCode, details: str) -> GrpcError:
    return GrpcError(code, details)


def test_unavailable_and_timeouts_are_retryable_and_refusals_say_down() -> None:
    err = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    assert type(err) is BackendUnavailable and err.retryable
    assert "connection reset" in str(err)
    down = "failed to connect to h:1: Connection refused"  # the lean client's connect failure
    err = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.UNAVAILABLE, down))
    assert isinstance(err, BackendRefused) and err.retryable
    err = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.DEADLINE_EXCEEDED, "slow"))
    assert isinstance(err, BackendTimeout) and err.retryable  # nothing reached the client


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.CANCELLED, 499),
    ],
)
def test_other_codes_become_status_errors(code: grpc.StatusCode, status: int) -> None:
    err = rpc_error("grpc://h:1", _rpc(code, "why"))
    assert isinstance(err, BackendStatusError) and err.status == status
    assert b'"message": "why"' in err.body


@pytest.mark.parametrize(
    "details",
    ["Received message larger than max (5500119 vs. 4194304)",  # grpc-core's words (Triton)
     "message larger than max (5500119 vs. 4194304)"],  # our server's
)  # fmt: skip
def test_a_request_past_the_replicas_message_limit_is_the_requests_fault(details: str) -> None:
    """413, not retried and no back-off, when the size named is the request's; the same words
    about another size (an answer too large for us) stay the replica's 429."""
    err = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.RESOURCE_EXHAUSTED, details), 5500119)
    assert isinstance(err, BackendStatusError) and err.status == 413 and not err.retryable
    assert b'"request_too_large"' in err.body and b'"invalid_request_error"' in err.body
    other = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.RESOURCE_EXHAUSTED, details), 77)
    assert isinstance(other, BackendStatusError) and other.status == 429


def test_a_size_past_any_request_in_a_status_message_stays_the_replicas_429() -> None:
    """A faulty upstream's 5000-digit "size" (``int`` would raise past 4300 digits)."""
    details = f"larger than max ({'9' * 5000} vs. 1)"
    err = rpc_error("grpc://h:1", _rpc(grpc.StatusCode.RESOURCE_EXHAUSTED, details), 5500119)
    assert isinstance(err, BackendStatusError) and err.status == 429


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (BackendUnavailable("refused"), grpc.StatusCode.UNAVAILABLE),
        (BackendTimeout("slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (
            BackendStatusError("x", status=400, body=error_bytes("too long")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (BackendStatusError("x", status=404), grpc.StatusCode.NOT_FOUND),
        (BackendStatusError("x", status=429), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (BackendStatusError("x", status=500), grpc.StatusCode.INTERNAL),
        (BackendStatusError("x", status=422), grpc.StatusCode.INVALID_ARGUMENT),
        (BackendStatusError("x", status=418), grpc.StatusCode.FAILED_PRECONDITION),
        (BackendStatusError("x", status=503), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_backend_errors_map_to_grpc_codes(exc: Exception, code: grpc.StatusCode) -> None:
    assert for_error(exc, status_for(exc)).code == code  # type: ignore[arg-type]


def test_the_expert_message_is_kept() -> None:
    exc = BackendStatusError("x", status=400, body=error_bytes("context too long"))
    err = for_error(exc, 400)
    assert str(err) == "expert answered 400: context too long"


def test_bad_url_options_are_config_errors() -> None:
    assert parse_target("grpc://h:9?model=m")[0] == "h:9"
    with pytest.raises(ConfigError, match="grpc://h:9\\?x=1: unknown Triton URL option 'x'"):
        parse_target("grpc://h:9?x=1")
