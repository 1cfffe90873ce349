"""Service chains: where a service's NF instances run and which NSH rules steer its traffic.

`plan(service, topology, spis)` is a pure function: from a resolved service (controller.nsd,
endpoints bound to hosts) and the testbed's topology it places every NF instance on a router
and turns every forwarding graph into a path of routers and NSH rules (RFC 8300):

- the ingress router (the source host's gateway) classifies the graph's traffic and
  encapsulates it with the graph's SPI and SI 255 (`sfc_classify` -> `encap`);
- each router on the path dispatches on (SPI, SI) (`sfc_hops`): to a local NF instance
  (`to_nf`, which decrements SI), to the next router (`forward`), or, at the egress router
  (the destination host's gateway), back to plain IP (`decap`), which the router then routes.

Placement (the descriptor's constraints first): an instance with a node runs there; the
others go, in hop order, to routers of the best path between the graph's two gateways (the
least declared link delay plus per-router processing, HOP_MS), each to the least loaded
router (forwarder slots held, by any service, against the forwarder's slots) not before the
previous hop's, ties to the earliest: a chain spreads over its path, and services whose
descriptors name no node spread over the routers rather than piling on the ingress. An
instance of the previous version of the service stays on its router. A graph's path runs
from its ingress through the routers of its instances, in hop order, to its egress. An
instance used by two graphs (the two directions) runs once, where its first graph put it.
A chain may cross XDP and BMv2 routers alike, each running the forwarder (sff) with the NF
instances behind it. A BMv2 switch's composed pipeline holds one copy of each NF type, so an
instance goes to a BMv2 router only where no other instance of its type runs (`held_types`).

Delay: each graph's path, host to host, takes its links' declared delays (topology `delay`)
plus HOP_MS of each router it crosses; a graph with a delay budget it exceeds is refused with
that figure. Paths are the least-delay ones the descriptor's node constraints allow, so the
figure is the best the testbed can do.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import networkx as nx

from controller.catalog import get_nf
from controller.errors import InnetError
from controller.nsd.model import ForwardingGraph, Service
from controller.topology import Topology

FORWARDER = "sff"       # the forwarder's NF type and its instance id on every chain router
FIRST_SI = 255          # RFC 8300: the classifier starts a path at SI 255
DEFAULT_SLOTS = get_nf(FORWARDER).parameters["max_nfs"].default   # a forwarder's NF slots, unless set
MAX_SPI = (1 << 24) - 1
# One-way processing per router a chain's path crosses, ms, per target: the p50 one-way latency
# h1 -> h2 of TCP SYN probes through the heavy-hitters chain on line3 (one NF on each of its 3
# routers) over 3, as `.venv/bin/python bench/chains.py` prints it ("per-hop processing figure",
# part 1, once per target; 2 CPUs, kernel 6.18); the hosts' send and receive paths are counted
# into the routers. XDP 27 us / 3 routers. BMv2 (`--target bmv2`: line3 retargeted,
# simple_switch_grpc, the composed pipeline, a recirculation per NF): 1402 us / 3 = 0.467 ms in
# the full run, 0.467-0.524 ms over five runs (full, --quick and `--target bmv2 --parts 1`),
# median 0.49; routed plainly, no chain, ~0.115 ms per switch.
HOP_MS = {"xdp": 0.009, "bmv2": 0.49}


class ChainError(InnetError):
    """A service cannot be placed on the testbed as described."""


@dataclass(frozen=True)
class PlacedInstance:
    node: str
    id: str             # the instance id on its node: <service>--<descriptor instance name>
    nf: str
    params: dict
    slot: int           # its slot in the node's forwarder (sfc_hops to_nf)


@dataclass(frozen=True)
class Rule:
    """One table entry of a node's forwarder, as controller.tables.TableEntry takes it."""
    node: str
    table: str
    match: dict
    action: str
    params: dict


@dataclass
class PathPlan:
    graph: str
    spi: int
    routers: list[str]                 # the routers the graph's packets cross, in order
    hops: list[tuple[str, str]]        # (instance id, node) in the order the packets meet them
    positions: list[int]               # for each hop, the index in routers where it runs (a path may
                                       # cross a router twice)
    hosts: list[str] = field(default_factory=list)   # [source host, destination host]
    links_ms: float = 0.0              # declared delays of the links host to host
    processing_ms: float = 0.0         # HOP_MS of every router crossed
    budget_ms: float | None = None     # the graph's delay budget, if it has one

    @property
    def delay_ms(self) -> float:
        return self.links_ms + self.processing_ms


@dataclass
class Plan:
    service: str
    paths: list[PathPlan] = field(default_factory=list)
    instances: list[PlacedInstance] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        """Every router that takes part, each once, in path order."""
        return list(dict.fromkeys(r for p in self.paths for r in p.routers))

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "Plan":
        return cls(doc["service"], [PathPlan(**{**p, "hops": [tuple(h) for h in p["hops"]]}) for p in doc["paths"]],
                   [PlacedInstance(**i) for i in doc["instances"]], [Rule(**r) for r in doc["rules"]])


def instance_id(service: str, name: str) -> str:
    return f"{service}--{name}"   # '--': instance ids carry no '.', and single '-' is common in names


def plan(service: Service, topology: Topology, spis: dict[str, int], used_slots: dict[str, set[int]],
         kept_slots: dict[tuple[str, str], int] | None = None, slot_limits: dict[str, int] | None = None,
         held_types: dict[str, set[str]] | None = None) -> Plan:
    """Place `service` (endpoints resolved to hosts) on `topology`. `spis`: graph name -> its SPI;
    `used_slots`: node -> forwarder slots held there by other instances; `kept_slots`: (node,
    instance id) -> the slot an instance of this service's previous plan holds, which it keeps;
    `slot_limits`: node -> NF slots of its forwarder where it runs with other than the default;
    `held_types`: node -> NF types other instances (of other services, or none) run there."""
    routers = topology.graph.subgraph(n.name for n in topology.routers)
    placer = _Placer(service, topology, routers, {n: set(s) for n, s in used_slots.items()}, kept_slots or {},
                     slot_limits or {}, {n: set(t) for n, t in (held_types or {}).items()})
    result = Plan(service.name)
    for graph in service.forwarding_graphs:
        result.paths.append(placer.path(graph, spis[graph.name]))
    result.instances = list(placer.placed.values())
    for path, graph in zip(result.paths, service.forwarding_graphs):
        result.rules += _classify_rules(service, graph, topology, path)
        result.rules += _hop_rules(path, placer.placed, topology)
    return result


class _Placer:
    def __init__(self, service: Service, topology: Topology, routers: nx.Graph, used_slots: dict[str, set[int]],
                 kept_slots: dict[tuple[str, str], int], slot_limits: dict[str, int], held_types: dict[str, set[str]]):
        self.service, self.topology, self.routers = service, topology, routers
        self.used_slots, self.kept_slots, self.slot_limits = used_slots, kept_slots, slot_limits
        self.held_types = held_types
        self.instances = {i.name: i for i in service.nf_instances}
        self.placed: dict[str, PlacedInstance] = {}

    def _gateway(self, endpoint: str) -> str:
        host = next(e.host for e in self.service.endpoints if e.name == endpoint)
        return self.topology.gateway(host).node

    def _host(self, endpoint: str) -> str:
        return next(e.host for e in self.service.endpoints if e.name == endpoint)

    def _step_ms(self, _from: str, to: str, edge: dict) -> float | None:
        """Dijkstra's cost of entering router `to`: the link's delay and the router's processing;
        None (no way through) for a router of a target that runs no chains."""
        hop = HOP_MS.get(self.topology.nodes[to].target)
        return None if hop is None else edge["link"].delay_ms + hop

    def _shortest(self, a: str, b: str, graph: str) -> list[str]:
        try:
            return nx.shortest_path(self.routers, a, b, weight=self._step_ms)
        except nx.NetworkXNoPath:
            pass
        try:   # every path crosses a router that runs no chains: the caller's target check names it
            return nx.shortest_path(self.routers, a, b)
        except nx.NetworkXNoPath:
            raise ChainError(f"service {self.service.name}, graph {graph}: no path of routers from {a} to {b}") \
                from None

    def path(self, graph: ForwardingGraph, spi: int) -> PathPlan:
        ingress, egress = self._gateway(graph.source), self._gateway(graph.destination)
        base = self._shortest(ingress, egress, graph.name)
        nf_hops = [h for h in graph.hops if not self.instances[h].implicit]   # an implicit NFRouter: the routers
        earliest = 0   # hops keep their order along the base path: no instance before the previous one
        for name in nf_hops:
            if name not in self.placed:
                self._place(name, self.instances[name].node or self._choose(name, base, earliest))
            if self.placed[name].node in base:
                earliest = max(earliest, base.index(self.placed[name].node))
        path = PathPlan(graph.name, spi, [ingress], [], [])
        for k, point in enumerate([self.placed[h].node for h in nf_hops] + [egress]):
            path.routers += self._shortest(path.routers[-1], point, graph.name)[1:]
            if k < len(nf_hops):
                path.hops.append((self.placed[nf_hops[k]].id, point))
                path.positions.append(len(path.routers) - 1)
        for r in path.routers:
            self._check_target(r, f"service {self.service.name}, graph {graph.name}")
        self._delay(path, graph)
        return path

    def _delay(self, path: PathPlan, graph: ForwardingGraph) -> None:
        """The path's one-way delay host to host; ChainError if it exceeds the graph's budget."""
        path.hosts = [self._host(graph.source), self._host(graph.destination)]
        nodes = [path.hosts[0], *path.routers, path.hosts[1]]
        path.links_ms = sum(self.topology.graph.edges[a, b]["link"].delay_ms for a, b in zip(nodes, nodes[1:]))
        path.processing_ms = sum(HOP_MS[self.topology.nodes[r].target] for r in path.routers)
        path.budget_ms = graph.delay_budget_ms
        # a relative margin: a budget written as the exact sum must not fail on float rounding
        if path.budget_ms is not None and path.delay_ms > path.budget_ms * (1 + 1e-9):
            per_hop = " + ".join(f"{n} router hops × {_ms(HOP_MS[t])} ms" for t, n in
                                 Counter(self.topology.nodes[r].target for r in path.routers).items())
            raise ChainError(f"service {self.service.name}, graph {graph.name}: delay budget {_ms(path.budget_ms)} ms "
                             f"cannot be met: the best path {'–'.join(nodes)} takes {_ms(path.delay_ms)} ms "
                             f"(links {_ms(path.links_ms)} ms, {per_hop})",
                             hint="the figure counts the links' declared delays (topology `delay`) and each router "
                                  "crossed (controller.chains.HOP_MS, measured by bench/chains.py); a `node` the "
                                  "descriptor names can lengthen the path")

    def _load(self, node: str) -> float:
        return len(self.used_slots.get(node, ())) / self.slot_limits.get(node, DEFAULT_SLOTS)

    def _has_room(self, node: str, nf: str) -> bool:
        used = self.used_slots.get(node, set())
        return any(s not in used for s in range(self.slot_limits.get(node, DEFAULT_SLOTS))) \
            and not self._type_held(node, nf)

    def _type_held(self, node: str, nf: str) -> bool:
        """Whether a BMv2 router runs an instance of `nf` already: its pipeline holds one per type."""
        return self.topology.nodes[node].target == "bmv2" and nf in self.held_types.get(node, ())

    def _choose(self, name: str, base: list[str], earliest: int) -> str:
        """The router of `base` an instance the descriptor places nowhere goes to: where the
        previous version of the service ran it, else the least loaded eligible router from
        `earliest` on (one before it only if none after has room), ties to the first."""
        ident = instance_id(self.service.name, name)
        kept = [node for node, i in self.kept_slots if i == ident and node in base]
        if kept:
            return kept[0]
        wanted, nf = self.instances[name].target, get_nf(self.instances[name].nf)
        fitting = [j for j, r in enumerate(base) if self.topology.nodes[r].target in HOP_MS
                   and wanted in (None, self.topology.nodes[r].target) and nf.chain_hop(self.topology.nodes[r].target)]
        eligible = [j for j in fitting if self._has_room(base[j], nf.name)]
        if eligible:
            return base[min(eligible, key=lambda j: (j < earliest, self._load(base[j]), j))]
        if fitting:
            targets = {self.topology.nodes[base[j]].target for j in fitting}
            why = (["the forwarders' NF slots are all held by other chains"] if "xdp" in targets else []) + \
                ([f"the BMv2 switches run a {nf.name} already (one per switch) or have no free slot"]
                 if "bmv2" in targets else [])
            raise ChainError(f"service {self.service.name}, NF instance {name}: no router on its path "
                             f"({', '.join(base)}) has room: {'; '.join(why)}",
                             hint=f"place it on a router off the path (`node`), or give a forwarder more slots: "
                                  f"innet nf set {base[0]} {FORWARDER} --param max_nfs=16")
        return base[earliest]   # no router of its target on the path: _place says why

    def _place(self, name: str, node: str) -> None:
        inst = self.instances[name]
        where = f"service {self.service.name}, NF instance {name}"
        topo_node = self.topology.nodes.get(node)
        if topo_node is None or topo_node.role != "router":
            routers = ", ".join(n.name for n in self.topology.routers)
            raise ChainError(f"{where}: '{node}' is not a router of topology {self.topology.name} (routers: {routers})")
        if inst.target and inst.target != topo_node.target:
            raise ChainError(f"{where}: wants target {inst.target}, but {node} runs {topo_node.target}",
                             hint="name a router of that target with `node`, or drop the target")
        self._check_target(node, where)
        if not get_nf(inst.nf).chain_hop(topo_node.target):
            raise ChainError(f"{where}: {inst.nf} cannot be a hop of a service chain on {topo_node.target}: only NFs "
                             f"that hand every packet on (cms, precision, prio) run behind the forwarder",
                             hint="leave it out of the chain, or deploy it on interfaces: innet nf deploy")
        if self._type_held(node, inst.nf):
            raise ChainError(f"{where}: the BMv2 switch of {node} runs a {inst.nf} instance already, and its "
                             f"pipeline holds one per NF type",
                             hint=f"place it on another router (`node`), or remove the other {inst.nf} from {node}")
        if topo_node.target == "bmv2":
            self.held_types.setdefault(node, set()).add(inst.nf)
        ident = instance_id(self.service.name, name)
        used = self.used_slots.setdefault(node, set())
        slot = self.kept_slots.get((node, ident))
        if slot is None:
            slot = next(s for s in range(len(used) + 1) if s not in used)
        if slot >= self.slot_limits.get(node, DEFAULT_SLOTS):
            raise ChainError(f"{where}: the forwarder of {node} has {self.slot_limits.get(node, DEFAULT_SLOTS)} NF "
                             f"slots and other chains hold them all",
                             hint=f"place it on another router (`node`), or redeploy {FORWARDER} on {node} with "
                                  f"more: innet nf set {node} {FORWARDER} --param max_nfs=16")
        used.add(slot)
        self.placed[name] = PlacedInstance(node, ident, inst.nf, dict(inst.parameters), slot)

    def _check_target(self, node: str, where: str) -> None:
        target = self.topology.nodes[node].target
        if target not in HOP_MS:
            raise ChainError(f"{where}: router {node} runs {target}, which has no service function forwarder",
                             hint=f"service chains run on {' and '.join(HOP_MS)} routers")


def _ms(value: float) -> str:
    return f"{value:.4g}"


def _classify_rules(service: Service, graph: ForwardingGraph, topology: Topology, path: PathPlan) -> list[Rule]:
    """Exact entries for every (source address, destination address) pair of one family."""
    endpoints = {e.name: e for e in service.endpoints}
    match = graph.classifier
    sources = [a for a in endpoints[graph.source].addresses
               if match.source_address is None or a in match.source_address]
    destinations = [a for a in endpoints[graph.destination].addresses
                    if match.destination_address is None or a in match.destination_address]
    rules = []
    for src in sources:
        for dst in destinations:
            if src.version != dst.version or src.is_link_local or dst.is_link_local:
                continue
            rules.append(Rule(path.routers[0], "sfc_classify",
                              {"src_addr": str(src), "dst_addr": str(dst), "proto": match.ip_proto or 0,
                               "src_port": match.source_port or 0, "dst_port": match.destination_port or 0},
                              "encap", {"spi": path.spi, "si": FIRST_SI}))
    if not rules:
        raise ChainError(f"service {service.name}, graph {graph.name}: the classifier matches no address pair of one "
                         f"family between '{graph.source}' and '{graph.destination}'")
    return rules


def _hop_rules(path: PathPlan, placed: dict[str, PlacedInstance], topology: Topology) -> list[Rule]:
    """Walk the path: at each router, its NF hops (each takes SI down by one), then on to the
    next router, or out of NSH at the last."""
    slots = {p.id: p.slot for p in placed.values()}
    si, rules, k = FIRST_SI, [], 0
    for j, router in enumerate(path.routers):
        while k < len(path.hops) and path.positions[k] == j:
            rules.append(Rule(router, "sfc_hops", {"spi": path.spi, "si": si}, "to_nf",
                              {"slot": slots[path.hops[k][0]]}))
            si, k = si - 1, k + 1
        if j + 1 < len(path.routers):
            out = topology.interface_towards(router, path.routers[j + 1])
            rules.append(Rule(router, "sfc_hops", {"spi": path.spi, "si": si}, "forward",
                              {"egress_port": out.name, "dst_mac": out.peer.mac, "src_mac": out.mac}))
        else:
            rules.append(Rule(router, "sfc_hops", {"spi": path.spi, "si": si}, "decap", {}))
    return rules
