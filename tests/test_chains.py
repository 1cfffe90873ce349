"""Placing service chains: paths, NF placement and the NSH rules each router gets (no data plane)."""
from pathlib import Path

import pytest

from controller.chains import FIRST_SI, ChainError, plan
from controller.nsd.binding import resolve_endpoints
from controller.nsd.parse import load_descriptor, parse_descriptor
from controller.topology import load_topology

NSDS = Path(__file__).resolve().parent.parent / "nsds"


def placed(descriptor, topology: str, bind=None, used=None, kept=None, limits=None):
    topo = load_topology(topology)
    service = resolve_endpoints(load_descriptor(NSDS / descriptor, bind=bind) if isinstance(descriptor, str)
                                else parse_descriptor(descriptor, bind=bind), topo)
    spis = {g.name: 100 + i for i, g in enumerate(service.forwarding_graphs)}
    return plan(service, topo, spis, used or {}, kept, limits), topo


def chain_doc(hops: list[dict], name="chain3") -> dict:
    """A chain of catalog NFs between h1-bound src and dst, in the Smart-Orchestrator format with
    innet's network_functions extension."""
    return {"applications": [{"application_name": "app", "microservices": [
        {"microservice_name": "src", "ns_ref": "app_a"}, {"microservice_name": "dst", "ns_ref": "app_b"}]}],
        "net_services": [{"ns_name": name, "network_functions": hops, "forwarding_graphs": [
            {"graph_name": "g", "links": [{"id": "to_dst", "connection_points": [{"microservice_ref": "app_a:1"}]
                                           + [{"nf_ref": h["nf_ref"]} for h in hops]
                                           + [{"microservice_ref": "app_b:1"}]}]}]}]}


def hop_rules(p, spi):
    return [(r.node, r.match["si"], r.action) for r in p.rules if r.table == "sfc_hops" and r.match["spi"] == spi]


def test_a_chain_of_three_nfs_spreads_over_the_path_and_si_falls_by_one_per_nf():
    p, topo = placed("heavy-hitters-sol006.yaml", "line3")
    forward = p.paths[0]
    assert forward.routers == ["r1", "r2", "r3"]
    assert [node for _, node in forward.hops] == ["r1", "r2", "r3"]
    assert hop_rules(p, forward.spi) == [("r1", 255, "to_nf"), ("r1", 254, "forward"), ("r2", 254, "to_nf"),
                                         ("r2", 253, "forward"), ("r3", 253, "to_nf"), ("r3", 252, "decap")]
    r1_out = next(i for i in topo.nodes["r1"].interfaces if i.peer.node == "r2")
    (fwd,) = [r for r in p.rules if r.node == "r1" and r.action == "forward" and r.match["spi"] == forward.spi]
    assert fwd.params == {"egress_port": r1_out.name, "dst_mac": r1_out.peer.mac, "src_mac": r1_out.mac}
    (classify,) = [r for r in p.rules if r.table == "sfc_classify" and r.params["spi"] == forward.spi]
    assert classify.node == "r1" and classify.params["si"] == FIRST_SI
    assert (classify.match["proto"], classify.match["dst_port"]) == (6, 5201)


def test_the_reverse_graph_gets_its_own_spi_and_reuses_the_shared_instance():
    p, _ = placed("heavy-hitters-sol006.yaml", "line3")
    back = p.paths[1]
    assert back.spi != p.paths[0].spi and back.routers == ["r3", "r2", "r1"]
    assert len({i.id for i in p.instances}) == len(p.instances) == 3


def test_a_link_without_nfs_is_routed_through_the_chain_with_no_nf_hop():
    p, _ = placed("ping-demo.json", "line3", bind={"src": "h1", "dst": "h2"})
    assert p.instances == []
    assert hop_rules(p, p.paths[0].spi) == [("r1", 255, "forward"), ("r2", 255, "forward"), ("r3", 255, "decap")]
    families = {(r.match["src_addr"].count(":") > 0) for r in p.rules if r.table == "sfc_classify"}
    assert families == {False, True}, "IPv4 and IPv6 are both classified"


def test_a_node_constraint_detours_the_path_and_keeps_hop_order():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "r4"}, {"nf_ref": "b", "type": "precision"}])
    p, _ = placed(doc, "diamond", bind={"src": "h1", "dst": "h2"})
    path = p.paths[0]
    assert path.routers[0] == "r1" and "r4" in path.routers
    assert [n for _, n in path.hops][0] == "r4"
    sis = [si for _, si, action in hop_rules(p, path.spi) if action == "to_nf"]
    assert sis == [255, 254]


def test_slots_are_unique_per_node_and_a_kept_instance_keeps_its_slot():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "r1"}, {"nf_ref": "b", "type": "precision", "node": "r1"}])
    p, _ = placed(doc, "line3", bind={"src": "h1", "dst": "h2"}, used={"r1": {0, 2}},
                  kept={("r1", "chain3--b"): 5})
    assert {i.id: i.slot for i in p.instances} == {"chain3--a": 1, "chain3--b": 5}


def test_bmv2_routers_are_refused_with_the_reason():
    with pytest.raises(ChainError, match="service chains run on XDP routers only"):
        placed("ping-demo.json", "mixed", bind={"src": "h1", "dst": "h2"})


def test_a_node_that_is_no_router_is_refused():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "h1"}])
    with pytest.raises(ChainError, match="'h1' is not a router of topology"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"})


def test_an_nf_that_does_not_pass_packets_on_is_refused_as_a_chain_hop():
    doc = chain_doc([{"nf_ref": "a", "type": "cms"}, {"nf_ref": "q", "type": "prio"}])
    with pytest.raises(ChainError, match="prio cannot be a hop of an XDP chain"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"})


def test_a_full_forwarder_is_refused_with_what_to_do():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "r2"}])
    with pytest.raises(ChainError, match="the forwarder of r2 has 2 NF slots and other chains hold them all"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"}, used={"r2": {0, 1}}, limits={"r2": 2})
