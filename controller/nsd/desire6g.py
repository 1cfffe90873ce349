"""DESIRE6G local NSDs (`lnsd:`, as the IML-LNFVO reads them), both generations seen in the wild.

    lnsd.ns.name                             -> the service's name
    ns.default-nfrouter-mode                 -> the target of NFs that name none (bmv2 or xdp)
    ns.application-functions[]               -> endpoints: instance-id (older: af-instance-id),
        node (older: af-node) -> host, static-ips -> addresses, is-ue
    ns.site-connections[].application-functions[] -> endpoints reached through another site
    ns.network-functions[]                   -> NF instances: instance-id (or nf-instance-id),
        id (or nf-id) -> catalog NF ("<nf>-bmv2" also asks for bmv2), node; innet's extension:
        parameters, target
    ns.forwarding_graphs[] (or forwarding-graphs) -> one forwarding graph each: graph-name,
        direction, e2e_delay_budget (older: per graph; newer: one at ns level)
        links[].connection-points[]: if-id-ref "<instance>:<interface number>", or the older
        member-if-id-ref "<instance>:<interface>" with member-connection-point-index 1 (from) / 2 (to)

A graph whose links join two application functions with no NF between runs through an NFRouter,
as the IML gives every graph one: innet adds one implicit nfrouter instance for such graphs.
Ignored: ids, versions, domain, static MACs/NF ids, infra-nfs (the IML's own plumbing).
"""
from __future__ import annotations

from collections.abc import Mapping

from controller.nsd.draft import Draft
from controller.nsd.nftypes import ImplicitNFRouter, add_nf_instance
from controller.nsd.paths import Link, Point, chain, split_ends
from controller.nsd.reader import At

FORMAT = "desire6g-lnsd"
NFROUTER_MODES = ("bmv2", "xdp")   # what innet runs NFRouter on; the IML also knows dpdk and t4p4s


def parse(doc: At, nf_map: Mapping[str, str]) -> Draft:
    ns = doc.field("lnsd").mapping().field("ns").mapping()
    draft = Draft(FORMAT, ns.field("name"))
    mode = ns.field("default-nfrouter-mode", required=False)
    if mode is not None and mode.value not in NFROUTER_MODES:
        mode.fail(f"NFRouter mode '{mode.value}' is not one innet runs (modes: {', '.join(NFROUTER_MODES)})")
    for af in ns.items("application-functions"):
        _add_endpoint(draft, af)
    for site in ns.items("site-connections"):
        for af in site.items("application-functions"):
            _add_endpoint(draft, af)
        if site.items("network-functions"):
            site.child("network-functions").fail("NFs of another site are that site's to deploy",
                                                 hint="list here only the NFs this site runs")
    for nf in ns.items("network-functions"):
        add_nf_instance(draft, nf, nf.field("instance-id", "nf-instance-id"), nf.field("id", "nf-id"), nf_map, mode)
    endpoints = set(draft.names("endpoints"))
    known = [*draft.names("endpoints"), *draft.names("nf_instances")]
    budget = ns.field("e2e_delay_budget", required=False)
    nfrouter = ImplicitNFRouter(draft, mode)
    for graph in ns.items("forwarding_graphs", "forwarding-graphs", required=True):
        links = [_link(link, known) for link in graph.items("links", required=True)]
        source, hops, destination = split_ends(chain(links, graph.child("links")), endpoints)
        draft.add_graph(graph, graph.field("graph-name"), (source, hops or [nfrouter.hop(graph)], destination),
                        {"direction": graph.field("direction", required=False),
                         "delay_budget_ms": graph.field("e2e_delay_budget", required=False) or budget})
    return draft


def _add_endpoint(draft: Draft, af: At) -> None:
    name = af.field("instance-id", "af-instance-id")
    instances = af.field("instances", required=False)
    if instances is not None and instances.value != 1:
        instances.fail(f"{instances.value} instances: innet binds each application function to one host",
                       hint="list each instance as an application function of its own")
    host = af.field("node", "af-node", required=False)
    draft.add("endpoints", af,
              {"name": name.name(), "host": host.name() if host else None,
               "addresses": af.value_of("static-ips", default=[]), "is_ue": af.value_of("is-ue", default=False)},
              {"name": name, "host": host, "addresses": af.field("static-ips", required=False),
               "is_ue": af.field("is-ue", required=False)})


def _link(link: At, known: list[str]) -> Link:
    points = link.items("connection-points", required=True)
    if len(points) != 2:
        link.child("connection-points").fail(f"{len(points)} connection point(s); a link joins two")
    if any(p.field("member-connection-point-index", required=False) for p in points):
        points = _by_member_index(points, link.child("connection-points"))
    tail, head = (_point(p, known) for p in points)
    return Link(tail, head, link)


def _by_member_index(points: list[At], where: At) -> list[At]:
    """The older generation says which end is which: index 1 is the tail, 2 the head."""
    indices = [p.field("member-connection-point-index").value for p in points]
    if sorted(indices, key=str) != [1, 2]:
        where.fail(f"member-connection-point-index values {indices}; a link's two points are 1 (from) and 2 (to)")
    return sorted(points, key=lambda p: p.value["member-connection-point-index"])


def _point(cp: At, known: list[str]) -> Point:
    ref = cp.field("if-id-ref", required=False)
    numbered = ref is not None   # the newer generation numbers interfaces; the older names them
    ref = ref or cp.field("member-if-id-ref", required=False)
    if ref is None:
        cp.fail("missing 'if-id-ref' (or 'member-if-id-ref')")
    instance, colon, interface = ref.reference().rpartition(":")
    if not colon or not instance or not interface:
        cp.fail(f"'{ref.value}' is not '<instance>:<interface>' (e.g. 'pkt-src:1')")
    if numbered and not interface.isdigit():
        cp.fail(f"'{ref.value}': interface '{interface}' is not a number", hint="if-id-ref is '<instance>:<number>'")
    if instance not in known:
        cp.fail(f"unknown instance '{instance}' (known: {', '.join(known)})")
    return Point(instance, cp)

