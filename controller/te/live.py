"""The running testbed as the path allocator sees it: a TE network, hosts by address, each
flow's path as the routers' desired routes send it, and the flow_routes entries that pin a flow
to another path.

A flow's default path is walked hop by hop through the desired routes in the store (longest
prefix match on the destination at each router), so it follows the routes innet installed,
not a guess from the topology's shape. A path override pins every router hop of its path with
an exact-match flow_routes entry of the router's NFRouter, so the flow keeps its path whatever
the LPM routes later say.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from controller.routes import ROUTER
from controller.stats import Flow as FlowKey
from controller.store import RouteRow
from controller.tables import TableEntry
from controller.te.network import WIRED, Network, Path
from controller.topology import Topology

FLOW_TABLE = "flow_routes"


def flow_key(flow: FlowKey) -> str:
    """The text a flow is stored and shown under: 'src dst sport dport proto'."""
    return f"{flow.src} {flow.dst} {flow.sport} {flow.dport} {flow.proto}"


def parse_flow_key(text: str) -> FlowKey:
    src, dst, sport, dport, proto = text.split()
    return FlowKey.of(src, dst, int(sport), int(dport), int(proto))


@dataclass(frozen=True)
class PinEntry:
    """One router's flow_routes entry of a path override."""
    node: str
    entry: TableEntry

    def as_doc(self) -> dict:
        return {"node": self.node, "match": self.entry.match, "params": self.entry.params}

    @classmethod
    def from_doc(cls, doc: dict) -> "PinEntry":
        return cls(doc["node"], TableEntry(FLOW_TABLE, doc["match"], "forward", doc["params"]))

    def same_key(self, other: "PinEntry") -> bool:
        return self.node == other.node and self.entry.key() == other.entry.key()


class LiveNetwork:
    """One testbed topology with the routes its routers hold in the desired state."""

    def __init__(self, topology: Topology, store, router_instance: str = ROUTER):
        self.topology = topology
        self.store = store
        self.router_instance = router_instance
        self._host_of = {ip: host.name for host in topology.hosts for i in host.interfaces
                         for ip in (i.ipv4.ip, i.ipv6.ip)}
        self._interface = {(i.node, i.name): i for n in topology.nodes.values() for i in n.interfaces}
        self._routes: dict[str, list[RouteRow]] = {}

    @cached_property
    def network(self) -> Network:
        """The TE network (a TeError when no link has a bandwidth: nothing to balance)."""
        return Network.from_topology(self.topology)

    @cached_property
    def _capacity(self):
        return self.network.arc_capacities()

    def refresh(self) -> None:
        """Forget the routes read so far (they are read again, once per epoch)."""
        self._routes.clear()

    def host_of(self, address) -> str | None:
        return self._host_of.get(ipaddress.ip_address(address))

    def endpoints(self, flow: FlowKey) -> tuple[str, str] | None:
        """The hosts a flow runs between, or None when an end is no host of the testbed."""
        src, dst = self.host_of(flow.src), self.host_of(flow.dst)
        return (src, dst) if src and dst and src != dst else None

    def default_path(self, flow: FlowKey) -> tuple[str, ...] | None:
        """The nodes the routers' desired routes take the flow through, source host first; None
        when they do not deliver it to its destination host (no route, a loop, a local route)."""
        ends = self.endpoints(flow)
        if ends is None:
            return None
        source, destination = ends
        path = [source]
        node = self.topology.gateway(source).node
        while node not in path:
            path.append(node)
            route = self._route(node, flow.dst)
            if route is None or route.local or route.interface is None:
                return None
            iface = self._interface.get((node, route.interface))
            if iface is None or iface.peer is None:
                return None
            node = iface.peer.node
            if node == destination:
                return (*path, node)
            if self.topology.nodes[node].role != "router":
                return None
        return None

    def pin_entries(self, flow: FlowKey, path: tuple[str, ...]) -> list[PinEntry]:
        """The flow_routes entries that send the flow along `path`, ingress router first."""
        match = {"src_addr": str(flow.src), "dst_addr": str(flow.dst), "src_port": flow.sport,
                 "dst_port": flow.dport, "proto": flow.proto}
        pins = []
        for node, nxt in zip(path[1:-1], path[2:]):
            out = self.topology.interface_towards(node, nxt)
            pins.append(PinEntry(node, TableEntry(FLOW_TABLE, dict(match), "forward",
                                                  {"egress_port": out.name, "dst_mac": out.peer.mac,
                                                   "src_mac": out.mac})))
        return pins

    def bottleneck(self, path: tuple[str, ...]) -> float | None:
        """The smallest capacity along a path, Mbit/s (None: no link of it has one)."""
        capacities = [c for c in self._capacity[self.arcs(path)] if c != float("inf")]
        return min(capacities) if capacities else None

    def arcs(self, path: tuple[str, ...]) -> list[int]:
        return self.network.arcs(Path(WIRED, path))

    def capacity(self, arc: int) -> float:
        return float(self._capacity[arc])

    def _route(self, node: str, address) -> RouteRow | None:
        if node not in self._routes:
            self._routes[node] = [r for r in self.store.routes(node) if r.instance == self.router_instance]
        addr = ipaddress.ip_address(address)
        best, best_len = None, -1
        for r in self._routes[node]:
            net = ipaddress.ip_network(r.prefix)
            if net.version == addr.version and addr in net and net.prefixlen > best_len:
                best, best_len = r, net.prefixlen
        return best