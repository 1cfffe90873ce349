"""The life cycle of service chains: deploy, list, show, delete, on the service layer.

A deploy parses the descriptor (controller.nsd), binds its endpoints to the running
testbed's hosts, plans it (controller.chains) and applies the plan make-before-break:
forwarders and NF instances first, then the new path's hop rules from the egress back to the
ingress, then the classifier (one write that moves the traffic onto the new path), and only
then what the old plan had and the new one has not: its classifier entries, then, once the old
path's hop counters have stayed put as long as a packet can wait on it (its last packets,
queued in a BMv2 switch or on a shaped link, have left it), its hops and NF instances. Each
path of a changed service gets a fresh SPI, so old and new rules never share a key and packets
in flight finish on the path they started on; a delete drains the same way. The service (its
model and plan) is desired state; an interrupted deploy or delete is finished by the next
command (controller.service recovery: `service-deploy` and `service-delete` operations are
re-run from what the store holds).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping

from controller.chains import FORWARDER, MAX_SPI, ChainError, Plan, Rule, instance_id, plan
from controller.errors import InnetError
from controller.nsd.binding import resolve_endpoints
from controller.nsd.errors import NSDError
from controller.nsd.model import Service
from controller.nsd.parse import parse_descriptor
from controller.tables import TableEntry
from controller.topology import Topology, parse_topology


log = logging.getLogger("innet.sfc")
# How long an old path's hop counters must stay put before its rules go (ChainService._drain):
# longer than a packet can wait on the path. A BMv2 switch holds one for up to ~100 ms under load
# (50-108 ms over 3 switches measured, tests/test_service_update.py); an XDP router for none; a
# link with a bandwidth for its queue (the testbed's: 100 full frames, testbed.linkemu); a loaded
# host delays any for some ms. How often to read, and how long to wait at the most.
DRAIN_ROUTER_S = {"xdp": 0.0, "bmv2": 0.1}
DRAIN_LINK_QUEUE_BITS = 100 * 1500 * 8
DRAIN_FLOOR_S, DRAIN_POLL_S, DRAIN_MAX_S = 0.02, 0.01, 3.0


def service_key(name: str) -> str:
    """A service's name as instance ids and commands carry it: 'Ping demo' -> 'ping-demo'."""
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-") or "service"


class ChainService:
    def __init__(self, controller):
        self.ctl = controller

    # ---- reading ---------------------------------------------------------------------------
    def topology(self) -> Topology:
        testbed = self.ctl.store.testbed()
        if testbed is None or not testbed.get("doc"):
            raise ChainError(f"no testbed runs in scope '{self.ctl.scope.name}', so there is nowhere to place a service",
                             hint="bring one up first: innet up line3")
        return parse_topology(testbed["doc"], testbed["topology"])

    def plans(self) -> dict[str, Plan]:
        return {name: Plan.from_doc(p) for name, (_, p) in self.ctl.store.services().items()}

    def get(self, name: str) -> tuple[Service, Plan]:
        services = self.ctl.store.services()
        key = service_key(name)
        if key not in services:
            raise ChainError(f"no service '{name}'", hint=f"services: {', '.join(services) or 'none'}")
        model, p = services[key]
        return Service.model_validate(model), Plan.from_doc(p)

    def show(self, name: str) -> dict:
        """The service's placement, its rules and their packet counters, its NF instances with the
        packets their forwarders handed them."""
        service, p = self.get(name)
        counters = {}
        for node in p.nodes:
            for c in self.ctl.read_counters(node, FORWARDER, "sfc_hops"):
                counters[(node, c.entry.match["spi"], c.entry.match["si"])] = (c.packets, c.bytes)
        hops = [{"node": r.node, "spi": r.match["spi"], "si": r.match["si"], "action": r.action, "params": r.params,
                 "packets": counters.get((r.node, r.match["spi"], r.match["si"]), (0, 0))[0],
                 "bytes": counters.get((r.node, r.match["spi"], r.match["si"]), (0, 0))[1]}
                for r in p.rules if r.table == "sfc_hops"]
        hop_counts = [(h["node"], h["action"], h["params"], h["packets"]) for h in hops]
        return {"name": service.name, "key": p.service, "format": service.format,
                "paths": [{"graph": x.graph, "spi": x.spi, "routers": x.routers, "hops": x.hops} for x in p.paths],
                "instances": [{"node": i.node, "id": i.id, "nf": i.nf, "slot": i.slot,
                               "packets": handed_packets(i.node, i.slot, hop_counts)} for i in p.instances],
                "classifier": [{"node": r.node, **r.match, **r.params} for r in p.rules if r.table == "sfc_classify"],
                "hops": hops}

    def preview(self, document, bind: Mapping[str, str] | None = None, nf_map: Mapping[str, str] | None = None,
                source: str | None = None) -> dict:
        """What `deploy` would place on the running testbed, beside what runs there (the
        forwarder slots other services hold, the SPIs they use): plan_summary of the plan, with
        `change` created, unchanged or updated as the deploy would answer. Nothing is installed."""
        service, topology = self._resolve(document, bind, nf_map, source)
        key = service_key(service.name)
        old_model, old_doc = self.ctl.store.services().get(key, (None, None))
        old = Plan.from_doc(old_doc) if old_doc else None
        if old is not None and old_model == service.model_dump(mode="json") and self._in_place(old):
            return {**plan_summary(service, old, topology), "change": "unchanged"}
        return {**plan_summary(service, self._plan(service, topology, old), topology),
                "change": "created" if old is None else "updated"}

    # ---- deploying ---------------------------------------------------------------------------
    def _resolve(self, document, bind, nf_map, source) -> tuple[Service, Topology]:
        try:   # the descriptor's own mistakes first, whether or not a testbed runs
            service = parse_descriptor(document, bind=bind, nf_map=nf_map)
            topology = self.topology()
            return resolve_endpoints(service, topology), topology
        except NSDError as exc:
            raise exc.in_source(source) if source else exc from None

    def _plan(self, service: Service, topology: Topology, old: Plan | None) -> Plan:
        """The service placed beside the others (their slots, SPIs and forwarder sizes), its
        instances of `old` kept where they run."""
        key = service_key(service.name)
        instances = self.ctl.instances()
        limits = {i.node: i.params["max_nfs"] for i in instances if i.id == FORWARDER}
        held: dict[str, set[str]] = {}   # what a BMv2 switch's one copy per NF type is taken by
        for i in instances:
            if not i.id.startswith(instance_id(key, "")):
                held.setdefault(i.node, set()).add(i.nf)
        return plan(service.model_copy(update={"name": key}), topology,
                    self._fresh_spis(service, old), self._used_slots(),
                    {(i.node, i.id): i.slot for i in (old.instances if old else [])}, limits, held)

    def deploy(self, document, bind: Mapping[str, str] | None = None, nf_map: Mapping[str, str] | None = None,
               source: str | None = None) -> Plan:
        """Deploy a descriptor (text or mapping; `source` names it in errors); a repeat is a
        no-op, a change updates the chain in place."""
        service, topology = self._resolve(document, bind, nf_map, source)
        key = service_key(service.name)
        with self.ctl._writer():
            old_model, old_doc = self.ctl.store.services().get(key, (None, None))
            old = Plan.from_doc(old_doc) if old_doc else None
            model = service.model_dump(mode="json")
            if old is not None and old_model == model and self._in_place(old):
                return old
            new = self._plan(service, topology, old)
            # the old plan rides in the operation: a recovery re-installs the new one, then takes the old out
            with self.ctl._operation("service-deploy", None, key, {"old": old_doc}):
                self.ctl.store.put_service(key, model, new.to_doc())
                try:
                    self._switch(old, new)
                except BaseException:
                    self._restore(key, old_model, old, new)
                    raise
            return new

    def _restore(self, key: str, old_model: dict | None, old: Plan | None, new: Plan) -> None:
        """After a failed deploy: the service as it was (or none), its old plan whole again."""
        if old is None:
            self.ctl.store.delete_service(key)
        else:
            self.ctl.store.put_service(key, old_model, old.to_doc())
        try:
            self._uninstall(new, keep=old)
            if old is not None:
                self._install(old)
        except InnetError as exc:   # the deploy's own error says more; this one goes to the log
            log.warning("service %s: putting the previous state back: %s (innet reconcile retries)", key, exc)

    def _switch(self, old: Plan | None, new: Plan) -> None:
        self._install(new)
        if old is not None:
            self._uninstall(old, keep=new)

    def _fresh_spis(self, service: Service, old: Plan | None) -> dict[str, int]:
        """A new SPI per graph, none in use by any service (the old version of this one included)."""
        used = {p.spi for plan_ in self.plans().values() for p in plan_.paths} | \
            ({p.spi for p in old.paths} if old else set())
        free = (spi for spi in range(1, MAX_SPI + 1) if spi not in used)
        return {g.name: next(free) for g in service.forwarding_graphs}

    def _used_slots(self) -> dict[str, set[int]]:
        """node -> forwarder slots the instances of every service hold there (the one being
        changed included: its old instances run until the new plan is in)."""
        used: dict[str, set[int]] = {}
        for p in self.plans().values():
            for inst in p.instances:
                used.setdefault(inst.node, set()).add(inst.slot)
        return used

    def _in_place(self, p: Plan) -> bool:
        """Whether every instance and rule of the plan is desired state (a repeat deploy is a no-op)."""
        desired = {(i.node, i.id) for i in self.ctl.instances()}
        if any((i.node, i.id) not in desired for i in p.instances):
            return False
        held = {_rule_key(r) for r in _entries_of(self.ctl, p.nodes)}
        return all(_rule_key(r) in held for r in p.rules)

    def _install(self, p: Plan) -> None:
        for node in p.nodes:   # a no-op where the forwarder runs as desired; its parameters kept
            forwarder = self.ctl.store.instance(node, FORWARDER)
            self.ctl.deploy(node, FORWARDER, forwarder.interfaces if forwarder else None,
                            forwarder.params if forwarder else None, instance=FORWARDER)
        for inst in p.instances:
            self.ctl.deploy(inst.node, inst.nf, [], inst.params, instance=inst.id, behind=(FORWARDER, inst.slot))
        hops = [r for r in p.rules if r.table == "sfc_hops"]
        for node in reversed(p.nodes):   # downstream first: the ingress is the last to learn the new path
            self._write(node, [r for r in hops if r.node == node])
        for node in p.nodes:
            self._write(node, [r for r in p.rules if r.table == "sfc_classify" and r.node == node])

    def _write(self, node: str, rules: list[Rule]) -> None:
        if rules:
            self.ctl.write(node, FORWARDER, [TableEntry(r.table, r.match, r.action, r.params) for r in rules])

    def _uninstall(self, p: Plan, keep: Plan | None = None) -> None:
        """Take out what plan `p` installed and plan `keep` does not: classifier first (traffic
        leaves the path), then, once the packets on the path have left it, hops, then instances,
        then forwarders no service uses."""
        kept_rules = {_rule_key(r) for r in (keep.rules if keep else [])}
        for table in ("sfc_classify", "sfc_hops"):
            going = [r for r in p.rules if r.table == table and _rule_key(r) not in kept_rules]
            if table == "sfc_hops" and going:
                self._drain(going, self._longest_wait(p, {r.match["spi"] for r in going}))
            for node in p.nodes:
                gone = [TableEntry(r.table, r.match, r.action, r.params) for r in going if r.node == node]
                if gone:
                    self.ctl.delete(node, FORWARDER, gone)
        kept = {(i.node, i.id) for i in (keep.instances if keep else [])}
        for inst in p.instances:
            if (inst.node, inst.id) not in kept:
                self.ctl.remove(inst.node, inst.id)
        in_use = {n for name, other in self.plans().items() for n in other.nodes} | set(keep.nodes if keep else [])
        for node in p.nodes:
            if node not in in_use and self.ctl.store.instance(node, FORWARDER) is not None:
                self.ctl.remove(node, FORWARDER)

    def _longest_wait(self, p: Plan, spis: set[int]) -> float:
        """The longest a packet can wait on the paths of `spis`: on their routers and the queues
        of their links (DRAIN_*)."""
        topology = self.topology()
        longest = 0.0
        for path in (x for x in p.paths if x.spi in spis):
            wait = sum(DRAIN_ROUTER_S.get(topology.nodes[r].target, max(DRAIN_ROUTER_S.values()))
                       for r in path.routers if r in topology.nodes)
            for a, b in zip(path.routers, path.routers[1:]):
                if topology.graph.has_edge(a, b) and topology.graph.edges[a, b]["link"].bw:
                    wait += DRAIN_LINK_QUEUE_BITS / (topology.graph.edges[a, b]["link"].bw * 1e6)
            longest = max(longest, wait)
        return DRAIN_FLOOR_S + longest

    def _drain(self, hops: list[Rule], quiet_s: float) -> None:
        """Wait until the packets on these hops have left them: no classifier sends any there now,
        so their counters stop once the last one is through. A packet may sit in a queue a while,
        so the counters must stay put for `quiet_s`; DRAIN_MAX_S bounds the wait."""
        keys = {(r.node, r.match["spi"], r.match["si"]) for r in hops}
        nodes = sorted({r.node for r in hops})

        def packets() -> dict:
            counted = {}
            for node in nodes:
                for c in self.ctl.read_counters(node, FORWARDER, "sfc_hops"):
                    key = (node, c.entry.match["spi"], c.entry.match["si"])
                    if key in keys:
                        counted[key] = c.packets
            return counted

        deadline = time.monotonic() + DRAIN_MAX_S
        last, quiet_since = packets(), time.monotonic()
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
            now = packets()
            if now != last:
                last, quiet_since = now, time.monotonic()
        if time.monotonic() >= deadline:
            log.warning("packets still crossed the old hops %.1f s after the classifier left them; taking them out",
                        DRAIN_MAX_S)

    def delete(self, name: str) -> bool:
        key = service_key(name)
        with self.ctl._writer():
            services = self.ctl.store.services()
            if key not in services:
                return False
            _, doc = services[key]
            with self.ctl._operation("service-delete", None, key, {"old": doc}):
                self.ctl.store.delete_service(key)   # intent first: a recovery finishes the delete
                self._uninstall(Plan.from_doc(doc))
        return True

    def recover(self, kind: str, key: str, detail: dict) -> list[str]:
        """Finish an interrupted service-deploy (install the stored plan, take out the old one)
        or service-delete (take out the plan it was deleting)."""
        old = Plan.from_doc(detail["old"]) if detail.get("old") else None
        stored = self.plans().get(key)
        if kind == "service-deploy" and stored is not None:
            self._switch(old, stored)
            return [f"service {key}: deployed"]
        if old is not None:
            self._uninstall(old)
        return [f"service {key}: deleted"]


def handed_packets(node: str, slot: int, hops: Iterable[tuple[str, str, dict, int]]) -> int:
    """Packets a node's forwarder handed the NF instance in `slot`: the counters of its to_nf
    hops. `hops`: (node, action, params, packets) of each sfc_hops entry."""
    return sum(n for at, action, params, n in hops if (at, action, params.get("slot")) == (node, "to_nf", slot))


def _rule_key(r: Rule) -> tuple:
    """What identifies a forwarder rule: its node, table and match."""
    return r.node, r.table, tuple(sorted(r.match.items()))


def plan_descriptor(document, topology: Topology, bind: Mapping[str, str] | None = None,
                    nf_map: Mapping[str, str] | None = None, source: str | None = None) -> dict:
    """plan_summary of a descriptor placed on `topology` with nothing else deployed there: no
    testbed and no controller needed (`innet service plan FILE --topology NAME`)."""
    try:
        service = resolve_endpoints(parse_descriptor(document, bind=bind, nf_map=nf_map), topology)
    except NSDError as exc:
        raise exc.in_source(source) if source else exc from None
    placed = plan(service.model_copy(update={"name": service_key(service.name)}), topology,
                  {g.name: spi for spi, g in enumerate(service.forwarding_graphs, start=1)}, {})
    return plan_summary(service, placed, topology)


def plan_summary(service: Service, p: Plan, topology: Topology) -> dict:
    """A plan as `innet service plan` shows it (JSON-ready): each NF instance's node, target and
    forwarder slot; each graph's path host to host with its delay against its budget; each
    node's rules."""
    direction = {g.name: g.direction for g in service.forwarding_graphs}
    return {
        "name": service.name, "key": p.service, "format": service.format,
        "instances": [{"id": i.id, "nf": i.nf, "node": i.node, "target": topology.nodes[i.node].target,
                       "slot": i.slot, "params": i.params} for i in p.instances],
        "paths": [{"graph": x.graph, "direction": direction[x.graph], "spi": x.spi,
                   # a plan stored before paths recorded their hosts has none: its routers alone
                   "path": x.hosts[:1] + x.routers + x.hosts[1:], "hops": [list(h) for h in x.hops],
                   "links_ms": round(x.links_ms, 6), "processing_ms": round(x.processing_ms, 6),
                   "delay_ms": round(x.delay_ms, 6), "budget_ms": x.budget_ms} for x in p.paths],
        "rules": [{"node": r.node, "table": r.table, "match": r.match, "action": r.action, "params": r.params}
                  for r in p.rules],
    }


def _entries_of(ctl, nodes: list[str]) -> list[Rule]:
    rules = []
    for node in nodes:
        if ctl.store.instance(node, FORWARDER) is None:
            continue
        for table, match, action, params in ctl.store.entries(node, FORWARDER):
            rules.append(Rule(node, table, match, action, params))
    return rules


