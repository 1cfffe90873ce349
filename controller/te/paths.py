"""Candidate paths per flow: the k shortest, or PHaul's "least common" heuristic.

Paths are found per technology, up to k in each (PHaul: K in the Sub6 and K in the mm-wave
network, so up to 2K per flow), and a flow's candidates interleave them rank by rank in the
order of the technologies' names, as PHaul's vector {P1 sub6, P1 mmwave, ..., PK sub6, PK mmwave}
does. A path never passes through one of its flow's destinations before its end: a flow that
reaches a donor has arrived.

k shortest: the first k simple paths by hop count (networkx's Yen-style shortest_simple_paths).
least common: flows take their paths in the order given; each draws a pool of its shortest
simple paths per technology and takes, k times, the pool's path whose links already carry the
fewest chosen paths (links counted with multiplicity, the flow's own earlier picks included),
fewer hops and then the shorter-first order breaking ties. This spreads candidates over the
network before any traffic is known, which is what PHaul computes offline, once per topology.
"""
from __future__ import annotations

from itertools import islice
from typing import Sequence

import networkx as nx
import numpy as np

from controller.te.errors import TeError
from controller.te.network import Flow, Instance, Network, Path, check_flow

SHORTEST, LEAST_COMMON = "shortest", "least-common"
METHODS = (SHORTEST, LEAST_COMMON)
DEFAULT_POOL = 8
_SINK = ("sink",)   # joins a flow's destinations; a tuple, so no node name can be it

Endpoints = tuple[str, tuple[str, ...]]   # a flow's source and its destinations


def candidate_paths(network: Network, endpoints: Sequence[Endpoints], k: int,
                    method: str = LEAST_COMMON, pool: int = DEFAULT_POOL) -> tuple[tuple[Path, ...], ...]:
    """Each flow's candidate paths, in the order of `endpoints` (one source and its destinations
    per flow). A TeError names the first flow that has no path at all."""
    if method not in METHODS:
        raise TeError(f"unknown candidate-path method '{method}'", hint=f"methods: {', '.join(METHODS)}")
    if not isinstance(k, int) or k < 1:
        raise TeError(f"k must be a positive number of paths per technology, got {k!r}")
    search = _PathSearch(network)
    usage = np.zeros(len(network.links))   # least common: chosen paths on each link so far
    result = []
    for source, destinations in endpoints:
        ranked = []
        for technology in network.technologies:
            if method == SHORTEST:
                ranked.append(search.shortest(technology, source, destinations, k))
            else:
                drawn = search.shortest(technology, source, destinations, max(pool, k))
                ranked.append(_least_common(network, drawn, k, usage))
        paths = tuple(p[rank] for rank in range(k) for p in ranked if rank < len(p))
        if not paths:
            raise TeError(f"no path from {source} to {'|'.join(destinations)} in network {network.name} "
                          f"(technologies: {', '.join(network.technologies)})")
        result.append(paths)
    return tuple(result)


def _least_common(network: Network, drawn: list[Path], k: int, usage: np.ndarray) -> list[Path]:
    links = [np.array(network.arcs(p)) // 2 for p in drawn]
    left = list(range(len(drawn)))
    chosen = []
    while left and len(chosen) < k:
        best = min(left, key=lambda i: (usage[links[i]].sum(), drawn[i].hops, i))
        left.remove(best)
        chosen.append(drawn[best])
        usage[links[best]] += 1
    return chosen


class _PathSearch:
    """Shortest simple paths per technology and destination set, on a directed graph that
    leaves no destination except towards a virtual sink joined to all of them."""

    def __init__(self, network: Network):
        self.network = network
        self.graphs: dict[tuple[str, tuple[str, ...]], nx.DiGraph] = {}

    def shortest(self, technology: str, source: str, destinations: tuple[str, ...], count: int) -> list[Path]:
        graph = self._graph(technology, destinations)
        try:
            return [Path(technology, tuple(p[:-1]))
                    for p in islice(nx.shortest_simple_paths(graph, source, _SINK), count)]
        except nx.NetworkXNoPath:
            return []

    def _graph(self, technology: str, destinations: tuple[str, ...]) -> nx.DiGraph:
        key = (technology, destinations)
        if key not in self.graphs:
            ends = set(destinations)
            graph = nx.DiGraph()
            graph.add_nodes_from(self.network.nodes)
            for link in self.network.links:
                if link.technology == technology:
                    if link.a not in ends:
                        graph.add_edge(link.a, link.b)
                    if link.b not in ends:
                        graph.add_edge(link.b, link.a)
            graph.add_edges_from((d, _SINK) for d in destinations)
            self.graphs[key] = graph
        return self.graphs[key]


def instance_for(network: Network, flows: Sequence[Flow], k: int, method: str = LEAST_COMMON,
                 pool: int = DEFAULT_POOL) -> Instance:
    """The flows on the network with candidate paths computed for them, in their order."""
    for flow in flows:
        check_flow(network, flow)   # before the search, so a bad flow is named as such
    return Instance(network, tuple(flows),
                    candidate_paths(network, [(f.source, f.destinations) for f in flows], k, method, pool))
