"""Topologies (topologies/*.yaml): nodes, links, an addressing plan and static routes.

A topology file names nodes (role host or router, and the router's target) and links
(with an optional bandwidth in Mbit/s and an optional one-way `delay`, e.g. "2ms" or "500us").
The delay is declared, not emulated (the testbed's kernel has no netem): service-chain
placement counts it against delay budgets. Everything else is derived, deterministically:
link i gets 10.0.i.0/24 and 2001:db8:0:i::/64, its first endpoint .1/::1 and its second
.2/::2; node X's k-th link is interface X-eth<k> with MAC 02:00:00:<node>:<i>:<side>.
"""
from __future__ import annotations

import ipaddress
import math
import re
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import yaml

from controller.errors import TopologyError

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"
ROLES = {"host", "router"}
# what may run each role: hosts are plain Linux stacks, routers run NFRouter on a data plane
TARGETS = {"host": ("kernel",), "router": ("xdp", "bmv2")}
IFNAMSIZ = 15
MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]+)\s*")


@dataclass
class Interface:
    node: str
    name: str
    mac: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface
    link: int
    peer: "Interface | None" = None


@dataclass
class TopoNode:
    name: str
    role: str
    target: str
    interfaces: list[Interface] = field(default_factory=list)


@dataclass
class TopoLink:
    index: int
    a: Interface
    b: Interface
    bw: float | None = None
    delay_ms: float = 0.0       # declared one-way delay; 0 where none is declared


@dataclass(frozen=True)
class StaticRoute:
    prefix: str
    interface: str | None = None
    mac: str | None = None
    via: str | None = None
    local: bool = False


class Topology:
    def __init__(self, name: str, nodes: dict[str, TopoNode], links: list[TopoLink]):
        self.name, self.nodes, self.links = name, nodes, links
        self.graph = nx.Graph()
        for n in nodes.values():
            self.graph.add_node(n.name, role=n.role)
        for link in links:
            self.graph.add_edge(link.a.node, link.b.node, link=link)

    @property
    def routers(self) -> list[TopoNode]:
        return [n for n in self.nodes.values() if n.role == "router"]

    @property
    def hosts(self) -> list[TopoNode]:
        return [n for n in self.nodes.values() if n.role == "host"]

    def retarget(self, target: str) -> "Topology":
        """A copy of the topology with every router on `target` (hosts stay as they are)."""
        if target not in TARGETS["router"]:
            raise TopologyError(f"a router cannot run target '{target}'",
                                hint=f"a router's target is one of: {', '.join(TARGETS['router'])}")
        copy = deepcopy(self)
        for n in copy.routers:
            n.target = target
        return copy

    def to_doc(self) -> dict:
        """The topology as a document parse_topology reads back into this same topology (the
        addressing plan is derived from it): what a running testbed records in the store."""
        nodes = {n.name: {"role": n.role, **({"target": n.target} if n.role == "router" else {})}
                 for n in self.nodes.values()}
        links = [{"a": link.a.node, "b": link.b.node, **({"bw": link.bw} if link.bw else {}),
                  **({"delay": f"{link.delay_ms!r}ms"} if link.delay_ms else {})} for link in self.links]
        return {"name": self.name, "nodes": nodes, "links": links}

    def node(self, name: str) -> TopoNode:
        if name not in self.nodes:
            raise TopologyError(f"topology {self.name} has no node '{name}'",
                                hint=f"nodes: {', '.join(self.nodes)}")
        return self.nodes[name]

    def interface_towards(self, node: str, neighbour: str) -> Interface:
        """`node`'s interface on its link to `neighbour`."""
        link = self.graph.edges[node, neighbour]["link"]
        return link.a if link.a.node == node else link.b

    def gateway(self, host: str) -> Interface:
        """The router interface a host sends everything to."""
        for iface in self.node(host).interfaces:
            if self.nodes[iface.peer.node].role == "router":
                return iface.peer
        raise TopologyError(f"host {host} is attached to no router")

    def static_routes(self, router: str) -> list[StaticRoute]:
        """Shortest-path routes to every link subnet, as `router` should hold them."""
        if self.node(router).role != "router":
            raise TopologyError(f"{router} is a host; only routers hold static routes")
        core = self.graph.subgraph(n.name for n in self.routers)
        routes = []
        for link in self.links:
            ends = (link.a, link.b)
            mine = [e for e in ends if e.node == router]
            if mine:
                own, peer = mine[0], mine[0].peer
                for addr in (own.ipv4, own.ipv6):
                    routes.append(StaticRoute(f"{addr.ip}/{addr.network.max_prefixlen}", local=True))
                for addr in (peer.ipv4, peer.ipv6):
                    routes.append(StaticRoute(f"{addr.ip}/{addr.network.max_prefixlen}", own.name, peer.mac))
                continue
            targets = [e.node for e in ends if self.nodes[e.node].role == "router" and e.node in core]
            paths = [nx.shortest_path(core, router, t) for t in targets if nx.has_path(core, router, t)]
            if not paths:
                continue
            path = min(paths, key=len)
            out = self.interface_towards(router, path[1])
            for net, via in ((link.a.ipv4.network, out.peer.ipv4.ip), (link.a.ipv6.network, out.peer.ipv6.ip)):
                routes.append(StaticRoute(str(net), out.name, out.peer.mac, str(via)))
        return routes


def link_delay_ms(value: object, where: str) -> float:
    """A link's declared delay ("2ms", "500us", "0.1 s") in milliseconds; TopologyError naming
    `where` if it is not such a duration."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in MS_PER_UNIT:
        raise TopologyError(f"{where}: delay must be a duration with a unit, like '2ms' or '500us', got {value!r}",
                            hint=f"units: {', '.join(MS_PER_UNIT)}")
    ms = float(match.group(1)) * MS_PER_UNIT[match.group(2)]
    if not math.isfinite(ms):
        raise TopologyError(f"{where}: delay {value!r} is not a finite duration")
    return ms


def _mac(node_index: int, link: int, side: int) -> str:
    return f"02:00:00:{node_index:02x}:{link:02x}:{side:02x}"


def parse_topology(doc: dict, source: str) -> Topology:
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), dict) or not isinstance(doc.get("links"), list):
        raise TopologyError(f"{source}: a topology has a 'nodes' mapping and a 'links' list")
    nodes: dict[str, TopoNode] = {}
    for name, spec in doc["nodes"].items():
        spec = spec or {}
        role = spec.get("role", "host")
        if role not in ROLES:
            raise TopologyError(f"{source}: node {name}: unknown role '{role}'", hint="roles: host, router")
        target = spec.get("target", TARGETS[role][0])
        if target not in TARGETS[role]:
            raise TopologyError(f"{source}: node {name}: a {role} cannot run target '{target}'",
                                hint=f"a {role}'s target is one of: {', '.join(TARGETS[role])}")
        nodes[str(name)] = TopoNode(str(name), role, target)
    index = {name: i + 1 for i, name in enumerate(nodes)}
    links = []
    for i, spec in enumerate(doc["links"], start=1):
        if not isinstance(spec, dict) or "a" not in spec or "b" not in spec:
            raise TopologyError(f"{source}: link {i}: a link is {{a: NODE, b: NODE, bw: MBIT, delay: DURATION}}, "
                                f"got {spec!r}")
        ends = []
        for side, key in enumerate(("a", "b"), start=1):
            name = str(spec[key])
            if name not in nodes:
                raise TopologyError(f"{source}: link {i} names unknown node '{name}'",
                                    hint=f"nodes: {', '.join(nodes)}")
            node = nodes[name]
            ifname = f"{name}-eth{len(node.interfaces)}"
            if len(ifname) > IFNAMSIZ:
                raise TopologyError(f"{source}: interface name {ifname} is longer than {IFNAMSIZ} characters",
                                    hint="use shorter node names")
            iface = Interface(name, ifname, _mac(index[name], i, side),
                              ipaddress.IPv4Interface(f"10.0.{i}.{side}/24"),
                              ipaddress.IPv6Interface(f"2001:db8:0:{i:x}::{side}/64"), i)
            node.interfaces.append(iface)
            ends.append(iface)
        if ends[0].node == ends[1].node:
            raise TopologyError(f"{source}: link {i} connects {ends[0].node} to itself")
        ends[0].peer, ends[1].peer = ends[1], ends[0]
        bw = spec.get("bw")
        if bw is not None and (not isinstance(bw, (int, float)) or bw <= 0):
            raise TopologyError(f"{source}: link {i}: bw must be a positive number of Mbit/s, got {bw!r}")
        delay = spec.get("delay")
        delay_ms = 0.0 if delay is None else \
            link_delay_ms(delay, f"{source}: link {i} ({ends[0].node}–{ends[1].node})")
        links.append(TopoLink(i, ends[0], ends[1], bw, delay_ms))
    if len(links) > 250:
        raise TopologyError(f"{source}: {len(links)} links; the addressing plan holds 250")
    return Topology(str(doc.get("name", source)), nodes, links)


def load_topology(name_or_path: str) -> Topology:
    path = Path(name_or_path)
    if not path.exists():
        path = TOPOLOGY_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in sorted(TOPOLOGY_DIR.glob("*.yaml")))
        raise TopologyError(f"no topology '{name_or_path}'", hint=f"known topologies: {known}, or give a file path")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_topology(doc, str(path))
