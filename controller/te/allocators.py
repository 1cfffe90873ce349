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
- local-search (innet's best): subset-sum's allocation, then first-improvement descent (flow
  by flow, largest demand first, each moved to its best candidate while that raises J), then
  iterated: a few random flows are kicked to random candidates, descent runs again, and the
  result is kept when it beats the best so far. The kicks come from the seeded rng, so a seed
  reproduces the allocation.
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
    limit: int = 1 << 18     # combinations: about 20 s of twin at 60 µs each
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
    kicks: int = 8           # perturbation rounds after the first descent
    kicked: int = 3          # flows moved at random by each kick
    name: str = "local-search"

    def choose(self, twin: Twin, objective: Objective, rng: np.random.Generator) -> np.ndarray:
        best = SubsetSum().choose(twin, objective, rng)
        best, best_score = _descend(twin, best, objective)
        for _ in range(self.kicks):
            trial = best.copy()
            moved = rng.choice(twin.flows, size=min(self.kicked, twin.flows), replace=False)
            trial[moved] = rng.integers(0, twin.options[moved])
            trial, score = _descend(twin, trial, objective)
            if score > best_score + _GAIN:
                best, best_score = trial, score
        return best


ALLOCATORS: dict[str, Allocator] = {a.name: a for a in
                                    (RandomPaths(), SubsetSum(), GlobalFirstFit(), BruteForce(), LocalSearch())}
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


def _descend(twin: Twin, choice: np.ndarray, objective: Objective) -> tuple[np.ndarray, float]:
    """First-improvement descent to a local optimum: no single flow's move raises J."""
    choice = choice.copy()
    score = float(twin.scores(choice, objective)[0])
    improved = True
    while improved:
        improved = False
        for flow in _largest_first(twin):
            if twin.options[flow] < 2:
                continue
            option, option_score = _best_option(twin, choice, flow, objective)
            if option_score > score + _GAIN:
                choice[flow], score, improved = option, option_score, True
    return choice, score


def _decode(indices: np.ndarray, radix: np.ndarray) -> np.ndarray:
    """Allocation number i in mixed radix (flow 0 most significant) as a (len(i), F) choice."""
    batch = np.empty((indices.size, radix.size), dtype=np.int64)
    rest = indices.copy()
    for flow in range(radix.size - 1, -1, -1):
        batch[:, flow] = rest % radix[flow]
        rest //= radix[flow]
    return batch
