"""The search against enumeration: on small fleets every allocation is priced and the
search must reach the best one; and the pieces the search stands on."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import SimWorkload
from expert_router.planner import slo
from expert_router.planner.plan import (
    PlanInputs,
    draw_users,
    make_plan,
    split_users,
    tp_baseline,
    uniform_alloc,
)
from expert_router.planner.pricing import Pricer
from expert_router.planner.search import Alloc, Search, Space, compare, objective

W = SimWorkload(users=1, output_tokens=30, base_tokens=60, continuation_tokens=160, jitter=6)
TINY = get_preset("cpu-tiny", max_batch=2)
WIDE = TINY.with_overrides(name="tiny-tp2", tp=2, max_batch=5)


def _space(users: tuple[int, ...], options: tuple[tuple[str, ...], ...]) -> Space:
    return Space((users,), options, {"tiny": 1, "tiny-tp2": 2})


def _all(space: Space, gpus: int) -> Iterator[Alloc]:
    """Every allocation with at least one replica per cluster within ``gpus``."""
    per_cluster = [
        [(p, n) for p in opts for n in range(1, gpus // space.tp[p] + 1)] for opts in space.options
    ]
    for alloc in itertools.product(*per_cluster):
        if space.gpus(alloc) <= gpus:
            yield alloc


def _best(search: Search, space: Space, gpus: int) -> tuple[float, ...]:
    allocs = list(_all(space, gpus))
    scores = [objective(p, search.targets) for p in search.evaluate_many(allocs)]
    best = scores[0]
    for s in scores[1:]:
        if compare(s, best, best) > 0:
            best = s
    return best


CASES = {
    "skewed, one preset": ((14, 5, 3), (("tiny",),) * 3, 7, ()),
    "two heavy clusters": ((9, 9, 2, 2), (("tiny",),) * 4, 8, ()),
    "with targets": ((14, 5, 3), (("tiny",),) * 3, 7, ("p99_response<=2s", "ttft_p99<=0.6s")),
    "mixed sizes": ((14, 5, 3), (("tiny", "tiny-tp2"), ("tiny",), ("tiny",)), 7, ()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_search_finds_the_enumerated_optimum(case: str) -> None:
    users, options, gpus, targets = CASES[case]
    space = _space(users, options)
    pricer = Pricer({"tiny": TINY, "tiny-tp2": WIDE}, W)
    parsed = [t for text in targets for t in slo.parse_slo(text)]
    search = Search(space, pricer, parsed)
    frontier = search.run(gpus)
    found = objective(frontier[-1].prediction, parsed)
    best = _best(search, space, gpus)
    assert compare(found, best, best) == 0, (frontier[-1].alloc, case)
    assert frontier[-1].gpus <= gpus
    assert [p.gpus for p in frontier] == sorted({p.gpus for p in frontier})


def test_marginal_gain_gives_the_busiest_cluster_the_first_replica() -> None:
    space = _space((14, 2, 2), (("tiny",),) * 3)
    search = Search(space, Pricer({"tiny": TINY}, W))
    grown = search.grow(space.smallest(), 4)
    assert grown == (("tiny", 2), ("tiny", 1), ("tiny", 1))


def test_the_frontier_is_nested_and_its_gpus_grow() -> None:
    space = _space((10, 4, 2), (("tiny",),) * 3)
    frontier = Search(space, Pricer({"tiny": TINY}, W)).run(7)
    assert frontier[0].gpus == 3 and frontier[-1].gpus == 7
    assert all(b.gpus > a.gpus for a, b in itertools.pairwise(frontier))


def test_neighbours_move_one_step_of_capacity_within_the_budget() -> None:
    space = _space((5, 5), (("tiny", "tiny-tp2"), ("tiny",)))
    search = Search(space, Pricer({"tiny": TINY, "tiny-tp2": WIDE}, W))
    alloc: Alloc = (("tiny", 2), ("tiny", 2))
    moves = set(search.neighbours(alloc, 4))
    assert (("tiny", 1), ("tiny", 3)) in moves  # one replica from cluster 0 to cluster 1
    assert (("tiny", 3), ("tiny", 1)) in moves
    assert (("tiny-tp2", 1), ("tiny", 2)) in moves  # a switch of preset on the same GPUs
    assert all(space.gpus(a) <= 4 for a in moves) and alloc not in moves


def test_draws_spread_users_in_pairs_around_the_mix() -> None:
    weights = [0.4, 0.3, 0.2, 0.1]
    draws = draw_users(weights, 1000, 4, seed=7)
    sd = np.sqrt(1000 * np.array(weights) * (1 - np.array(weights)))
    for a, b in (draws[0:2], draws[2:4]):
        assert sum(a) == sum(b) == 1000
        assert np.abs((np.array(a) + np.array(b)) / 2 - 1000 * np.array(weights)).max() <= 1
        dev = np.abs(np.array(a) - 1000 * np.array(weights))
        assert (dev <= sd + 1).all() and (dev >= 0.5 * sd - 1).all()  # about one sd each
    assert draws[0][0] > 400 > draws[1][0]  # pair 0: even clusters up first
    # clusters of equal share are treated alike: a pair holds the same counts for each
    even = draw_users([0.25] * 4, 400, 2, seed=0)
    assert sorted(even[0]) == sorted(even[1]) and {even[0][0], even[1][0]} == {109, 91}
    assert draw_users(weights, 1000, 0, seed=7) == (split_users(weights, 1000),)


def test_split_users_is_proportional_and_complete() -> None:
    assert split_users([0.5, 0.25, 0.25], 10) == (5, 3, 2)
    assert sum(split_users([0.1] * 10, 999)) == 999
    assert split_users([1.0, 0.0], 3) == (3, 0)


def test_uniform_ignores_the_mix() -> None:
    space = _space((100, 1, 1), (("tiny",),) * 3)
    assert uniform_alloc(space, 7) == (("tiny", 3), ("tiny", 2), ("tiny", 2))
    assert uniform_alloc(space, 3) == (("tiny", 1),) * 3


def test_the_tensor_parallel_baseline() -> None:
    awq = get_preset("v2-70b-awq")
    base = tp_baseline(awq, 64)
    assert base is not None and base.name == "v2-tp8-awq"  # the catalog's own counterpart
    c = get_preset("C")
    derived = tp_baseline(c, 4)
    assert derived is not None and derived.tp == 4 and derived.max_batch == 4 * c.max_batch
    assert derived.kv_tokens == 4 * (c.kv_tokens or 0)
    assert tp_baseline(c, 1) is c  # one GPU: the preset itself, unsplit


def test_make_plan_reports_baselines_at_every_frontier_point() -> None:
    inputs = PlanInputs(
        gpus=6, options=((TINY,),) * 3, weights=(0.6, 0.3, 0.1),
        workload=dataclasses.replace(W, users=20),
        baseline=tp_baseline(TINY, 6), jobs=1,
    )  # fmt: skip
    plan = make_plan(inputs)
    assert plan.best.gpus == 6
    assert set(plan.uniform) == {p.gpus for p in plan.frontier}
    assert sorted(plan.tensor_parallel) == [4]  # one 4-GPU engine fits in 4..6 GPUs
    assert plan.timing["pools_simulated"] > 0 and plan.smallest_meeting() is None
