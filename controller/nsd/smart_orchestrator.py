"""The Smart-Orchestrator deployment descriptor (JSON; ../shared/references/smart-orchestrator-descriptor.md).

    applications[].microservices[]     -> endpoints, named by microservice_name, referred to by ns_ref
    net_services[0].forwarding_graphs[] : e2e_delay_budget for each of its links
        links[]                        -> one forwarding graph each, named by the link's id
            connection_points[]        : {"microservice_ref": "<ns_ref>:<instance>"} or {"nf_ref": "<name>"}

A link that names no NF between its two microservices runs through an NFRouter (the report's
reading): innet adds an implicit nfrouter instance (controller.nsd.nftypes.ImplicitNFRouter).
innet's extension: net_services[0].network_functions[] = {"nf_ref", "type", "parameters", "node",
"target"}, named in connection points by nf_ref, for chains of catalog NFs.
"""
from __future__ import annotations

from collections.abc import Mapping

from controller.nsd.draft import Draft
from controller.nsd.nftypes import ImplicitNFRouter, add_nf_instance
from controller.nsd.paths import Point, ordered_path
from controller.nsd.reader import At

FORMAT = "smart-orchestrator"


def parse(doc: At, nf_map: Mapping[str, str]) -> Draft:
    services = doc.items("net_services", required=True)
    if len(services) != 1:
        doc.child("net_services").fail(f"{len(services)} net_services; innet deploys one per descriptor",
                                       hint="split the descriptor, one net_service in each")
    ns = services[0]
    draft = Draft(FORMAT, ns.field("ns_name"))
    microservices = _microservices(doc, draft)
    functions = {add_nf_instance(draft, nf, nf.field("nf_ref"), nf.field("type"), nf_map): nf
                 for nf in ns.items("network_functions")}
    nfrouter = ImplicitNFRouter(draft)
    for graph in ns.items("forwarding_graphs", required=True):
        budget = graph.field("e2e_delay_budget", required=False)
        links = graph.items("links", required=True)
        if not links:
            graph.child("links").fail("no links: a forwarding graph needs at least one")
        for link in links:
            points = [_point(cp, microservices, functions) for cp in link.items("connection_points", required=True)]
            source, hops, destination = ordered_path(points, link.child("connection_points"),
                                                     set(microservices.values()))
            draft.add_graph(link, link.field("id"), (source, hops or [nfrouter.hop(link)], destination),
                            {"delay_budget_ms": budget})
    return draft


def _microservices(doc: At, draft: Draft) -> dict[str, str]:
    """ns_ref -> the endpoint's name (microservice_name)."""
    by_ref: dict[str, str] = {}
    for application in doc.items("applications", required=True):
        for ms in application.items("microservices", required=True):
            ref = ms.field("ns_ref")
            if ref.name() in by_ref:
                ref.fail(f"ns_ref '{ref.name()}' also belongs to microservice '{by_ref[ref.name()]}'",
                         hint="each microservice needs its own ns_ref: links refer to it")
            name = ms.field("microservice_name")
            by_ref[ref.name()] = name.name()
            draft.add("endpoints", ms, {"name": name.name()}, {"name": name})
    return by_ref


def _point(cp: At, microservices: dict[str, str], functions: dict[str, At]) -> Point:
    nf = cp.field("nf_ref", required=False)
    if nf is not None:
        if nf.name() not in functions:
            nf.fail(f"unknown NF '{nf.name()}' (network_functions: {', '.join(functions) or 'none'})")
        return Point(nf.name(), nf)
    at = cp.field("microservice_ref")
    ref, colon, instance = at.reference().rpartition(":")
    if not colon or not instance.isdigit():
        at.fail(f"'{at.value}' is not '<ns_ref>:<instance>' (e.g. 'app_a:1')")
    if ref not in microservices:
        at.fail(f"unknown microservice '{ref}' (ns_refs: {', '.join(microservices)})")
    if int(instance) != 1:
        at.fail(f"microservice '{ref}' has no instance {instance}: innet runs one instance of each microservice",
                hint="instances count from 1: refer to it as '" + ref + ":1'")
    return Point(microservices[ref], at)

