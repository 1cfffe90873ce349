"""The digital twin: each flow's rate φ under an allocation, and the figures allocators chase.

An allocation picks one candidate path per flow: `choice[f]` indexes flow f's candidates
(PHaul's Γ vector); -1 leaves the flow out of the network, as a greedy allocator does with the
flows it has not placed yet. Two rate models:

max-min (the default): true max-min fairness with demands as caps, by progressive filling.
  Every unfrozen flow's rate rises at the same pace until an arc fills (its flows freeze) or a
  flow reaches its demand (it freezes); capacity a flow cannot use because it is held back
  elsewhere goes to the others. TCP flows sharing drop-tail bottlenecks approach this.
water-filling: PHaul's per-link model. Each arc water-fills its capacity over its flows'
  original demands as if it were alone (flows below the fair level get their demand, the rest
  share what remains equally), and a flow gets the smallest of its arcs' shares. A flow held
  back on one arc still claims its whole share on the others, so capacity can go unused; the
  model is kept to compare with PHaul's published numbers.

Figures: efficiency Σφ/Σλ, Jain fairness (Σφ)²/(|F|Σφ²), and PHaul's objective
J = (1+γ)·efficiency + (1−γ)·fairness (γ = 1: efficiency only, γ = −1: fairness only), all
over the flows in the network. Jain fairness of all-zero rates is taken as 1 (all equal).

Everything is batched: `rates` takes a (B, F) array of allocations and fills them all in one
pass of numpy operations, so an allocator scores every option of a move at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.te.errors import TeError
from controller.te.network import Instance

MAX_MIN, WATER_FILLING = "max-min", "water-filling"
MODELS = (MAX_MIN, WATER_FILLING)
_TIE = 1e-9   # relative: a share within this of the step fills at the step


@dataclass(frozen=True)
class Objective:
    gamma: float = 1.0

    def __post_init__(self):
        if not -1.0 <= self.gamma <= 1.0:
            raise TeError(f"objective weight gamma must lie in [-1, 1], got {self.gamma!r}")

    def __call__(self, efficiency, fairness):
        return (1 + self.gamma) * efficiency + (1 - self.gamma) * fairness


EFFICIENCY, FAIRNESS = Objective(1.0), Objective(-1.0)


@dataclass(frozen=True)
class Figures:
    rates: tuple[float, ...]     # φ per flow, Mbit/s
    throughput: float            # Σφ
    demand: float                # Σλ
    efficiency: float
    fairness: float              # Jain's index

    def objective(self, objective: Objective) -> float:
        return float(objective(self.efficiency, self.fairness))


class Twin:
    """One instance's network and candidate paths as arrays, ready to rate allocations. Arcs are
    renumbered to those some candidate crosses; a path is a run of `hop_arc`."""

    def __init__(self, instance: Instance, model: str = MAX_MIN):
        if model not in MODELS:
            raise TeError(f"unknown twin model '{model}'", hint=f"models: {', '.join(MODELS)}")
        self.instance, self.model = instance, model
        network = instance.network
        arcs = [np.array(network.arcs(p), dtype=np.int64) for paths in instance.paths for p in paths]
        used, hop_arc = np.unique(np.concatenate(arcs), return_inverse=True)
        self.capacity = network.arc_capacities()[used]
        self.hop_arc = hop_arc.reshape(-1)
        self.path_length = np.array([len(a) for a in arcs])
        self.path_start = np.concatenate([[0], np.cumsum(self.path_length)[:-1]])
        self.options = np.array([len(paths) for paths in instance.paths])
        self.first_path = np.concatenate([[0], np.cumsum(self.options)[:-1]])
        self.demand = np.array([f.demand for f in instance.flows], dtype=float)

    @property
    def flows(self) -> int:
        return len(self.demand)

    def arcs_of(self, flow: int, option: int) -> np.ndarray:
        """The (renumbered) arcs of one flow's candidate."""
        path = self.first_path[flow] + option
        return self.hop_arc[self.path_start[path]:self.path_start[path] + self.path_length[path]]

    def rates(self, choice: np.ndarray) -> np.ndarray:
        """φ for each allocation of a (B, F) batch (or one (F,) allocation): 0 for left-out flows."""
        choice = np.asarray(choice)
        batch = np.atleast_2d(choice)
        if batch.shape[1] != self.flows or (batch >= self.options).any() or (batch < -1).any():
            raise TeError(f"an allocation of this instance picks one of each flow's candidates for "
                          f"{self.flows} flows (-1: left out), got {choice.tolist()}")
        placed = batch >= 0
        paths = (self.first_path + np.where(placed, batch, 0)).reshape(-1)
        lengths = np.where(placed.reshape(-1), self.path_length[paths], 0)
        hop_flow = np.repeat(np.arange(lengths.size), lengths)   # flow (allocation-major) of each hop
        ends = np.cumsum(lengths)
        hop = np.arange(ends[-1]) + np.repeat(self.path_start[paths] - (ends - lengths), lengths)
        hop_cell = self.hop_arc[hop] + self.capacity.size * (hop_flow // self.flows)
        demand = np.where(placed, self.demand, 0.0)
        rate = _MODEL_RATES[self.model](self.capacity, demand, hop_flow, hop_cell)
        return rate if choice.ndim == 2 else rate[0]

    def scores(self, choice: np.ndarray, objective: Objective) -> np.ndarray:
        """J for each allocation of a (B, F) batch, over the flows each one places."""
        efficiency, fairness = self._efficiency_fairness(np.atleast_2d(choice))
        return objective(efficiency, fairness)

    def figures(self, choice: np.ndarray) -> Figures:
        choice = np.asarray(choice)
        if (choice < 0).any():
            raise TeError("figures are for a whole allocation: every flow needs a path")
        rates = self.rates(choice)
        efficiency, fairness = self._efficiency_fairness(choice[None, :], rates[None, :])
        return Figures(tuple(float(r) for r in rates), float(rates.sum()), float(self.demand.sum()),
                       float(efficiency[0]), float(fairness[0]))

    def _efficiency_fairness(self, batch: np.ndarray, rates: np.ndarray | None = None):
        rates = self.rates(batch) if rates is None else rates
        placed = batch >= 0
        throughput = rates.sum(1)
        demand = np.where(placed, self.demand, 0.0).sum(1)
        squares = (rates ** 2).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            efficiency = np.where(demand > 0, throughput / demand, 0.0)
            fairness = np.where(squares > 0, throughput ** 2 / (placed.sum(1) * squares), 1.0)
        return efficiency, fairness


# Both models take: capacity (A,) per arc, inf for none; demand (B, F), 0 for a flow not in the
# network; and the hops of every placed flow's path, as the flow's index in demand.ravel() and
# the hop's cell, arc + A·allocation. They return φ as (B, F).

def max_min_rates(capacity: np.ndarray, demand: np.ndarray, hop_flow: np.ndarray,
                  hop_cell: np.ndarray) -> np.ndarray:
    """Max-min fair rates with demand caps, by progressive filling, for a batch of allocations.
    Each round raises every active flow of an allocation by that allocation's largest step that
    overfills no arc and exceeds no demand, then freezes the flows that hit either, and drops
    their hops from the next rounds: at most F rounds, usually as many as there are distinct
    bottlenecks."""
    batch, flows = demand.shape
    width = capacity.size
    free = np.tile(capacity, batch)
    want = demand.reshape(-1)
    rate = np.zeros(want.size)
    active = want > 0
    while hop_flow.size:
        crossing = np.bincount(hop_cell, minlength=free.size)
        share = np.full(free.size, np.inf)
        np.divide(free, crossing, out=share, where=crossing > 0)
        share = share.reshape(batch, width)
        gap = np.where(active, want - rate, np.inf).reshape(batch, flows)
        step = np.minimum(share.min(1), gap.min(1))
        step[~np.isfinite(step)] = 0.0   # allocations with no active flow left
        rate += np.repeat(step, flows) * active
        free -= np.repeat(step, width) * crossing
        limit = step[:, None] * (1 + _TIE)
        active &= (gap > limit).reshape(-1)
        active[hop_flow[(share <= limit).reshape(-1)[hop_cell]]] = False
        keep = active[hop_flow]
        hop_flow, hop_cell = hop_flow[keep], hop_cell[keep]
    return np.minimum(rate, want).reshape(batch, flows)


def per_arc_water_filling(capacity: np.ndarray, demand: np.ndarray, hop_flow: np.ndarray,
                          hop_cell: np.ndarray) -> np.ndarray:
    """PHaul's model for a batch of allocations: each arc water-fills alone over its flows'
    original demands, and a flow gets its smallest share. Closed form per arc: with its n
    demands sorted, d_0 <= ... <= d_(n-1), and P_j the sum of those before d_j, the first j
    with P_j + (n-j)·d_j >= c sets the level (c - P_j)/(n-j); flows before it get their demand."""
    want = demand.reshape(-1)
    rate = np.zeros(want.size)
    if not hop_flow.size:
        return rate.reshape(demand.shape)
    wanted = want[hop_flow]
    order = np.lexsort((wanted, hop_cell))
    cell, wanted = hop_cell[order], wanted[order]
    first = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])       # each cell's first hop
    size = np.diff(np.r_[first, cell.size])
    group = np.repeat(np.arange(first.size), size)
    position = np.arange(cell.size) - first[group]
    before = np.cumsum(wanted) - wanted
    before -= before[first][group]
    c = np.tile(capacity, demand.shape[0])[cell]
    full = before + (size[group] - position) * wanted >= c
    level_at = np.minimum.reduceat(np.where(full, position, size[group]), first)   # per cell; size: never full
    fills = level_at < size
    level = np.full(first.size, np.inf)
    at = first[fills] + level_at[fills]
    level[fills] = (c[at] - before[at]) / (size[fills] - level_at[fills])
    share = np.minimum(wanted, level[group])
    hop_share = np.empty_like(share)
    hop_share[order] = share
    starts = np.flatnonzero(np.r_[True, hop_flow[1:] != hop_flow[:-1]])   # a flow's hops are adjacent
    rate[hop_flow[starts]] = np.minimum.reduceat(hop_share, starts)
    return rate.reshape(demand.shape)


_MODEL_RATES = {MAX_MIN: max_min_rates, WATER_FILLING: per_arc_water_filling}
