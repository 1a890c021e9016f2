"""The one table between gRPC status codes and HTTP statuses, both ways.

Application errors follow the mapping of ``google/rpc/code.proto`` (each code's comment names
its HTTP status; grpc-gateway and Envoy use the same): an upstream's HTTP error becomes the
gRPC status a Triton client expects, and a gRPC error the HTTP status an OpenAI client does.
A gRPC *transport* answered with a non-200 HTTP status is another matter, with its own table
(gRPC's ``http-grpc-status-mapping.md``): ``TRANSPORT_STATUS``.
"""

from __future__ import annotations

import grpc

S = grpc.StatusCode

HTTP_FOR_GRPC: dict[grpc.StatusCode, int] = {
    S.OK: 200,
    S.CANCELLED: 499,
    S.UNKNOWN: 500,
    S.INVALID_ARGUMENT: 400,
    S.DEADLINE_EXCEEDED: 504,
    S.NOT_FOUND: 404,
    S.ALREADY_EXISTS: 409,
    S.PERMISSION_DENIED: 403,
    S.RESOURCE_EXHAUSTED: 429,
    S.FAILED_PRECONDITION: 400,
    S.ABORTED: 409,
    S.OUT_OF_RANGE: 400,
    S.UNIMPLEMENTED: 501,
    S.INTERNAL: 500,
    S.UNAVAILABLE: 503,
    S.DATA_LOSS: 500,
    S.UNAUTHENTICATED: 401,
}

_GRPC_FOR_HTTP: dict[int, grpc.StatusCode] = {
    400: S.INVALID_ARGUMENT,
    401: S.UNAUTHENTICATED,
    403: S.PERMISSION_DENIED,
    404: S.NOT_FOUND,
    405: S.UNIMPLEMENTED,
    408: S.DEADLINE_EXCEEDED,
    409: S.ABORTED,
    412: S.FAILED_PRECONDITION,
    413: S.RESOURCE_EXHAUSTED,
    416: S.OUT_OF_RANGE,
    422: S.INVALID_ARGUMENT,
    429: S.RESOURCE_EXHAUSTED,
    499: S.CANCELLED,
    500: S.INTERNAL,
    501: S.UNIMPLEMENTED,
    502: S.UNAVAILABLE,
    503: S.UNAVAILABLE,
    504: S.DEADLINE_EXCEEDED,
}

TRANSPORT_STATUS: dict[int, grpc.StatusCode] = {
    400: S.INTERNAL,
    401: S.UNAUTHENTICATED,
    403: S.PERMISSION_DENIED,
    404: S.UNIMPLEMENTED,
    429: S.UNAVAILABLE,
    502: S.UNAVAILABLE,
    503: S.UNAVAILABLE,
    504: S.UNAVAILABLE,
}
"""The status of a gRPC call whose HTTP/2 response was not 200 (anything else: UNKNOWN)."""


def grpc_for_http(status: int) -> grpc.StatusCode:
    """The gRPC status for an HTTP error status: the table, else by class (other 4xx: the
    request cannot be served as it is, FAILED_PRECONDITION; other 5xx: INTERNAL).

    >>> grpc_for_http(422).name, grpc_for_http(418).name, grpc_for_http(507).name
    ('INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'INTERNAL')
    """
    code = _GRPC_FOR_HTTP.get(status)
    if code is not None:
        return code
    if 400 <= status < 500:
        return S.FAILED_PRECONDITION
    return S.INTERNAL if status >= 500 else S.UNKNOWN


def http_for_grpc(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC status (``google/rpc/code.proto``)."""
    return HTTP_FOR_GRPC.get(code, 500)
