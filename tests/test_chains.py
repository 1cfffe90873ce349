"""Placing service chains: paths, NF placement and the NSH rules each router gets (no data plane)."""
import json
from pathlib import Path

import pytest

from controller.chains import FIRST_SI, HOP_MS, ChainError, plan
from controller.nsd.binding import resolve_endpoints
from controller.nsd.errors import NSDError
from controller.nsd.parse import load_descriptor, parse_descriptor
from controller.sfc import plan_descriptor
from controller.topology import Topology, load_topology, parse_topology

NSDS = Path(__file__).resolve().parent.parent / "nsds"


def placed(descriptor, topology: str | Topology, bind=None, used=None, kept=None, limits=None, held=None):
    topo = load_topology(topology) if isinstance(topology, str) else topology
    service = resolve_endpoints(load_descriptor(NSDS / descriptor, bind=bind) if isinstance(descriptor, str)
                                else parse_descriptor(descriptor, bind=bind), topo)
    spis = {g.name: 100 + i for i, g in enumerate(service.forwarding_graphs)}
    return plan(service, topo, spis, used or {}, kept, limits, held), topo


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


def test_a_chain_crosses_bmv2_and_xdp_routers():
    p, topo = placed("ping-demo.json", "mixed", bind={"src": "h1", "dst": "h2"})
    to_dst = next(x for x in p.paths if x.graph == "to_dst")
    assert to_dst.routers == ["s1", "r1"]
    assert hop_rules(p, to_dst.spi) == [("s1", 255, "forward"), ("r1", 255, "decap")]
    assert to_dst.processing_ms == pytest.approx(HOP_MS["bmv2"] + HOP_MS["xdp"])


def test_a_bmv2_switch_takes_one_instance_of_an_nf_type():
    """Its composed pipeline holds one copy of each NF's tables and registers."""
    topo = load_topology("line3").retarget("bmv2")
    doc = chain_doc([{"nf_ref": "a", "type": "cms"}, {"nf_ref": "b", "type": "cms"}])
    p = planned_on(topo, doc)
    assert nodes_of(p) == ["r1", "r2"], "the second cms goes where no cms runs"
    held = {r: {"cms"} for r in ("r1", "r2", "r3")}
    with pytest.raises(ChainError, match="has room: the BMv2 switches run a cms already"):
        planned_on(topo, chain_doc(ONE_CMS), held=held)
    named = chain_doc([{"nf_ref": "a", "type": "cms", "node": "r2"}])
    with pytest.raises(ChainError, match="the BMv2 switch of r2 runs a cms instance already"):
        planned_on(topo, named, held={"r2": {"cms"}})
    assert nodes_of(planned_on(topo, chain_doc(ONE_CMS), held={"r1": {"cms"}})) == ["r2"]


def test_a_node_that_is_no_router_is_refused():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "h1"}])
    with pytest.raises(ChainError, match="'h1' is not a router of topology"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"})


def test_an_nf_that_does_not_pass_packets_on_is_refused_as_a_chain_hop():
    doc = chain_doc([{"nf_ref": "a", "type": "cms"}, {"nf_ref": "r", "type": "nfrouter"}])
    with pytest.raises(ChainError, match="nfrouter cannot be a hop of a service chain on xdp"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"})


def test_a_full_forwarder_is_refused_with_what_to_do():
    doc = chain_doc([{"nf_ref": "a", "type": "cms", "node": "r2"}])
    with pytest.raises(ChainError, match="the forwarder of r2 has 2 NF slots and other chains hold them all"):
        placed(doc, "line3", bind={"src": "h1", "dst": "h2"}, used={"r2": {0, 1}}, limits={"r2": 2})



# ---- delay budgets ------------------------------------------------------------------------------

XDP_HOP = HOP_MS["xdp"]
BOUND = {"src": "h1", "dst": "h2"}


def with_delays(topology: str, **delays: str) -> Topology:
    """A shipped topology with declared link delays set or replaced, e.g. r1_r2="3ms"."""
    doc = load_topology(topology).to_doc()
    for link in doc["links"]:
        delay = delays.get(f"{link['a']}_{link['b']}")
        if delay:
            link["delay"] = delay
    return parse_topology(doc, topology)


def planned_on(topo: Topology, doc: dict, used=None, kept=None, limits=None, held=None):
    return placed(doc, topo, BOUND, used, kept, limits, held)[0]


def budgeted(hops: list[dict], budget: str) -> dict:
    doc = chain_doc(hops)
    doc["net_services"][0]["forwarding_graphs"][0]["e2e_delay_budget"] = budget
    return doc


def test_a_path_counts_its_links_host_to_host_and_every_router_it_crosses():
    p = planned_on(with_delays("line3", r1_h1="0.5ms", r1_r2="1ms", r2_r3="1500us"), budgeted([], "5ms"))
    path = p.paths[0]
    assert path.hosts == ["h1", "h2"]
    assert path.links_ms == pytest.approx(3.0)
    assert path.processing_ms == pytest.approx(3 * XDP_HOP)
    assert path.budget_ms == 5.0 and path.delay_ms == pytest.approx(3.0 + 3 * XDP_HOP)


def test_a_budget_the_best_path_exceeds_is_refused_with_its_figure():
    with pytest.raises(ChainError) as refused:
        planned_on(with_delays("line3", r1_r2="3ms", r2_r3="3ms"), budgeted([], "5ms"))
    assert str(refused.value).splitlines()[0] == (
        f"service chain3, graph to_dst: delay budget 5 ms cannot be met: the best path h1–r1–r2–r3–h2 takes "
        f"{6 + 3 * XDP_HOP:.4g} ms (links 6 ms, 3 router hops × {XDP_HOP:.4g} ms)")


def test_a_budget_met_exactly_is_accepted():
    budget_ms = 4 + 3 * XDP_HOP
    p = planned_on(with_delays("line3", r1_r2="2ms", r2_r3="2ms"), budgeted([], f"{budget_ms}ms"))
    assert p.paths[0].delay_ms == pytest.approx(budget_ms)


def test_the_path_is_the_one_of_least_delay_not_of_fewest_links():
    # diamond declares 1 ms on each link of the r2 branch and 2 ms on the r3 branch
    assert planned_on(load_topology("diamond"), budgeted([], "5ms")).paths[0].routers == ["r1", "r2", "r4"]
    slow_r2 = with_delays("diamond", r1_r2="10ms")
    path = planned_on(slow_r2, budgeted([], "5ms")).paths[0]
    assert path.routers == ["r1", "r3", "r4"] and path.links_ms == pytest.approx(4.0)
    # a longer path of less delay beats a shorter one
    doc = load_topology("diamond").to_doc()
    doc["links"].append({"a": "r1", "b": "r4", "delay": "5ms"})
    assert planned_on(parse_topology(doc, "diamond+"), budgeted([], "5ms")).paths[0].routers == ["r1", "r2", "r4"]


def test_a_node_the_descriptor_names_can_lengthen_the_path_past_the_budget():
    with pytest.raises(ChainError, match=r"delay budget 3 ms cannot be met: the best path h1–r1–r3–r4–h2 takes "
                                         r"4\.0\d* ms \(links 4 ms"):
        planned_on(load_topology("diamond"), budgeted([{"nf_ref": "a", "type": "cms", "node": "r3"}], "3ms"))


def test_no_budget_no_check_and_no_declared_delay_counts_the_routers_only():
    p = planned_on(with_delays("line3", r1_r2="1s"), chain_doc([{"nf_ref": "a", "type": "cms"}]))
    assert p.paths[0].budget_ms is None and p.paths[0].links_ms == pytest.approx(1000.0)
    p = planned_on(load_topology("line3"), budgeted([], "5ms"))
    assert p.paths[0].links_ms == 0 and p.paths[0].processing_ms == pytest.approx(3 * XDP_HOP)


def test_a_bmv2_router_counts_its_own_processing_time():
    doc = load_topology("diamond").to_doc()
    doc["nodes"]["r2"]["target"] = "bmv2"
    path = planned_on(parse_topology(doc, "diamond"), budgeted([], "5ms")).paths[0]
    assert path.routers == ["r1", "r2", "r4"], "2 ms of links and a switch beat 4 ms of links"
    assert path.processing_ms == pytest.approx(2 * HOP_MS["xdp"] + HOP_MS["bmv2"])
    # r1-r2 at 2.8 ms: by its links alone (3.8 ms) the r2 branch still beats the r3 branch (4 ms),
    # with its switch's processing no longer
    assert 2.8 + 1 < 4 < 2.8 + 1 + HOP_MS["bmv2"] - HOP_MS["xdp"], "HOP_MS changed: pick a delay on the balance"
    doc["links"][1]["delay"] = "2.8ms"   # r1-r2: now the switch's processing tips the balance
    assert planned_on(parse_topology(doc, "diamond"), budgeted([], "5ms")).paths[0].routers == ["r1", "r3", "r4"]


# ---- balance ----------------------------------------------------------------------------------

ONE_CMS = [{"nf_ref": "a", "type": "cms"}]


def nodes_of(p) -> list[str]:
    return [node for _, node in p.paths[0].hops]


def test_instances_named_nowhere_go_to_the_least_loaded_router_of_the_path_ties_to_the_first():
    line3 = load_topology("line3")
    assert nodes_of(planned_on(line3, chain_doc(ONE_CMS))) == ["r1"]
    assert nodes_of(planned_on(line3, chain_doc(ONE_CMS), used={"r1": {0}})) == ["r2"]
    assert nodes_of(planned_on(line3, chain_doc(ONE_CMS), used={"r1": {0}, "r2": {0}})) == ["r3"]
    assert nodes_of(planned_on(line3, chain_doc(ONE_CMS), used={"r1": {0}, "r2": {0}, "r3": {0}})) == ["r1"]


def test_load_is_held_slots_against_each_forwarders_capacity():
    used = {"r1": {0, 1, 2, 3}, "r2": {0}, "r3": {0, 1, 2, 3, 4}}
    # r2 is full at 1 slot; r1 is half full, r3 5/8
    p = planned_on(load_topology("line3"), chain_doc(ONE_CMS), used=used, limits={"r2": 1})
    assert nodes_of(p) == ["r1"] and p.instances[0].slot == 4


def test_a_chain_spreads_and_keeps_its_hop_order_along_the_path():
    hops = [{"nf_ref": n, "type": "cms"} for n in ("a", "b", "c")]
    assert nodes_of(planned_on(load_topology("line3"), chain_doc(hops))) == ["r1", "r2", "r3"]
    # r2 busy: b goes on to r3, and c, after b, cannot go back to the emptier r1
    p = planned_on(load_topology("line3"), chain_doc(hops), used={"r2": set(range(6))})
    assert nodes_of(p) == ["r1", "r3", "r3"] and p.paths[0].routers == ["r1", "r2", "r3"]


def test_services_named_nowhere_fill_every_forwarder_of_the_path_before_any_overflows():
    used: dict[str, set[int]] = {}
    for k in range(3 * 8):
        p = planned_on(load_topology("line3"), chain_doc(ONE_CMS, name=f"s{k}"), used=used)
        for inst in p.instances:
            used.setdefault(inst.node, set()).add(inst.slot)
    assert {node: len(slots) for node, slots in used.items()} == {"r1": 8, "r2": 8, "r3": 8}
    with pytest.raises(ChainError, match=r"no router on its path \(r1, r2, r3\) has room: the forwarders' NF "
                                         r"slots are all held by other chains"):
        planned_on(load_topology("line3"), chain_doc(ONE_CMS, name="one-too-many"), used=used)


def test_placement_is_deterministic():
    hops = [{"nf_ref": n, "type": "precision"} for n in ("a", "b")]
    used = {"r1": {0, 1}, "r3": {0}}
    plans = [planned_on(load_topology("line3"), chain_doc(hops), used={n: set(s) for n, s in used.items()})
             for _ in range(3)]
    assert plans[0] == plans[1] == plans[2]


def test_an_instance_of_the_previous_version_stays_on_its_router():
    p = planned_on(load_topology("line3"), chain_doc(ONE_CMS), used={"r3": {0, 1, 2}},
                   kept={("r3", "chain3--a"): 2})
    assert nodes_of(p) == ["r3"] and p.instances[0].slot == 2


# ---- service plan --------------------------------------------------------------------------------

def test_plan_descriptor_shows_placement_paths_delay_and_rules_without_a_testbed():
    summary = plan_descriptor((NSDS / "ping-demo.json").read_text(), load_topology("diamond"), bind=BOUND)
    json.dumps(summary)   # --json prints it as it is
    to_dst, to_src = summary["paths"]
    assert to_dst["path"] == ["h1", "r1", "r2", "r4", "h2"] and to_src["path"] == ["h2", "r4", "r2", "r1", "h1"]
    assert to_dst["links_ms"] == 2.0 and to_dst["budget_ms"] == 5.0
    assert to_dst["delay_ms"] == pytest.approx(2.0 + 3 * XDP_HOP)
    assert {(r["node"], r["table"], r["action"]) for r in summary["rules"] if r["match"].get("spi") == to_dst["spi"]
            or r["params"].get("spi") == to_dst["spi"]} == {
        ("r1", "sfc_classify", "encap"), ("r1", "sfc_hops", "forward"), ("r2", "sfc_hops", "forward"),
        ("r4", "sfc_hops", "decap")}
    hh = plan_descriptor((NSDS / "heavy-hitters-sol006.yaml").read_text(), load_topology("line3"))
    assert [(i["nf"], i["node"], i["target"], i["slot"]) for i in hh["instances"]] == [
        ("cms", "r1", "xdp", 0), ("precision", "r2", "xdp", 0), ("cms", "r3", "xdp", 0)]


def test_plan_descriptor_names_the_source_of_a_descriptor_mistake():
    with pytest.raises(NSDError, match=r"^bad\.json: "):
        plan_descriptor('{"applications": []}', load_topology("line3"), source="bad.json")
