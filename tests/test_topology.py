import pytest

from controller.errors import TopologyError
from controller.topology import load_topology, parse_topology


@pytest.mark.parametrize("name", ["linear", "line3", "diamond", "mixed"])
def test_shipped_topologies_route_every_link(name):
    topo = load_topology(name)
    for r in topo.routers:
        prefixes = {route.prefix for route in topo.static_routes(r.name)}
        for link in topo.links:
            v4 = str(link.a.ipv4.network)
            covered = v4 in prefixes or any(f"{e.ipv4.ip}/32" in prefixes for e in (link.a, link.b))
            assert covered, f"{r.name} has no route to {v4}"


def test_line3_path_goes_through_every_router():
    topo = load_topology("line3")
    r1 = {r.prefix: r for r in topo.static_routes("r1")}
    assert r1["10.0.4.0/24"].via == "10.0.2.2" and r1["10.0.4.0/24"].interface == "r1-eth1"


@pytest.mark.parametrize("doc, msg", [
    ({"nodes": {"a": {}}, "links": [{"a": "a", "b": "zz"}]}, "unknown node 'zz'"),
    ({"nodes": {"a": {"role": "switch"}}, "links": []}, "unknown role 'switch'"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "bw": -3}]}, "bw must be a positive"),
    ({"nodes": {"averyveryverylongname": {}, "b": {}}, "links": [{"a": "averyveryverylongname", "b": "b"}]},
     "longer than 15"),
    ({"nodes": []}, "'nodes' mapping"),
    ({"nodes": {"r": {"role": "router", "target": "tofino"}}, "links": []}, "a router cannot run target 'tofino'"),
    ({"nodes": {"h": {"target": "bmv2"}}, "links": []}, "a host cannot run target 'bmv2'"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": 5}]},
     r"^t\.yaml: link 1 \(a–b\): delay must be a duration with a unit, like '2ms' or '500us', got 5\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b"}, {"a": "b", "b": "a", "delay": "fast"}]},
     r"^t\.yaml: link 2 \(b–a\): delay must be .* got 'fast'\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": "2 parsecs"}]}, r"got '2 parsecs'\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": "-2ms"}]}, r"got '-2ms'\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": "2MS"}]}, r"got '2MS'\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": True}]}, r"got True\n"),
    ({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": "9" * 400 + "ms"}]},
     r"link 1 \(a–b\): delay '9+ms' is not a finite duration"),
])
def test_malformed_topology(doc, msg):
    with pytest.raises(TopologyError, match=msg):
        parse_topology(doc, "t.yaml")


def test_unknown_topology_lists_known():
    with pytest.raises(TopologyError, match="known topologies: .*line3"):
        load_topology("nosuch")


def test_retarget_moves_every_router_and_only_routers():
    topo = load_topology("line3")
    moved = topo.retarget("bmv2")
    assert {r.target for r in moved.routers} == {"bmv2"}
    assert {h.target for h in moved.hosts} == {"kernel"}
    assert {r.target for r in topo.routers} == {"xdp"}, "the original must stay as loaded"
    with pytest.raises(TopologyError, match="a router cannot run target 'kernel'"):
        topo.retarget("kernel")


@pytest.mark.parametrize("declared, ms", [("2ms", 2.0), ("500us", 0.5), ("500µs", 0.5), ("0.25 s", 250.0),
                                          ("1500ns", 0.0015), ("0ms", 0.0)])
def test_link_delays_parse_to_milliseconds_and_survive_the_stored_document(declared, ms):
    topo = parse_topology({"nodes": {"a": {}, "b": {}}, "links": [{"a": "a", "b": "b", "delay": declared}]}, "t.yaml")
    assert topo.links[0].delay_ms == pytest.approx(ms)
    assert parse_topology(topo.to_doc(), "stored").links[0].delay_ms == pytest.approx(ms)


def test_a_link_without_a_delay_declares_none_and_diamond_declares_its_branches():
    assert load_topology("line3").links[1].delay_ms == 0.0
    diamond = {(link.a.node, link.b.node): link.delay_ms for link in load_topology("diamond").links}
    assert diamond == {("r1", "h1"): 0.0, ("r1", "r2"): 1.0, ("r1", "r3"): 2.0, ("r2", "r4"): 1.0,
                       ("r3", "r4"): 2.0, ("r4", "h2"): 0.0}
