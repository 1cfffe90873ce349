"""Path allocators: each picks one candidate path per flow, scored by the digital twin.

One interface: an allocator has a `name` and `choose(twin, objective, rng)`, which returns the
allocation as each flow's candidate index. `run` times the twin's setup and the choice (the
decision time: candidate paths are computed offline, once per topology, as in PHaul) and
returns an Allocation with the twin's figures; `allocate(network, flows)` is the whole step a
closed loop takes: candidates, allocator, Allocation with each flow's path as a node list.

- random: each flow a uniformly random candidate.
- subset-sum (PHaul's baseline): flows by demand, largest first; each takes whichever of its
  candidates scores best given the flows placed before it (the others are not yet in the twin).
- global-first-fit (Hedera): flows in the instance's order (as they would be detected); each
  takes its first candidate whose every arc still has room for the flow's whole demand, and
  reserves it there; a flow that fits nowhere stays on its first candidate, reserving nothing
  (Hedera leaves it on its ECMP path).
- brute-force: every combination, the best kept (the first of equals); refuses instances with
  more combinations than its limit.
- milp: the allocation with the most traffic at its best rates (not necessarily max-min fair
  ones), exact, by HiGHS (see MaxThroughputMilp).
- local-search (innet's best): subset-sum's allocation, then steepest descent over a whole
  neighbourhood scored as one batch (every flow moved to each other candidate, and pairs of
  flows whose candidates share an arc moved together), iterated: at a local optimum the best
  allocation so far is kicked (a few flows to random candidates), and every fourth time the
  search restarts from a random allocation. It stops when the twin has computed its budget of
  flow rates, so its time grows with the instance but stays bounded; an instance whose every
  allocation fits in the budget is scored whole instead (brute force: exact, and faster). The kicks and restarts
  come from the seeded rng: a seed reproduces the allocation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from controller.te.errors import TeError
from controller.te.network import Flow, Instance, Network, Path
from controller.te.paths import LEAST_COMMON, instance_for
from controller.te.twin import EFFICIENCY, MAX_MIN, Figures, Objective, Twin

_GAIN = 1e-9   # a move must raise J by more than this, so float noise cannot cycle the descent


class Allocator(Protocol):
    name: str

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class Allocation:
    allocator: str
    model: str
    objective: Objective
    flows: tuple[str, ...]
    choice: tuple[int, ...]      # each flow's candidate index
    paths: tuple[Path, ...]      # each flow's chosen path
    figures: Figures
    seconds: float               # decision time: the twin's setup and the choice

    def routes(self) -> dict[str, list[str]]:
        """Each flow's path as the list of nodes it crosses, source first."""
        return {name: list(path.nodes) for name, path in zip(self.flows, self.paths)}


@dataclass(frozen=True)
class RandomPaths:
    name: str = "random"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, twin.options)


@dataclass(frozen=True)
class SubsetSum:
    name: str = "subset-sum"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        choice = np.full(twin.flows, -1)
        for flow in _largest_first(twin):
            choice[flow], _ = _best_option(twin, choice, flow, objective)
        return choice


@dataclass(frozen=True)
class GlobalFirstFit:
    name: str = "global-first-fit"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        free = twin.capacity.copy()
        choice = np.zeros(twin.flows, dtype=np.int64)
        for flow in range(twin.flows):
            for option in range(twin.options[flow]):
                arcs = twin.arcs_of(flow, option)
                if (free[arcs] >= twin.demand[flow]).all():
                    choice[flow] = option
                    free[arcs] -= twin.demand[flow]   # a simple path crosses an arc once
                    break
        return choice


@dataclass(frozen=True)
class BruteForce:
    limit: int = 1 << 18     # combinations: a few seconds at 20 nodes, scored in batches
    chunk: int = 2048
    name: str = "brute-force"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        total = combinations(twin)
        if total > self.limit:
            raise TeError(f"brute force over {twin.flows} flows would score {total} allocations, "
                          f"above its limit of {self.limit}",
                          hint="use fewer flows or candidate paths, raise BruteForce.limit, or another allocator")
        best, best_score = None, -np.inf
        for start in range(0, total, self.chunk):
            batch = _decode(np.arange(start, min(total, start + self.chunk)), twin.options)
            scores = twin.scores(batch, objective)
            top = int(np.argmax(scores))
            if scores[top] > best_score:
                best, best_score = batch[top], scores[top]
        return best


@dataclass(frozen=True)
class LocalSearch:
    budget: int = 60_000     # flow rates the twin may compute after the seed (allocations × flows)
    pairs: int = 256         # two-flow moves scored per step at most (sampled beyond that)
    kicked: int = 3          # flows moved at random by a kick
    restart: int = 4         # every restart-th local optimum, start again from a random allocation
    name: str = "local-search"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        if combinations(twin) * twin.flows <= self.budget:   # the whole space costs less than the budget
            return BruteForce(limit=self.budget).choose(twin, objective, rng)
        moves = _Moves(twin)
        current = SubsetSum().choose(twin, objective, rng)
        score = float(twin.scores(current, objective)[0])
        best, best_score, spent, optima = current, score, 0, 0
        while spent < self.budget:
            batch = moves.around(current, self.pairs, rng)
            if not len(batch):
                break
            scores = twin.scores(batch, objective)
            spent += batch.size
            top = int(np.argmax(scores))
            if scores[top] > score + _GAIN:
                current, score = batch[top], float(scores[top])
                if score > best_score:
                    best, best_score = current, score
                continue
            # a local optimum: kick the best allocation so far, or now and then leave its basin
            # altogether (on small instances the optimum often differs from it in most flows)
            optima += 1
            if optima % self.restart == 0:
                current = rng.integers(0, twin.options)
            else:
                current = best.copy()
                kicked = rng.choice(twin.flows, size=min(self.kicked, twin.flows), replace=False)
                current[kicked] = rng.integers(0, twin.options[kicked])
            score = float(twin.scores(current, objective)[0])
            spent += twin.flows
        return best


@dataclass(frozen=True)
class MaxThroughputMilp:
    """The allocation whose best rates carry the most traffic, solved exactly by HiGHS: one
    binary per candidate (one per flow), a rate per candidate bounded by the flow's demand
    when chosen and 0 otherwise, and the arcs' capacities. Those rates need not be max-min
    fair, so the twin rates the allocation as it rates any other: on the efficiency objective
    it is an upper bound's allocation, not always the twin's best."""
    time_limit_s: float = 0.25   # then its best allocation so far (most instances here solve in tens of ms)
    name: str = "milp"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        import highspy

        paths = int(twin.options.sum())
        owner = np.repeat(np.arange(twin.flows), twin.options)          # the flow of each candidate
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", self.time_limit_s)
        # columns: x_p (binary), then r_p (Mbit/s); maximise the sum of the r_p
        cost = np.concatenate([np.zeros(paths), np.ones(paths)])
        upper = np.concatenate([np.ones(paths), twin.demand[owner]])
        h.addVars(2 * paths, np.zeros(2 * paths), upper)
        h.changeColsCost(2 * paths, np.arange(2 * paths, dtype=np.int32), cost)
        h.changeColsIntegrality(paths, np.arange(paths, dtype=np.int32),
                                np.full(paths, highspy.HighsVarType.kInteger))
        rows = [(1.0, 1.0, [p for p in range(paths) if owner[p] == f], None) for f in range(twin.flows)]
        rows += [(-highspy.kHighsInf, 0.0, [paths + p, p], [1.0, -twin.demand[owner[p]]]) for p in range(paths)]
        crossing: dict[int, list[int]] = {}
        for p in range(paths):
            flow, option = owner[p], p - twin.first_path[owner[p]]
            for arc in twin.arcs_of(flow, option):
                crossing.setdefault(int(arc), []).append(paths + p)
        rows += [(-highspy.kHighsInf, float(twin.capacity[arc]), cols, None)
                 for arc, cols in crossing.items() if np.isfinite(twin.capacity[arc])]
        for lower, up, cols, values in rows:
            h.addRow(lower, up, len(cols), np.array(cols, dtype=np.int32),
                     np.array(values if values is not None else [1.0] * len(cols)))
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        h.run()
        if h.getModelStatus() not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit) \
                or h.getInfo().primal_solution_status == 0:
            raise TeError(f"the MILP found no allocation: {h.modelStatusToString(h.getModelStatus())}")
        chosen = np.asarray(h.getSolution().col_value[:paths])
        return np.array([int(np.argmax(chosen[twin.first_path[f]:twin.first_path[f] + twin.options[f]]))
                         for f in range(twin.flows)], dtype=np.int64)


ALLOCATORS: dict[str, Allocator] = {a.name: a for a in (RandomPaths(), SubsetSum(), GlobalFirstFit(), BruteForce(),
                                                        LocalSearch(), MaxThroughputMilp())}
BEST = LocalSearch.name


def combinations(twin: Twin) -> int:
    """How many allocations the instance has: the product of its flows' candidate counts."""
    return int(np.prod([int(n) for n in twin.options], dtype=object))


def run(allocator: Allocator | str, instance: Instance, objective: Objective = EFFICIENCY,
        model: str = MAX_MIN, seed: int = 0) -> Allocation:
    """One decision on one instance, timed, with the twin's figures for it."""
    if isinstance(allocator, str):
        if allocator not in ALLOCATORS:
            raise TeError(f"unknown allocator '{allocator}'", hint=f"allocators: {', '.join(ALLOCATORS)}")
        allocator = ALLOCATORS[allocator]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    twin = Twin(instance, model)
    choice = np.asarray(allocator.choose(twin, objective, rng), dtype=np.int64)
    seconds = time.perf_counter() - start
    return Allocation(allocator.name, model, objective, tuple(f.name for f in instance.flows),
                      tuple(int(c) for c in choice),
                      tuple(paths[c] for paths, c in zip(instance.paths, choice)),
                      twin.figures(choice), seconds)


def allocate(network: Network, flows: Sequence[Flow], allocator: Allocator | str = BEST, k: int = 3,
             method: str = LEAST_COMMON, objective: Objective = EFFICIENCY, model: str = MAX_MIN,
             seed: int = 0) -> Allocation:
    """Paths for `flows` on `network`: k candidates per technology, then the allocator's pick."""
    return run(allocator, instance_for(network, flows, k, method), objective, model, seed)


def _largest_first(twin: Twin) -> np.ndarray:
    return np.argsort(-twin.demand, kind="stable")


def _best_option(twin: Twin, choice: np.ndarray, flow: int, objective: Objective) -> tuple[int, float]:
    """The flow's best candidate with every other flow where `choice` puts it, and its score."""
    options = np.repeat(choice[None, :], twin.options[flow], axis=0)
    options[:, flow] = np.arange(twin.options[flow])
    scores = twin.scores(options, objective)
    top = int(np.argmax(scores))
    return top, float(scores[top])


class _Moves:
    """An allocation's neighbourhood as one batch: every single flow moved to each other
    candidate, and two flows moved together where their candidates share an arc (what no single
    move can do, such as two flows trading places on a bottleneck)."""

    def __init__(self, twin: Twin):
        self.twin = twin
        touches = np.zeros((twin.flows, twin.capacity.size), dtype=bool)
        for flow in range(twin.flows):
            for option in range(twin.options[flow]):
                touches[flow, twin.arcs_of(flow, option)] = True
        shared = (touches.astype(np.int32) @ touches.T.astype(np.int32)) > 0
        movable = twin.options > 1
        first, second = np.nonzero(np.triu(shared & movable[:, None] & movable[None, :], 1))
        self.pair_first, self.pair_second = first, second
        # two-flow moves of each pair: (options - 1)² of them
        self.pair_moves = (twin.options[first] - 1) * (twin.options[second] - 1)
        flows = np.repeat(np.arange(twin.flows), twin.options - 1)
        self.single_flow = flows
        self.single_step = np.arange(flows.size) - np.repeat(np.cumsum(twin.options - 1) - (twin.options - 1),
                                                           twin.options - 1) + 1

    def around(self, choice: np.ndarray, pairs: int, rng: np.random.Generator) -> np.ndarray:
        twin = self.twin
        singles = np.repeat(choice[None, :], self.single_flow.size, axis=0)
        rows = np.arange(self.single_flow.size)
        singles[rows, self.single_flow] = (choice[self.single_flow] + self.single_step) % twin.options[self.single_flow]
        if self.pair_moves.sum() <= pairs:   # all of them
            index = np.repeat(np.arange(self.pair_first.size), self.pair_moves)
            within = np.arange(index.size) - np.repeat(np.cumsum(self.pair_moves) - self.pair_moves, self.pair_moves)
            span = twin.options[self.pair_second[index]] - 1
            step_first, step_second = within // span + 1, within % span + 1
        else:
            index = rng.integers(0, self.pair_first.size, pairs)
            step_first = rng.integers(1, twin.options[self.pair_first[index]])
            step_second = rng.integers(1, twin.options[self.pair_second[index]])
        first, second = self.pair_first[index], self.pair_second[index]
        doubles = np.repeat(choice[None, :], index.size, axis=0)
        rows = np.arange(index.size)
        doubles[rows, first] = (choice[first] + step_first) % twin.options[first]
        doubles[rows, second] = (choice[second] + step_second) % twin.options[second]
        return np.concatenate([singles, doubles])


def _decode(indices: np.ndarray, radix: np.ndarray) -> np.ndarray:
    """Allocation number i in mixed radix (flow 0 most significant) as a (len(i), F) choice."""
    batch = np.empty((indices.size, radix.size), dtype=np.int64)
    rest = indices.copy()
    for flow in range(radix.size - 1, -1, -1):
        batch[:, flow] = rest % radix[flow]
        rest //= radix[flow]
    return batch
