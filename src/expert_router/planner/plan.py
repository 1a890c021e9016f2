"""One planning run: inputs in, the frontier and its baselines out.

``make_plan`` spreads the users over clusters as a live run's draw does (or splits them in
exact proportion), prices the pools the search will likely need in one parallel batch, runs
the search up to the GPUs available, and prices two baselines at every GPU count of the
frontier: the uniform allocation (the same replicas per cluster, whatever the mix) and tensor
parallelism (every user on ``gpus // T`` engines of a T-GPU preset, no routing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from expert_router.emulator.catalog import PRESETS
from expert_router.emulator.presets import Preset
from expert_router.emulator.virtual import SimWorkload
from expert_router.errors import ConfigError
from expert_router.planner import slo
from expert_router.planner.predict import Prediction, predict
from expert_router.planner.pricing import PoolKey, Pricer
from expert_router.planner.search import Alloc, Point, Search, Space

TP_DEGREES = (8, 4, 2)


@dataclass(frozen=True)
class PlanInputs:
    """What to plan for."""

    gpus: int
    options: tuple[tuple[Preset, ...], ...]
    """Per cluster, the presets it may run (the first is its default)."""
    weights: tuple[float, ...]
    """The topic mix: each cluster's share of users (sums to 1)."""
    workload: SimWorkload
    """Users (``workload.users``), prompt and answer lengths, turns, ramp, seed."""
    targets: tuple[slo.Target, ...] = ()
    baseline: Preset | None = None
    draws: int = 2
    """Users per cluster as a live run's draw spreads them, in pairs around the mix
    (``draw_users``; each one run, metrics averaged); 0: exact shares, one run."""
    jobs: int = 1
    mix: str = ""
    """The mix in words (where it came from)."""


@dataclass
class Plan:
    """The search's frontier, the chosen allocation and the baselines beside it."""

    inputs: PlanInputs
    space: Space
    presets: dict[str, Preset]
    frontier: list[Point]
    uniform: dict[int, Point]
    tensor_parallel: dict[int, Point]
    """GPU count -> the baseline (one pool, ``alloc`` = ((preset id, engines),))."""
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Point:
        return self.frontier[-1]

    def meets(self, point: Point) -> bool:
        return slo.met(self.inputs.targets, point.prediction.metrics)

    def smallest_meeting(self) -> Point | None:
        """The frontier's smallest GPU count whose allocation meets every target."""
        if not self.inputs.targets:
            return None
        return next((p for p in self.frontier if self.meets(p)), None)


def split_users(weights: Sequence[float], users: int) -> tuple[int, ...]:
    """Users per cluster in proportion to ``weights`` (largest remainders; sums to ``users``).

    >>> split_users([0.5, 0.3, 0.2], 7)
    (4, 2, 1)
    """
    raw = np.asarray(weights, dtype=np.float64) * users
    out = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - out), kind="stable")
    out[order[: users - int(out.sum())]] += 1
    return tuple(int(x) for x in out)


def draw_users(weights: Sequence[float], users: int, draws: int, seed: int) -> tuple[
    tuple[int, ...], ...
]:  # fmt: skip
    """Users per cluster in each of ``draws`` draws, in pairs around the mix: in a pair,
    every cluster is one standard deviation of a live run's random draw (binomial,
    ``sqrt(U p (1 - p))``) above its share in one draw and below it in the other, half the
    clusters up in each (pair 0 alternates by index, later pairs pick their halves at
    random; the larger half's deviations shrink so that the users add up). A pair averages
    to the mix, clusters of equal share are treated alike, and the tails see the spread a
    live run's draw has. ``draws=0``: the exact split alone.

    >>> draw_users([0.25] * 4, 400, 2, seed=0)
    ((109, 91, 109, 91), (91, 109, 91, 109))
    """
    if draws == 0:
        return (split_users(weights, users),)
    w = np.asarray(weights, dtype=np.float64)
    deviation = np.sqrt(users * w * (1 - w))
    halves = np.arange(len(w)) % 2 == 0
    rng = np.random.default_rng([seed, users])
    out: list[tuple[int, ...]] = []
    for j in range((draws + 1) // 2):
        up = halves if j == 0 else rng.permutation(halves)
        rise, fall = float(deviation[up].sum()), float(deviation[~up].sum())
        both = min(rise, fall)
        dev = np.where(
            up, deviation * both / max(rise, 1e-12), -deviation * both / max(fall, 1e-12)
        )
        for sign in (1.0, -1.0):
            counts = np.rint(w * users + sign * dev)
            out.append(_total(np.maximum(counts, 0).astype(np.int64), users))
    return tuple(out[:draws])


def _total(counts: np.ndarray, users: int) -> tuple[int, ...]:
    """``counts`` with the largest cluster taking up the rounding, so they sum to ``users``."""
    counts[int(np.argmax(counts))] += users - int(counts.sum())
    return tuple(int(x) for x in counts)


def tp_baseline(preset: Preset, gpus: int) -> Preset | None:
    """The tensor-parallel baseline of ``preset`` on up to ``gpus`` GPUs: the catalog's own
    counterpart (same model and types, more GPUs) when it has one, else the preset split over
    T = 8, 4 or 2 GPUs with T times its batch and stated KV cache. None when none fits."""
    shape = preset.shape
    for t in TP_DEGREES:
        if t > gpus or t <= preset.tp or shape.heads % t or shape.ffn % t:
            continue
        for p in PRESETS.values():
            same = (p.model, p.weight_dtype, p.kv_dtype, p.gpu) == (
                preset.model, preset.weight_dtype, preset.kv_dtype, preset.gpu)  # fmt: skip
            if same and p.tp == t and p.tpot_ms is None and preset.tpot_ms is None:
                return p
        k = t // preset.tp
        return preset.with_overrides(
            name=f"{preset.name}-tp{t}",
            model_name=f"{preset.model_name}-tp{t}",
            description=f"{preset.name} split over {t} GPUs (tensor parallel)",
            tp=t,
            max_batch=preset.max_batch * k,
            kv_tokens=preset.kv_tokens * k if preset.kv_tokens else None,
            kv_gb=preset.kv_gb * k if preset.kv_gb else None,
        )
    return preset if preset.tp <= gpus else None


def _register(options: Sequence[Sequence[Preset]], extra: Preset | None) -> dict[str, Preset]:
    """Presets by id (their names; a different preset of the same name gets ``#2``...)."""
    out: dict[str, Preset] = {}
    for p in [q for opts in options for q in opts] + ([extra] if extra else []):
        if any(v == p for v in out.values()):
            continue
        name, k = p.name, 2
        while name in out:
            name, k = f"{p.name}#{k}", k + 1
        out[name] = p
    return out


def _id(presets: dict[str, Preset], preset: Preset) -> str:
    return next(k for k, v in presets.items() if v == preset)


def uniform_alloc(space: Space, gpus: int) -> Alloc:
    """The same replicas for every cluster (its default preset), whatever the mix; GPUs left
    over go one replica each to the first clusters."""
    alloc = [(opts[0], 1) for opts in space.options]
    while True:
        grown = False
        for c, (p, n) in enumerate(alloc):
            if space.gpus(tuple(alloc)) + space.tp[p] <= gpus:
                alloc[c] = (p, n + 1)
                grown = True
        if not grown:
            return tuple(alloc)


def _prefetch(space: Space, gpus: int) -> list[PoolKey]:
    """The pools the search will likely price: for each cluster, its default preset from one
    replica to a little past its share of the GPUs (priced in one parallel batch)."""
    mean = space.users
    total = sum(mean) or 1
    keys = []
    for c, opts in enumerate(space.options):
        p = opts[0]
        share = mean[c] / total * gpus / space.tp[p]
        for draw in space.draws:
            keys += [(p, draw[c], n) for n in range(1, int(share * 1.25) + 3)]
    return keys


def make_plan(
    inputs: PlanInputs,
    *,
    on_pools: Callable[[int], None] = lambda _n: None,
    on_placed: Callable[[int], None] = lambda _g: None,
) -> Plan:
    """Search the allocation of ``inputs.gpus`` GPUs; ``on_pools(n)`` as pools are simulated,
    ``on_placed(g)`` as the frontier reaches ``g`` GPUs."""
    t0 = time.perf_counter()
    w = inputs.workload
    draws = draw_users(inputs.weights, w.users, inputs.draws, w.seed)
    presets = _register(inputs.options, inputs.baseline)
    options = tuple(tuple(_id(presets, p) for p in opts) for opts in inputs.options)
    space = Space(draws, options, {k: p.tp for k, p in presets.items()})
    if space.gpus(space.smallest()) > inputs.gpus:
        raise ConfigError(
            f"--gpus: {inputs.gpus} GPUs cannot hold one replica for each of the "
            f"{space.clusters} clusters (that needs {space.gpus(space.smallest())})"
        )
    pricer = Pricer(presets, w, jobs=inputs.jobs, on_simulated=on_pools)
    try:
        pricer.price(_prefetch(space, inputs.gpus))
        search = Search(space, pricer, inputs.targets, on_placed=on_placed)
        frontier = search.run(inputs.gpus)
        t_search = time.perf_counter() - t0
        uniform = {p.gpus: uniform_alloc(space, p.gpus) for p in frontier}
        preds = search.evaluate_many(list(uniform.values()))
        uniform_points = {g: Point(g, a, pr) for (g, a), pr in zip(uniform.items(), preds,
                                                                   strict=True)}  # fmt: skip
        tp = _tensor_parallel(inputs, presets, pricer, search, [p.gpus for p in frontier])
    finally:
        pricer.close()
    return Plan(inputs, space, presets, frontier, uniform_points, tp, timing={
        "wall_s": time.perf_counter() - t0,
        "search_wall_s": t_search,
        "pools_simulated": pricer.simulated,
        "pool_sim_cpu_s": pricer.sim_wall_s,
        "allocations_priced": len(search._predictions),
        "jobs": inputs.jobs,
    })  # fmt: skip


def _tensor_parallel(
    inputs: PlanInputs, presets: dict[str, Preset], pricer: Pricer, search: Search,
    gpus: Sequence[int],
) -> dict[int, Point]:  # fmt: skip
    """The baseline at every GPU count of ``gpus`` that holds whole engines of it."""
    if inputs.baseline is None:
        return {}
    pid = _id(presets, inputs.baseline)
    t = inputs.baseline.tp
    counts = sorted({g - g % t for g in gpus if g >= t})
    keys = {g: (pid, inputs.workload.users, g // t) for g in counts}
    pricer.price(keys.values())
    out = {}
    for g, key in keys.items():
        pred: Prediction = predict([[pricer.cache[key]]], thresholds=search.thresholds)
        out[g] = Point(g, ((pid, key[2]),), pred)
    return out
