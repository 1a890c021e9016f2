"""The allocation search: which preset and how many replicas per cluster, GPU by GPU.

Marginal gain: from one replica per cluster, each step prices every way to give one cluster
its next larger pool (per preset it may run) and takes the best gain per GPU; after each step
a local search moves capacity between two clusters (one shrinks, one grows, within the same
GPUs) while that improves the objective. Every step's allocation is a point of the frontier
(GPUs -> predicted metrics). Candidates are priced by ``Pricer`` (pools simulated in virtual
time, in parallel) and composed by ``predict``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from expert_router.bench.summary import get_path
from expert_router.planner import slo
from expert_router.planner.predict import Prediction, predict
from expert_router.planner.pricing import PoolKey, Pricer

Config = tuple[str, int]
"""One cluster's pool: (preset id, replicas)."""
Alloc = tuple[Config, ...]
"""One pool per cluster."""
Objective = tuple[float, ...]
"""Larger is better, compared component by component."""

BIG = 1e9
LOOKAHEAD = 2
REL_TOL = 2e-3


@dataclass(frozen=True, slots=True)
class Space:
    """What may be planned: users per cluster in each draw of users over clusters, the
    presets each cluster may run (the first is its default), GPUs per replica of each."""

    draws: tuple[tuple[int, ...], ...]
    options: tuple[tuple[str, ...], ...]
    tp: dict[str, int]

    @property
    def clusters(self) -> int:
        return len(self.options)

    @property
    def users(self) -> tuple[float, ...]:
        """Mean users per cluster over the draws."""
        return tuple(sum(col) / len(col) for col in zip(*self.draws, strict=True))

    def size(self, cfg: Config) -> int:
        """GPUs of one pool."""
        return cfg[1] * self.tp[cfg[0]]

    def gpus(self, alloc: Alloc) -> int:
        return sum(self.size(cfg) for cfg in alloc)

    def smallest(self) -> Alloc:
        """One replica per cluster, of its preset with the fewest GPUs per replica."""
        return tuple((min(opts, key=lambda p: self.tp[p]), 1) for opts in self.options)

    def keys(self, alloc: Alloc) -> list[list[PoolKey]]:
        """The pools of ``alloc`` in each draw."""
        return [[(p, u, n) for (p, n), u in zip(alloc, d, strict=True)] for d in self.draws]

    def up(self, c: int, cfg: Config, steps: int = 1) -> list[Config]:
        """The next ``steps`` larger pools of cluster ``c`` per preset: more GPUs than ``cfg``."""
        have = self.size(cfg)
        return [(p, have // self.tp[p] + k) for p in self.options[c] for k in range(1, steps + 1)]

    def down(self, c: int, cfg: Config) -> list[Config]:
        """Smaller (or equal-sized, other-preset) pools of cluster ``c``, one per preset."""
        have = cfg[1] * self.tp[cfg[0]]
        out = []
        for p in self.options[c]:
            n = (have - 1) // self.tp[p] if p == cfg[0] else have // self.tp[p]
            if n >= 1:
                out.append((p, n))
        return out


@dataclass(frozen=True, slots=True)
class Point:
    """The best allocation found for ``gpus`` GPUs, and what it is predicted to deliver."""

    gpus: int
    alloc: Alloc
    prediction: Prediction


def objective(pred: Prediction, targets: Sequence[slo.Target]) -> Objective:
    """With targets: least violation, then most attainment. Then, with or without targets,
    the balance of the tails: the slowest cluster's p99 response time as low as possible,
    then the next slowest's, and so on; then the mean response time; last, the fewest users
    per replica on the busiest pool, then the next (surplus GPUs follow the load).

    The session's span (and so the paper's session throughput) is set by the slowest
    cluster; the n99 metric itself moves up or down as a cluster's tail crosses the fleet's
    p99, so the search follows the per-cluster tails instead (docs/planning.md).
    """
    rows = pred.clusters
    tails = sorted((_num(c.get("p99_response_time")) for c in rows), reverse=True)
    load = sorted((_num(c.get("users_per_replica")) for c in rows), reverse=True)
    mean = _num(get_path(pred.metrics, "response_time.mean"))
    balance = (*(-t for t in tails), -mean, *(-x for x in load))
    if not targets:
        return balance
    v = min(slo.violation(targets, pred.metrics), BIG)
    return (-v, pred.attainment or 0.0, *balance)


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def compare(a: Sequence[float], b: Sequence[float], scale: Sequence[float]) -> int:
    """-1, 0 or 1 as ``a`` is worse than, ties with or beats ``b``, component by component;
    a difference within ``REL_TOL`` of the component's ``scale`` is a tie (simulation
    detail, not a difference a fleet would show)."""
    for x, y, s in zip(a, b, scale, strict=True):
        if abs(x - y) > REL_TOL * max(abs(s), 1e-9):
            return 1 if x > y else -1
    return 0


class Search:
    """Marginal gain plus local search over ``space``, priced by ``pricer``."""

    def __init__(
        self,
        space: Space,
        pricer: Pricer,
        targets: Sequence[slo.Target] = (),
        *,
        local_rounds: int | None = None,
        on_placed: Callable[[int], None] = lambda _g: None,
    ) -> None:
        self.space, self.pricer, self.targets = space, pricer, list(targets)
        self.thresholds = slo.thresholds(self.targets)
        self.local_rounds = 2 * space.clusters if local_rounds is None else local_rounds
        self.on_placed = on_placed
        self._predictions: dict[Alloc, Prediction] = {}

    # -- pricing ---------------------------------------------------------------------------
    def evaluate_many(self, allocs: Sequence[Alloc]) -> list[Prediction]:
        """Predictions of ``allocs``; their missing pools are simulated in one batch."""
        self.pricer.price(k for a in allocs if a not in self._predictions
                          for draw in self.space.keys(a) for k in draw)  # fmt: skip
        out = []
        for a in allocs:
            if a not in self._predictions:
                cache = self.pricer.cache
                draws = [[cache[k] for k in draw] for draw in self.space.keys(a)]
                self._predictions[a] = predict(draws, thresholds=self.thresholds)
            out.append(self._predictions[a])
        return out

    def evaluate(self, alloc: Alloc) -> Prediction:
        return self.evaluate_many([alloc])[0]

    def objective(self, alloc: Alloc) -> Objective:
        return objective(self.evaluate(alloc), self.targets)

    # -- steps -----------------------------------------------------------------------------
    def grow(self, alloc: Alloc, budget: int) -> Alloc | None:
        """The best larger pool for one cluster, by gain per GPU; None when none fits.

        Pools one and two sizes up are both candidates: a pool's tail can be flat or even
        worse for one more replica (how its users fall into waves) and better for two.
        """
        used = self.space.gpus(alloc)
        cands: list[tuple[Alloc, int]] = []
        for c, cfg in enumerate(alloc):
            for new in self.space.up(c, cfg, LOOKAHEAD):
                cost = self.space.size(new) - self.space.size(cfg)
                if used + cost <= budget:
                    cands.append((alloc[:c] + (new,) + alloc[c + 1 :], cost))
        if not cands:
            return None
        base = self.objective(alloc)
        preds = self.evaluate_many([a for a, _ in cands])
        best: tuple[Alloc, tuple[float, ...]] | None = None
        for (a, cost), pred in zip(cands, preds, strict=True):
            gain = tuple((x - y) / cost for x, y in zip(objective(pred, self.targets), base,
                                                         strict=True))  # fmt: skip
            if best is None or compare(gain, best[1], base) > 0:
                best = (a, gain)
        assert best is not None
        return best[0]

    def neighbours(self, alloc: Alloc, budget: int) -> list[Alloc]:
        """Allocations within ``budget`` that move one step of capacity from one cluster to
        another, or switch one cluster's preset within its GPUs."""
        space, used = self.space, self.space.gpus(alloc)
        out: list[Alloc] = []
        for i, cfg_i in enumerate(alloc):
            for down in space.down(i, cfg_i):
                freed = space.size(cfg_i) - space.size(down)
                shrunk = alloc[:i] + (down,) + alloc[i + 1 :]
                if down[0] != cfg_i[0]:
                    out.append(shrunk)
                for j, cfg_j in enumerate(alloc):
                    if j == i:
                        continue
                    for up in space.up(j, cfg_j):
                        extra = space.size(up) - space.size(cfg_j)
                        if used - freed + extra <= budget:
                            out.append(shrunk[:j] + (up,) + shrunk[j + 1 :])
        return list(dict.fromkeys(out))

    def improve(self, alloc: Alloc, budget: int) -> Alloc:
        """Steepest-ascent local search from ``alloc`` within ``budget`` GPUs."""
        current, score = alloc, self.objective(alloc)
        for _ in range(self.local_rounds):
            cands = self.neighbours(current, budget)
            if not cands:
                break
            preds = self.evaluate_many(cands)
            scored = [(objective(p, self.targets), a) for p, a in zip(preds, cands, strict=True)]
            best_score, best = scored[0]
            for s, a in scored[1:]:
                if compare(s, best_score, score) > 0:
                    best_score, best = s, a
            if compare(best_score, score, score) <= 0:
                break
            current, score = best, best_score
        return current

    def run(self, budget: int, *, local: bool = True) -> list[Point]:
        """The frontier: the best allocation found at each GPU count up to ``budget``."""
        alloc = self.space.smallest()
        frontier: list[Point] = []
        while True:
            if local:
                alloc = self.improve(alloc, self.space.gpus(alloc))
            gpus = self.space.gpus(alloc)
            frontier.append(Point(gpus, alloc, self.evaluate(alloc)))
            self.on_placed(gpus)
            grown = self.grow(alloc, budget)
            if grown is None:
                return frontier
            alloc = grown
