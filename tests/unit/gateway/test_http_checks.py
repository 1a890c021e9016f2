"""The head checks llhttp leaves to the gateway: the Host rule, with its bounded memory."""

from __future__ import annotations

import pytest

from expert_router.gateway import http_checks
from expert_router.gateway.http_checks import MAX_KNOWN_HOSTS, Refusal, check_head


def test_a_host_is_checked_once_and_an_invalid_one_every_time() -> None:
    http_checks._known_hosts.clear()
    check_head("1.1", [b"gateway:8000"], None)
    assert b"gateway:8000" in http_checks._known_hosts
    for _ in range(2):
        with pytest.raises(Refusal, match="not a host"):
            check_head("1.1", [b"a b"], None)
    assert b"a b" not in http_checks._known_hosts
    with pytest.raises(Refusal, match="exactly one Host"):
        check_head("1.1", [b"gateway:8000", b"gateway:8000"], None)  # known or not


def test_the_memory_of_hosts_is_bounded() -> None:
    for i in range(MAX_KNOWN_HOSTS * 2 + 3):
        check_head("1.1", [b"host-%d" % i], None)
        assert len(http_checks._known_hosts) <= MAX_KNOWN_HOSTS
