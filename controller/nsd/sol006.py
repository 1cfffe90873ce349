"""ETSI SOL006 NSDs, as OSM writes them (`nsd: nsd: [ one NSD ]`).

    nsd.name (or id)                    -> the service's name
    df[0].vnf-profile[]                 -> a profile on some forwarding path is an NF instance, its
        vnfd-id mapped to a catalog NF (by name, or nf_map); any other profile is an endpoint, with
        the ip-address of its virtual-link-connectivity; innet's extension: parameters, node, target
    vnffgd[].nfpd[]                     -> one forwarding graph each, named by the nfpd's id:
        position-desc-id[].cp-profile-id[].constituent-profile-elements[] are the hops, positions
        and profiles in document order, the elements of one profile by their `order`
        position-desc-id[].match-attributes (one rule): the classifier; its source (source-ip-address
        or constituent-base-element-id) and destination-ip-address name the graph's two endpoints.
        A port of 0 matches any port, as in OSM's examples.

Cross-references are checked as OSM's NBI checks them (vnfd-id, vnf-profile-id, nfp-position-element,
the match's addresses), and a little further (connection points, virtual links).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.nsd.draft import Draft
from controller.nsd.nftypes import add_nf_instance
from controller.nsd.paths import Point, ordered_path
from controller.nsd.reader import At

FORMAT = "etsi-sol006"
ENVELOPES = ("nsd", "etsi-nfv-nsd:nsd")
# match-attributes key -> Classifier field
MATCH_FIELDS = {"ip-proto": "ip_proto", "source-ip-address": "source_address",
                "destination-ip-address": "destination_address", "source-port": "source_port",
                "destination-port": "destination_port"}
ANY_PORT = 0   # OSM's examples match "source-port: 0" for any source port


@dataclass
class Profile:
    at: At
    cpds: dict[str, At] = field(default_factory=dict)         # constituent-cpd-id -> where
    addresses: dict[str, At] = field(default_factory=dict)    # ip-address -> where


@dataclass
class ForwardingPath:
    at: At
    hops: list[Point]
    match: At


def parse(doc: At, nf_map: Mapping[str, str]) -> Draft:
    nsd = _unwrap(doc)
    draft = Draft(FORMAT, nsd.field("name", "id"))
    profiles = _vnf_profiles(nsd)
    paths = [p for fg in nsd.items("vnffgd") for p in _forwarding_paths(fg, profiles)]
    if not paths:
        nsd.fail("no forwarding path: innet needs a vnffgd with at least one nfpd",
                 hint="describe the chain in vnffgd[].nfpd[]")
    on_path = {hop.name for p in paths for hop in p.hops}
    for name, profile in profiles.items():
        if name in on_path:
            add_nf_instance(draft, profile.at, profile.at.child("id"), profile.at.field("vnfd-id"), nf_map)
            continue
        index = draft.add("endpoints", profile.at, {"name": name, "addresses": list(profile.addresses)},
                          {"name": profile.at.child("id")})
        for a_index, address in enumerate(profile.addresses.values()):
            draft.note(("endpoints", index, "addresses", a_index), address)
    endpoints = set(profiles) - on_path
    owners = {address: name for name, profile in profiles.items() for address in profile.addresses}
    for path in paths:
        source, destination = _ends(path.match, profiles, owners)
        for end in (source, destination):
            if end.name in on_path:
                end.at.fail(f"vnf-profile '{end.name}' is an NF on a forwarding path, not an endpoint",
                            hint="the match names the path's two endpoints: profiles on no forwarding path")
        ends = ordered_path([source, *path.hops, destination], path.at, endpoints)
        classifier = {MATCH_FIELDS[key]: path.match.child(key) for key in MATCH_FIELDS if _given(path.match, key)}
        draft.add_graph(path.at, path.at.field("id"), ends, {}, classifier)
    return draft


def _given(match: At, key: str) -> bool:
    value = match.value.get(key)
    return value is not None and not (key.endswith("-port") and value == ANY_PORT)


def _unwrap(doc: At) -> At:
    outer = doc.field(*ENVELOPES).mapping()
    nsds = outer.items(*ENVELOPES, required=True)
    if len(nsds) != 1:
        outer.child(next(k for k in ENVELOPES if k in outer.value)).fail(
            f"{len(nsds)} NSDs; innet reads one per document (as OSM does)")
    return nsds[0].mapping()


def _vnf_profiles(nsd: At) -> dict[str, Profile]:
    vnfds = [v.name() for v in nsd.items("vnfd-id", required=True)]
    flavours = nsd.items("df", required=True)
    if not flavours:
        nsd.child("df").fail("no deployment flavour", hint="innet deploys the first df's vnf-profiles")
    flavour = flavours[0]   # OSM, too, instantiates the first flavour unless told otherwise
    links = [vl.field("id").name() for vl in nsd.items("virtual-link-desc")]
    links += [vl.field("id").name() for vl in flavour.items("virtual-link-profile")]
    profiles: dict[str, Profile] = {}
    for entry in flavour.items("vnf-profile", required=True):
        name = entry.field("id").name()
        if name in profiles:
            entry.child("id").fail(f"duplicate vnf-profile id '{name}' (first at {profiles[name].at.path})")
        vnfd = entry.field("vnfd-id")
        if vnfd.name() not in vnfds:
            vnfd.fail(f"vnfd-id '{vnfd.name()}' is not one of the NSD's vnfd-id ({', '.join(vnfds)})")
        profiles[name] = profile = Profile(entry)
        for connectivity in entry.items("virtual-link-connectivity"):
            link = connectivity.field("virtual-link-profile-id")
            if link.name() not in links:
                link.fail(f"unknown virtual link '{link.name()}' (virtual-link-desc: {', '.join(links) or 'none'})")
            for cpd in connectivity.items("constituent-cpd-id", required=True):
                owner = cpd.field("constituent-base-element-id")
                if owner.name() != name:
                    owner.fail(f"'{owner.name()}' in vnf-profile '{name}': a profile lists its own connection points")
                profile.cpds[cpd.field("constituent-cpd-id").name()] = cpd
                address = cpd.field("ip-address", required=False)
                if address is not None:
                    profile.addresses[address.name()] = address
    return profiles


def _forwarding_paths(fg: At, profiles: dict[str, Profile]) -> list[ForwardingPath]:
    members = [m.name() for m in fg.items("vnf-profile-id")]
    positions = [p.field("id").name() for p in fg.items("nfp-position-element")]
    paths = []
    for nfpd in fg.items("nfpd", required=True):
        hops, matches = [], []
        for position in nfpd.items("position-desc-id", required=True):
            for element_id in position.items("nfp-position-element-id"):
                if element_id.name() not in positions:
                    element_id.fail(f"'{element_id.name()}' matches no nfp-position-element "
                                    f"({', '.join(positions) or 'none'})")
            for cp_profile in position.items("cp-profile-id"):
                hops += [_hop(e, profiles, members) for e in _in_order(cp_profile)]
            matches += position.items("match-attributes")
        if not hops:
            nfpd.child("position-desc-id").fail("empty path: no constituent-profile-elements",
                                                hint="a forwarding path visits at least one VNF")
        if len(matches) != 1:
            nfpd.fail(f"{len(matches)} match-attributes; innet classifies a path by exactly one rule",
                      hint="its source and destination name the path's endpoints; one nfpd per rule")
        paths.append(ForwardingPath(nfpd, hops, matches[0].mapping()))
    return paths


def _in_order(cp_profile: At) -> list[At]:
    elements = cp_profile.items("constituent-profile-elements", required=True)
    if len(elements) < 2:
        return elements
    by_order: dict = {}
    for element in elements:
        order = element.field("order")
        if not isinstance(order.value, int) or isinstance(order.value, bool):
            order.fail(f"order is a number, got {order.value!r}")
        if order.value in by_order:
            order.fail(f"order {order.value} again (first at {by_order[order.value].path})",
                       hint="the elements of one cp-profile are ordered by distinct numbers")
        by_order[order.value] = element
    return [by_order[k] for k in sorted(by_order)]


def _hop(element: At, profiles: dict[str, Profile], members: list[str]) -> Point:
    ref = element.field("constituent-base-element-id")
    profile = profiles.get(ref.name())
    if profile is None:
        ref.fail(f"unknown vnf-profile '{ref.name()}' (vnf-profiles: {', '.join(profiles)})")
    if members and ref.name() not in members:
        ref.fail(f"vnf-profile '{ref.name()}' is not a member of this vnffgd (vnf-profile-id: {', '.join(members)})")
    for key in ("ingress-constituent-cpd-id", "egress-constituent-cpd-id"):
        cpd = element.field(key, required=False)
        if cpd is not None and cpd.name() not in profile.cpds:
            cpd.fail(f"'{cpd.name()}' is no connection point of vnf-profile '{ref.name()}' "
                     f"(its: {', '.join(profile.cpds) or 'none'})")
    return Point(ref.name(), ref)


def _ends(match: At, profiles: dict[str, Profile], owners: dict[str, str]) -> tuple[Point, Point]:
    """The path's endpoints, named by the classifier's addresses (and base element)."""
    source_ip = match.field("source-ip-address", required=False)
    destination_ip = match.field("destination-ip-address", required=False)
    named = match.field("constituent-base-element-id", required=False)
    if source_ip and destination_ip and source_ip.name() == destination_ip.name():
        destination_ip.fail("the destination address is the source address")
    for address in (source_ip, destination_ip):
        if address is not None and address.name() not in owners:
            address.fail(f"'{address.name()}' is no vnf-profile's ip-address (addresses: {', '.join(owners) or 'none'})")
    if named is not None and named.name() not in profiles:
        named.fail(f"unknown vnf-profile '{named.name()}' (vnf-profiles: {', '.join(profiles)})")
    if named and source_ip and owners[source_ip.name()] != named.name():
        named.fail(f"'{named.name()}' is not the source: source-ip-address {source_ip.name()} belongs to "
                   f"vnf-profile '{owners[source_ip.name()]}'")
    if destination_ip is None:
        match.fail("missing 'destination-ip-address': innet reads the path's destination from it",
                   hint="give the destination endpoint's ip-address")
    if source_ip is None and named is None:
        match.fail("missing 'source-ip-address' (or 'constituent-base-element-id'): the path's source",
                   hint="give the source endpoint's ip-address")
    source = Point(named.name(), named) if named else Point(owners[source_ip.name()], source_ip)
    return source, Point(owners[destination_ip.name()], destination_ip)
