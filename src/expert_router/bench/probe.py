"""Before a sweep: is the target a URL, and does anything listen there? And after it: why did
requests fail? Both as one line a person can act on, instead of a sweep of failures.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from expert_router.errors import ConfigError, UsageError
from expert_router.urls import check_base_url, host_port

HTTP_PROTOCOLS = ("openai", "triton-http")


def check_target(target: str, protocol: str) -> str:
    """The target as the protocol's client wants it; ``UsageError`` when it is not a URL
    (``HOST:PORT`` is also accepted for ``triton-grpc``)."""
    text = target.strip()
    if protocol not in HTTP_PROTOCOLS and "://" not in text:
        text = f"grpc://{text}"
    try:
        url = check_base_url(text)
    except ValueError as exc:
        raise UsageError(f"--target: {exc}") from None
    scheme = url.partition("://")[0].lower()
    if protocol in HTTP_PROTOCOLS and scheme not in ("http", "https"):
        raise UsageError(f"--target {target!r}: the {protocol} protocol needs an http(s):// URL")
    return url if protocol in HTTP_PROTOCOLS else target.strip()


def probe(target: str, protocol: str, *, timeout_s: float = 5.0) -> None:
    """Connect once to the target's host and port; ``ConfigError`` saying why when that
    fails (refused, unknown host, timed out)."""
    url = check_target(target, protocol)
    host, port = host_port(url if "://" in url else f"grpc://{url}")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot reach {target}: unknown host {host!r} ({exc.strerror})"
        ) from None
    except TimeoutError:
        raise ConfigError(f"cannot reach {target}: no answer from {host}:{port} within "
                          f"{timeout_s:g} s") from None  # fmt: skip
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(f"cannot reach {target}: {host}:{port}: {why}") from None


def error_reasons(summaries: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Failed requests by reason over every user count and repetition of a sweep."""
    counts: Counter[str] = Counter()
    for s in summaries:
        counts.update((s.get("totals") or {}).get("errors_by_reason") or {})
    return counts


def describe_failures(summaries: list[dict[str, Any]], *, top: int = 3) -> str | None:
    """One line when every request of the sweep failed (``None`` otherwise): how many, and the
    first distinct reasons with their counts."""
    requests = sum(int((s.get("totals") or {}).get("requests", 0)) for s in summaries)
    errors = sum(int((s.get("totals") or {}).get("errors", 0)) for s in summaries)
    if requests == 0 or errors < requests:
        return None
    reasons = error_reasons(summaries).most_common()
    shown = "; ".join(f"{n} x {reason}" for reason, n in reasons[:top])
    more = f"; {len(reasons) - top} other reasons" if len(reasons) > top else ""
    return f"all {requests} requests failed: {shown}{more}"
