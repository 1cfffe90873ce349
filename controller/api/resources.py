"""The API's operations as calls into the library, answering in the API's models.

The FastAPI routes (controller.api.app) call these, and so does the CLI when it acts
locally; `innet --api URL` calls controller.api.client.ApiClient instead, whose methods
have the same names and answer the same models over HTTP. What an operation checks or
answers is therefore written once, here.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import asdict

from controller.api.errors import NotFound
from controller.api.flows import FlowSamplers
from controller.api.links import LinkLoad
from controller.api.paths import PathsOut, paths_view
from controller.api.models import (ClassifierOut, DeploymentOut, FlowEstimate, ForwarderOut, HopOut, InstanceIn,
                                   InstanceOut, InstanceShown, LinkEndOut, LinkLoadOut, LinkOut, NFOut, NodeOut,
                                   OperationOut, PlacedInstanceOut, Removed, RoutesChanged, RouteOut, ServiceDeleted,
                                   ServiceDeployed, ServiceOut, ServicePathOut, ServiceSummary, StatusOut, TopFlows,
                                   TopologyNodeOut, TopologyOut)
from controller.catalog import load_catalog
from controller.chains import FORWARDER, Plan
from controller.errors import InnetError, StatsError, TargetError, TopologyError
from controller.nsd.model import Service
from controller.routes import ROUTER, Route, RouteService
from controller.service import Controller
from controller.sfc import ChainService, handed_packets, service_key
from controller.stats import Flow, flow_estimate, has_epochs, state_memory
from controller.store import InstanceRow
from controller.tables import TableEntry, normalize
from controller.topology import Interface, parse_topology


class Resources:
    def __init__(self, controller: Controller, samplers: FlowSamplers | None = None, load: LinkLoad | None = None):
        self.controller = controller
        self.samplers = samplers or FlowSamplers(controller)   # no thread until an instance is watched
        self.load = load or LinkLoad(controller)               # no thread until the topology is read

    # ---- lookups that answer 404 ------------------------------------------------------
    def _node(self, node: str) -> None:
        try:
            self.controller.node(node)
        except TopologyError as exc:
            raise NotFound(exc.message, exc.hint) from None

    def _instance(self, node: str, instance: str) -> InstanceRow:
        self._node(node)
        try:
            return self.controller.instance(node, instance)
        except TargetError as exc:
            raise NotFound(exc.message, exc.hint) from None

    # ---- nodes and status ---------------------------------------------------------------
    def nodes(self) -> list[NodeOut]:
        return [NodeOut(**asdict(n)) for n in self.controller.nodes.values()]

    def status(self) -> StatusOut:
        return StatusOut.model_validate(self.controller.status())

    def operations(self, state: str | None = None, limit: int = 50) -> list[OperationOut]:
        return [OperationOut(**asdict(op)) for op in self.controller.store.operations(state, limit)]

    def te_status(self, limit: int = 20) -> PathsOut:
        """The closed loop's path overrides and its latest decisions."""
        return paths_view(self.controller, limit)

    def topology(self) -> TopologyOut:
        """The testbed's nodes and links, each link with its load over the latest interval."""
        testbed = self.controller.store.testbed()
        topo = parse_topology(testbed["doc"], testbed["topology"]) if testbed and testbed["doc"] else None
        registered = self.controller.nodes
        nodes = [TopologyNodeOut(name=n.name, role=n.role, target=n.target, registered=n.name in registered)
                 for n in (topo.nodes.values() if topo else [])]
        nodes += [TopologyNodeOut(name=n.name, role=n.role, target=n.target, registered=True)
                  for n in registered.values() if not topo or n.name not in topo.nodes]
        interval = self.load.latest()
        links = []
        for link in topo.links if topo else []:
            links.append(LinkOut(index=link.index, a=LinkEndOut(node=link.a.node, interface=link.a.name),
                                 b=LinkEndOut(node=link.b.node, interface=link.b.name), bw_mbit=link.bw,
                                 load=_link_load(link.a, link.b, link.bw, interval.rates)))
        return TopologyOut(topology=topo.name if topo else None, running=self.controller.scope.testbed_held(),
                           nodes=nodes, links=links, interval=interval.number, ended=interval.ended,
                           duration=interval.duration)

    # ---- NF instances ---------------------------------------------------------------------
    def nf_list(self, node: str) -> list[InstanceOut]:
        self._node(node)
        (status,) = [n for n in self.status().nodes if n.name == node]
        return status.instances

    def nf_show(self, node: str, instance: str) -> InstanceShown:
        """The instance as nf_list shows it, with every map (register array) of its state:
        entries x bytes per entry as the target stores them."""
        self._instance(node, instance)
        (listed,) = [i for i in self.nf_list(node) if i.id == instance]
        return InstanceShown.of(node, listed, state_memory(self.controller, node, instance))

    def nf_deploy(self, node: str, spec: InstanceIn) -> DeploymentOut:
        """Deploy the instance, or redeploy it with what changed (its entries and routes stay)."""
        self._node(node)
        d = self.controller.deploy(node, spec.nf, spec.interfaces, spec.params, spec.id, spec.target)
        return DeploymentOut.model_validate(asdict(d))

    def nf_set(self, node: str, instance: str, params: dict[str, int]) -> DeploymentOut:
        """Change some parameters of an instance; the others keep their values."""
        row = self._instance(node, instance)
        return self.nf_deploy(node, InstanceIn(nf=row.nf, id=row.id, interfaces=list(row.interfaces),
                                               params={**row.params, **params}, target=row.target))

    def nf_remove(self, node: str, instance: str) -> Removed:
        self._node(node)
        if not self.controller.remove(node, instance):
            raise NotFound(f"no NF instance '{instance}' on {node}", hint=f"innet nf list {node} lists them")
        return Removed(node=node, instance=instance, removed=True)

    def stats(self, node: str, instance: str, stat: str) -> dict[str, int]:
        self._instance(node, instance)
        return self.controller.read_stat(node, instance, stat)

    def nfs(self) -> list[NFOut]:
        return [NFOut.of(nf) for nf in load_catalog().values()]

    # ---- routes ---------------------------------------------------------------------------
    def routes_list(self, node: str, instance: str = ROUTER) -> list[RouteOut]:
        self._instance(node, instance)
        return [RouteOut.model_validate(asdict(r)) for r in RouteService(self.controller, instance).list(node)]

    def routes_add(self, node: str, routes: list[Route], instance: str = ROUTER) -> RoutesChanged:
        """Add or replace routes in both paths, all or none."""
        self._instance(node, instance)
        added = RouteService(self.controller, instance).add_many(node, routes)
        return RoutesChanged(node=node, instance=instance, routes=len(added))

    def routes_del(self, node: str, prefixes: list[str], instance: str = ROUTER) -> RoutesChanged:
        self._instance(node, instance)
        deleted = RouteService(self.controller, instance).delete_many(node, prefixes)
        if not deleted:
            listed = ", ".join(prefixes[:3]) + (f" and {len(prefixes) - 3} more" if len(prefixes) > 3 else "")
            raise NotFound(f"{node} has no route {listed}", hint=f"innet routes list {node} lists them")
        return RoutesChanged(node=node, instance=instance, routes=deleted)

    # ---- flows ----------------------------------------------------------------------------
    def hh(self, node: str, instance: str, k: int = 10, by: str = "packets", after: int | None = None) -> TopFlows:
        """The top k flows of the instance's latest interval, from its one sampler; with
        `after` (the number of the interval the caller has), the next one is waited for."""
        self._instance(node, instance)
        return self.samplers.top(node, instance, k, by, after)

    def estimate(self, node: str, instance: str, src: str, dst: str, proto: int, sport: int = 0, dport: int = 0,
                 bank: int | None = None) -> FlowEstimate:
        """A cms instance's Count-Min estimate of any flow, held as a candidate or not, in a bank
        (default: the active one, the epoch so far). A pure read: no epoch is closed."""
        row = self._instance(node, instance)
        flow = _flow_key(src, dst, sport, dport, proto)
        if row.params.get("key_mode") == 1:   # the instance keys address pairs: ports do not count
            flow = Flow(flow.src, flow.dst, 0, 0, flow.proto)
        if bank is None and has_epochs(self.controller.spec(node, instance)):
            bank = int(self.controller.read_registers(node, instance, "control")["active_bank"].reshape(-1)[0]) & 1
        count = flow_estimate(self.controller, node, instance, flow, bank)
        return FlowEstimate.of(node, instance, bank, count)

    def watch(self, node: str, instance: str) -> None:
        """Sample the instance's flows from now on, read or not (its top flows stay in /metrics)."""
        self._instance(node, instance)
        self.samplers.watch(node, instance, keep=True)

    # ---- service chains -------------------------------------------------------------------
    def _service(self, name: str) -> tuple[Service, Plan]:
        if service_key(name) not in self.controller.store.services():
            self._no_service(name)
        return ChainService(self.controller).get(name)

    def _no_service(self, name: str):
        known = ", ".join(self.controller.store.services()) or "none"
        raise NotFound(f"no service '{name}'", hint=f"services: {known} (GET /services, innet service list)")

    def services_deploy(self, document: str | bytes | Mapping, bind: Mapping[str, str] | None = None,
                        nf_map: Mapping[str, str] | None = None, source: str | None = None) -> ServiceDeployed:
        """Deploy a descriptor (Smart-Orchestrator JSON, DESIRE6G lnsd, ETSI SOL006; text or
        mapping; `source` names it in errors) on the running testbed: all rules or none; the
        same descriptor again is a no-op, a changed one moves the service to new paths."""
        before = self.controller.store.services()
        placed = ChainService(self.controller).deploy(document, bind, nf_map, source)
        old = before.get(placed.service)
        change = "created" if old is None else "unchanged" if _same(old[1], placed.to_doc()) else "updated"
        return ServiceDeployed(**dict(self.services_show(placed.service)), change=change)

    def services_list(self) -> list[ServiceSummary]:
        """The deployed services, as desired (no data-plane reads)."""
        return [ServiceSummary(**_summary(Service.model_validate(model), Plan.from_doc(plan)))
                for model, plan in self.controller.store.services().values()]

    def services_show(self, name: str) -> ServiceOut:
        """The service's placement, desired beside actual (its instances' health, whether each
        rule is in its forwarder), and the packet counters of every hop."""
        service, placed = self._service(name)
        problems: list[str] = []
        nodes = {n.name: n for n in self.status().nodes}
        health: dict[tuple[str, str], str] = {}
        for node in placed.nodes:
            status = nodes.get(node)
            if status is None:
                problems.append(f"{node}: not a node of the running testbed")
                continue
            if status.problem:
                problems.append(f"{node}: {status.problem}")
            health.update({(node, i.id): i.health for i in status.instances})
        forwarders = [ForwarderOut(node=n, instance=FORWARDER, health=health.get((n, FORWARDER), "not deployed"))
                      for n in placed.nodes]
        instances = [PlacedInstanceOut(node=i.node, id=i.id, nf=i.nf, slot=i.slot, params=i.params,
                                       health=health.get((i.node, i.id), "not deployed")) for i in placed.instances]
        problems += [f"{f.node}: forwarder {f.instance}: {f.health}" for f in forwarders if f.health != "ok"]
        problems += [f"{i.node}: NF instance {i.id}: {i.health}" for i in instances if i.health != "ok"]

        classifier, hops = [], []
        for node in placed.nodes:
            rules = [r for r in placed.rules if r.node == node]
            held, counters = self._forwarder_tables(node, rules, problems)
            missing = 0
            for r in rules:
                key, installed = held.get(id(r), (None, False))
                missing += not installed
                if r.table == "sfc_classify":
                    classifier.append(ClassifierOut(node=node, **r.match, **r.params, installed=installed))
                else:
                    packets, nbytes = counters.get(key, (0, 0))
                    hops.append(HopOut(node=node, spi=r.match["spi"], si=r.match["si"], action=r.action,
                                       params=r.params, packets=packets, bytes=nbytes, installed=installed))
            if missing:
                problems.append(f"{node}: {missing} of {len(rules)} rules of the service are not in the forwarder "
                                f"as desired")
        hop_counts = [(h.node, h.action, h.params, h.packets) for h in hops]
        for i in instances:
            i.packets = handed_packets(i.node, i.slot, hop_counts)
        return ServiceOut(**{**_summary(service, placed), "instances": instances},
                          status="degraded" if problems else "ok", problems=problems, forwarders=forwarders,
                          classifier=classifier, hops=hops)

    def _forwarder_tables(self, node: str, rules: list, problems: list[str]) -> tuple[dict, dict]:
        """For each rule (by id()): its table key and whether the node's forwarder holds it as
        desired; and the sfc_hops counters by key. A forwarder that cannot be read is a problem."""
        held: dict[int, tuple[tuple, bool]] = {}
        counters: dict[tuple, tuple[int, int]] = {}
        try:
            spec = self.controller.spec(node, FORWARDER)
            params = self.controller.instance(node, FORWARDER).params
            actual = {}
            for c in self.controller.read_counters(node, FORWARDER, "sfc_hops"):
                actual[c.entry.key()] = c.entry
                counters[c.entry.key()] = (c.packets, c.bytes)
            for e in self.controller.read(node, FORWARDER, "sfc_classify"):
                actual[e.key()] = e
            for r in rules:
                desired = normalize(spec.table(r.table), TableEntry(r.table, r.match, r.action, r.params),
                                    nf_params=params)
                held[id(r)] = (desired.key(), actual.get(desired.key()) == desired)
        except InnetError as exc:
            problems.append(f"{node}: cannot read the forwarder's tables: {exc.message}")
        return held, counters

    def services_delete(self, name: str) -> ServiceDeleted:
        """Delete the service: its classifier rules first, then its hops, its NF instances, and
        the forwarders no other service uses."""
        if not ChainService(self.controller).delete(name):
            self._no_service(name)
        return ServiceDeleted(key=service_key(name), deleted=True)


def _summary(service: Service, placed: Plan) -> dict:
    return dict(key=placed.service, name=service.name, format=service.format,
                paths=[ServicePathOut(graph=p.graph, spi=p.spi, routers=p.routers, hops=[tuple(h) for h in p.hops])
                       for p in placed.paths],
                routers=placed.nodes,
                instances=[PlacedInstanceOut(node=i.node, id=i.id, nf=i.nf, slot=i.slot, params=i.params)
                           for i in placed.instances],
                rules=len(placed.rules))


def _flow_key(src: str, dst: str, sport: int, dport: int, proto: int) -> Flow:
    """The flow a caller names, checked: two addresses of one family, ports, an IP protocol number."""
    for name, text in (("src", src), ("dst", dst)):
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise StatsError(f"{name} {text!r} is not an IPv4 or IPv6 address") from None
    for name, value, top in (("sport", sport, 65535), ("dport", dport, 65535), ("proto", proto, 255)):
        if not 0 <= value <= top:
            raise StatsError(f"{name} {value} is out of range (0-{top})")
    flow = Flow.of(src, dst, sport, dport, proto)   # IPv4-mapped IPv6 becomes IPv4, as the data plane keys it
    if flow.src.version != flow.dst.version:
        raise StatsError(f"src {src} and dst {dst} are not of one address family",
                         hint="no packet carries both: give two IPv4 or two IPv6 addresses")
    return flow


def _link_load(a: Interface, b: Interface, bw_mbit: float | None, rates: dict) -> LinkLoadOut | None:
    """The link's load in both directions from the counters of its first router end: what
    a sends is what b receives."""
    for end, sends in ((a, True), (b, False)):
        rate = rates.get((end.node, end.name))
        if rate is None:
            continue
        out = (rate.tx_bits_per_s, rate.tx_packets_per_s, rate.tx_bytes)
        into = (rate.rx_bits_per_s, rate.rx_packets_per_s, rate.rx_bytes)
        forward, backward = (out, into) if sends else (into, out)
        busier = max(forward[0], backward[0])
        return LinkLoadOut(measured_at=LinkEndOut(node=end.node, interface=end.name),
                           a_to_b_bits_per_s=forward[0], b_to_a_bits_per_s=backward[0],
                           a_to_b_packets_per_s=forward[1], b_to_a_packets_per_s=backward[1],
                           a_to_b_bytes=forward[2], b_to_a_bytes=backward[2],
                           utilisation=busier / (bw_mbit * 1e6) if bw_mbit else None)
    return None


def _same(a: dict, b: dict) -> bool:
    """Plan documents compared as JSON (the stored one has lists where a new one has tuples)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
