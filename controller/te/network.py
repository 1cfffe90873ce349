"""The TE network model: nodes, links with a capacity, flows with a demand, candidate paths.

Links are full duplex: a link of capacity c carries up to c Mbit/s in each direction, as a
Mininet TCLink (each interface shapes its own egress) or a data-centre cable does, so the twin
works on arcs, two per link (arc 2i is link i from a to b, arc 2i+1 from b to a). For PHaul's
IAB backhaul this is a modelling choice: its flows all head for a donor, so two candidate paths
rarely cross one link in opposite directions.

Every link belongs to one technology (PHaul's "mmwave" and "sub6"; "wired" elsewhere). Two
nodes may be joined by one link per technology, never two of the same, so a path is named by
its technology and its nodes. A link's capacity may be None, meaning no constraint: innet's
topologies leave host access links unshaped; a network needs at least one capacitated link.

A flow goes from its source to any one of its destinations (PHaul: any donor; elsewhere one
host or router), with a demand λ in Mbit/s. An instance is a network, its flows and each
flow's candidate paths; it is checked whole when made, so a bad one fails before an allocator
or the twin sees it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from controller.te.errors import TeError
from controller.topology import Topology

WIRED = "wired"


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    capacity: float | None          # Mbit/s in each direction; None: not a constraint
    technology: str = WIRED


@dataclass(frozen=True)
class Path:
    technology: str
    nodes: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.nodes) - 1


@dataclass(frozen=True)
class Flow:
    name: str
    source: str
    destinations: tuple[str, ...]   # any one of them will do
    demand: float                   # λ, Mbit/s

    @property
    def label(self) -> str:
        """How errors name the flow: its name and where it goes."""
        return f"flow {self.name} ({self.source} -> {'|'.join(self.destinations)})"


@dataclass(frozen=True, eq=False)
class Network:
    nodes: tuple[str, ...]
    links: tuple[Link, ...]
    name: str = "network"

    def __post_init__(self):
        known = self.node_set
        if len(known) != len(self.nodes):
            raise TeError(f"network {self.name}: a node is named twice")
        for i, link in enumerate(self.links):
            where = f"network {self.name}: link {i} ({link.a} - {link.b}, {link.technology})"
            for end in (link.a, link.b):
                if end not in known:
                    raise TeError(f"{where} names unknown node '{end}'")
            if link.a == link.b:
                raise TeError(f"{where} joins a node to itself")
            if link.capacity is not None and not (math.isfinite(link.capacity) and link.capacity > 0):
                raise TeError(f"{where}: capacity must be a positive number of Mbit/s or None, "
                              f"got {link.capacity!r}")
        if len(self._link_of) != len(self.links):
            raise TeError(f"network {self.name}: two links of one technology join the same two nodes")
        if all(link.capacity is None for link in self.links):
            raise TeError(f"network {self.name} has no link with a capacity",
                          hint="give links a bandwidth (topology files: bw in Mbit/s on each link)")

    @cached_property
    def node_set(self) -> frozenset[str]:
        return frozenset(self.nodes)

    @cached_property
    def _link_of(self) -> dict[tuple[str, frozenset[str]], int]:
        return {(link.technology, frozenset((link.a, link.b))): i for i, link in enumerate(self.links)}

    @cached_property
    def technologies(self) -> tuple[str, ...]:
        return tuple(sorted({link.technology for link in self.links}))

    def link_between(self, technology: str, a: str, b: str) -> int | None:
        return self._link_of.get((technology, frozenset((a, b))))

    def arcs(self, path: Path) -> list[int]:
        """The arcs a path crosses, in order; a TeError names the first hop that is no link."""
        arcs = []
        for u, v in zip(path.nodes, path.nodes[1:]):
            link = self.link_between(path.technology, u, v)
            if link is None:
                raise TeError(f"network {self.name}: no {path.technology} link {u} - {v} "
                              f"on path {' > '.join(path.nodes)}")
            arcs.append(2 * link + (self.links[link].a != u))
        return arcs

    def arc_capacities(self) -> np.ndarray:
        """Capacity of every arc, Mbit/s; inf where the link has none."""
        per_link = np.array([np.inf if link.capacity is None else link.capacity for link in self.links], dtype=float)
        return np.repeat(per_link, 2)

    @classmethod
    def from_topology(cls, topology: Topology) -> "Network":
        """innet's topology as a wired network: every node (hosts too), every link with its bw."""
        return cls(tuple(topology.nodes),
                   tuple(Link(link.a.node, link.b.node, link.bw) for link in topology.links),
                   name=topology.name)


@dataclass(frozen=True, eq=False)
class Instance:
    network: Network
    flows: tuple[Flow, ...]
    paths: tuple[tuple[Path, ...], ...]   # each flow's candidates, in the flow's order

    def __post_init__(self):
        if not self.flows:
            raise TeError(f"instance on {self.network.name} has no flow")
        if len(self.paths) != len(self.flows):
            raise TeError(f"instance on {self.network.name}: {len(self.flows)} flows but "
                          f"{len(self.paths)} candidate path lists")
        names = [f.name for f in self.flows]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise TeError(f"instance on {self.network.name}: flow name given twice: {', '.join(twice)}")
        for flow, paths in zip(self.flows, self.paths):
            check_flow(self.network, flow)
            if not paths:
                raise TeError(f"{flow.label} has no candidate path in network {self.network.name}")
            for path in paths:
                self._check_path(flow, path)

    def _check_path(self, flow: Flow, path: Path) -> None:
        shown = " > ".join(path.nodes)
        if len(path.nodes) < 2 or path.nodes[0] != flow.source or path.nodes[-1] not in flow.destinations:
            raise TeError(f"{flow.label}: candidate path {shown} does not join its source to a destination")
        if len(set(path.nodes)) != len(path.nodes):
            raise TeError(f"{flow.label}: candidate path {shown} visits a node twice")
        self.network.arcs(path)   # every hop a link of the path's technology


def check_flow(network: Network, flow: Flow) -> None:
    """A TeError unless the flow's endpoints are nodes and its demand a positive number."""
    if not (isinstance(flow.demand, (int, float)) and math.isfinite(flow.demand) and flow.demand > 0):
        raise TeError(f"{flow.label}: demand must be a positive number of Mbit/s, got {flow.demand!r}")
    if not flow.destinations:
        raise TeError(f"{flow.label} has no destination")
    for node in (flow.source, *flow.destinations):
        if node not in network.node_set:
            raise TeError(f"{flow.label} names node '{node}', which network {network.name} lacks")
    if flow.source in flow.destinations:
        raise TeError(f"{flow.label}: its source is one of its destinations")
