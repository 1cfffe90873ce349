"""Seeded instance generators: PHaul's IAB backhaul, data-centre fabrics, innet's topologies.

Every generator takes a numpy Generator, so a seed reproduces the instance exactly.

IAB (re-implemented from the description in Pueyo, Camps-Mur, Catalan-Cid, IEEE TNSM 2024, and
NANCY D4.2 §4.2): a first layer of 3 donors; each node of the last layer gets 1 to 3 children
(uniform), layer after layer, until the network has its size (the last layer is cut short
there). Every node has a link to its parent in both technologies; besides, with probability
0.4 in mm-wave and 0.6 in Sub6, drawn apart per technology, a cross link to the node next to
its parent in the parent's layer (the one after it, or before it for the layer's last node).
Capacities are uniform in 800-1000 Mbit/s (mm-wave) and 200-300 Mbit/s (Sub6), per link. One
flow per non-donor node, to any donor, present when its node is active (probability ρ) with a
demand uniform in (λmin, λmax). Where the paper is silent: which neighbour is "next to" the
parent (above), that tree links exist in both technologies, and that a traffic matrix with no
active node is drawn again (an instance needs a flow).

Fabrics: a two-tier leaf-spine and Hedera's k-ary fat tree (k = 4: 4 core, 8 aggregation and
8 edge switches, 16 hosts), all links one capacity; flows between random distinct hosts.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from controller.te.errors import TeError
from controller.te.network import Flow, Instance, Link, Network, Path
from controller.te.paths import LEAST_COMMON, candidate_paths
from controller.topology import Topology

MMWAVE, SUB6 = "mmwave", "sub6"
CROSS_LINK_PROBABILITY = {MMWAVE: 0.4, SUB6: 0.6}
CAPACITY_RANGE = {MMWAVE: (800.0, 1000.0), SUB6: (200.0, 300.0)}   # Mbit/s
DEMAND_RANGES = ((250.0, 500.0), (500.0, 750.0))                    # Mbit/s
ACTIVITIES = (0.4, 0.8, 1.0)
DONORS = 3


@dataclass(frozen=True, eq=False)
class IabTopology:
    network: Network
    layers: tuple[tuple[str, ...], ...]   # layers[0]: the donors

    @property
    def donors(self) -> tuple[str, ...]:
        return self.layers[0]

    @cached_property
    def sources(self) -> tuple[str, ...]:
        return tuple(n for layer in self.layers[1:] for n in layer)

    def candidates(self, k: int, method: str = LEAST_COMMON) -> dict[str, tuple[Path, ...]]:
        """Every potential flow's candidate paths, computed once per topology as PHaul does
        (least common: in the order of the nodes)."""
        paths = candidate_paths(self.network, [(s, self.donors) for s in self.sources], k, method)
        return dict(zip(self.sources, paths))

    def flows(self, activity: float, demand: tuple[float, float], rng: np.random.Generator) -> tuple[Flow, ...]:
        """One traffic matrix: a flow from each active node, drawn again while none is active."""
        while True:
            active = rng.random(len(self.sources)) < activity
            demands = rng.uniform(*demand, size=len(self.sources))
            if active.any():
                return tuple(Flow(s, s, self.donors, float(d))
                             for s, on, d in zip(self.sources, active, demands) if on)

    def instance(self, flows: tuple[Flow, ...], candidates: dict[str, tuple[Path, ...]]) -> Instance:
        return Instance(self.network, flows, tuple(candidates[f.source] for f in flows))


def iab_topology(nodes: int, rng: np.random.Generator, donors: int = DONORS) -> IabTopology:
    if nodes <= donors:
        raise TeError(f"an IAB network of {nodes} nodes has no room beside {donors} donors")
    layers = [[f"d{i}" for i in range(donors)]]
    parent: dict[str, str] = {}
    count = donors
    while count < nodes:
        layer = []
        for p in layers[-1]:
            for _ in range(int(rng.integers(1, 4))):
                if count < nodes:
                    child = f"n{count}"
                    parent[child] = p
                    layer.append(child)
                    count += 1
        layers.append(layer)
    position = {n: (depth, i) for depth, layer in enumerate(layers) for i, n in enumerate(layer)}
    links = []
    for technology in (MMWAVE, SUB6):
        low, high = CAPACITY_RANGE[technology]
        for child, p in parent.items():
            links.append(Link(p, child, float(rng.uniform(low, high)), technology))
            beside = _next_to(layers, *position[p])
            if beside is not None and rng.random() < CROSS_LINK_PROBABILITY[technology]:
                links.append(Link(beside, child, float(rng.uniform(low, high)), technology))
    names = tuple(n for layer in layers for n in layer)
    return IabTopology(Network(names, tuple(links), name=f"iab{nodes}"),
                       tuple(tuple(layer) for layer in layers))


def _next_to(layers: list[list[str]], depth: int, i: int) -> str | None:
    layer = layers[depth]
    if len(layer) == 1:
        return None
    return layer[i + 1] if i + 1 < len(layer) else layer[i - 1]


@dataclass(frozen=True, eq=False)
class Fabric:
    network: Network
    hosts: tuple[str, ...]


def leaf_spine(spines: int = 2, leaves: int = 4, hosts_per_leaf: int = 2, capacity: float = 1000.0) -> Fabric:
    nodes = [f"spine{s}" for s in range(spines)] + [f"leaf{leaf}" for leaf in range(leaves)]
    links = [Link(f"leaf{leaf}", f"spine{s}", capacity) for leaf in range(leaves) for s in range(spines)]
    hosts = []
    for leaf in range(leaves):
        for i in range(hosts_per_leaf):
            hosts.append(f"h{leaf}_{i}")
            links.append(Link(f"leaf{leaf}", hosts[-1], capacity))
    return Fabric(Network(tuple(nodes + hosts), tuple(links), name=f"leafspine{spines}x{leaves}"), tuple(hosts))


def fat_tree(k: int = 4, capacity: float = 1000.0) -> Fabric:
    """Hedera's fat tree: k pods of k/2 edge and k/2 aggregation switches, (k/2)² cores, k/2
    hosts per edge switch; aggregation switch j of every pod joins cores j·k/2 .. j·k/2 + k/2 − 1."""
    if k < 2 or k % 2:
        raise TeError(f"a fat tree's k is even and at least 2, got {k}")
    half = k // 2
    cores = [f"core{c}" for c in range(half * half)]
    nodes, links, hosts = list(cores), [], []
    for pod in range(k):
        aggs = [f"agg{pod}_{j}" for j in range(half)]
        edges = [f"edge{pod}_{j}" for j in range(half)]
        nodes += aggs + edges
        for j, agg in enumerate(aggs):
            links += [Link(agg, cores[j * half + c], capacity) for c in range(half)]
            links += [Link(agg, edge, capacity) for edge in edges]
        for j, edge in enumerate(edges):
            for h in range(half):
                host = f"h{pod}_{j}_{h}"
                hosts.append(host)
                links.append(Link(edge, host, capacity))
    return Fabric(Network(tuple(nodes + hosts), tuple(links), name=f"fattree{k}"), tuple(hosts))


def host_pair_flows(hosts: tuple[str, ...], count: int, demand: tuple[float, float],
                    rng: np.random.Generator) -> tuple[Flow, ...]:
    """`count` flows, each between two distinct random hosts, demand uniform in `demand`."""
    flows = []
    for i in range(count):
        source, destination = rng.choice(len(hosts), size=2, replace=False)
        flows.append(Flow(f"f{i}", hosts[source], (hosts[destination],), float(rng.uniform(*demand))))
    return tuple(flows)


def topology_network(topology: Topology) -> tuple[Network, tuple[str, ...]]:
    """innet's topology as a network, and its hosts (the ends flows run between)."""
    return Network.from_topology(topology), tuple(h.name for h in topology.hosts)

