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
