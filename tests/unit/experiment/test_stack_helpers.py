"""Small helpers of the study orchestration."""

from __future__ import annotations

from expert_router.experiment.demo import _users
from expert_router.experiment.stack import per_cluster


def test_per_cluster_maps_cluster_i_to_expert_i() -> None:
    assert per_cluster(["http://a", "http://b"]) == {"0": ["http://a"], "1": ["http://b"]}


def test_users_are_shortened() -> None:
    assert _users((1, 100, 200, 300, 1000)) == "1, 100, ..., 1000"
    assert _users((1, 8)) == "1, 8"
