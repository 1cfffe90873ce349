"""The node kernel's FIB written in batches: routes with their neighbours, all or none, IPv4
and IPv6, checked against `ip route` / `ip neigh` in a throwaway namespace."""
import dataclasses
import os
import socket
import time

import pytest

from controller import fib
from controller.errors import EntryError, TargetError
from controller.fib import KernelRoute
from controller.node import Node
from testbed.scratch import Veth, namespace, sh

needs_root = pytest.mark.needs_root

GW, GW2, GW3 = "192.0.2.2", "192.0.2.3", "192.0.2.4"
GW6 = "2001:db8:1::2"
MAC, MAC2, MAC3 = "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:04"
OFF_LINK = "198.51.100.1"      # on no subnet of the node: the kernel refuses it as a gateway


@pytest.fixture
def node():
    """A namespace whose veth `va` has 192.0.2.1/24 and 2001:db8:1::1/64; (namespace, va's ifindex)."""
    with namespace("innet-fib", [Veth("va", "vb", "192.0.2.1/24")]) as ns:
        sh(ns.name, "ip -6 addr add 2001:db8:1::1/64 dev va nodad")
        yield ns, Node(ns.name, ns.path).interface("va")["ifindex"]


def kernel_state(ns) -> str:
    """The main tables and the permanent neighbours: what a call may change. Learned neighbours
    are left out, they come and go with the veth's own traffic."""
    return sh(ns.name, "ip -4 route show; ip -6 route show; ip neigh show nud permanent")


def innet_routes(ns, version: int) -> set[tuple[str, str | None]]:
    """(prefix, gateway) of each route `ip route` lists with innet's protocol number."""
    found = set()
    for line in sh(ns.name, f"ip -{version} route show proto {fib.INNET_PROTO}").splitlines():
        words = line.split()
        prefix = words[0] if "/" in words[0] else f"{words[0]}/{32 if version == 4 else 128}"
        found.add((prefix, words[words.index("via") + 1] if "via" in words else None))
    return found


def permanent_neighbours(ns) -> set[tuple[str, str]]:
    return {(line.split()[0], line.split()[line.split().index("lladdr") + 1])
            for line in sh(ns.name, "ip neigh show nud permanent").splitlines()}


def subnets(count: int) -> list[str]:
    return [f"10.{i >> 8}.{i & 255}.0/24" for i in range(count)]


@needs_root
def test_a_batch_of_5000_routes_goes_in_with_its_neighbours(node):
    ns, va = node
    routes = ([KernelRoute(p, va, GW, MAC) for p in subnets(4998)] +
              [KernelRoute("192.0.2.9/32", va, None, MAC2), KernelRoute("192.0.2.10/32", va, None, MAC3)])
    fib.replace(ns.path, routes, "r1")
    assert sorted(fib.routes(ns.path, "r1"), key=lambda r: r.prefix) == sorted(routes, key=lambda r: r.prefix)
    assert innet_routes(ns, 4) == {(r.prefix, r.via) for r in routes}
    assert permanent_neighbours(ns) == {(GW, MAC), ("192.0.2.9", MAC2), ("192.0.2.10", MAC3)}


@needs_root
def test_a_refused_route_leaves_the_fib_as_it_was(node):
    ns, va = node
    fib.replace(ns.path, [KernelRoute(p, va, GW, MAC) for p in subnets(100)], "r1")
    sh(ns.name, f"ip route add 172.16.0.0/24 via {GW3}")     # the administrator's, not innet's
    before = kernel_state(ns)
    batch = [KernelRoute("10.0.5.0/24", va, GW2, MAC2),        # innet's, moving to another gateway
             KernelRoute("172.16.0.0/24", va, GW2, MAC2),      # taking the administrator's place
             KernelRoute("10.200.0.0/24", va, OFF_LINK, MAC3),
             KernelRoute("10.99.0.0/24", va, GW2, MAC2)]       # new
    with pytest.raises(TargetError) as refusal:
        fib.replace(ns.path, batch, "r1")
    assert "refused 1 of 4" in str(refusal.value) and "route 10.200.0.0/24" in str(refusal.value)
    assert "back as it was" in str(refusal.value)
    assert kernel_state(ns) == before
    assert (GW2, MAC2) not in permanent_neighbours(ns)


@needs_root
def test_a_refused_neighbour_takes_back_every_route_and_neighbour_of_the_call(node, monkeypatch):
    ns, va = node
    fib.replace(ns.path, [KernelRoute("10.1.0.0/24", va, GW, MAC)], "r1")
    sh(ns.name, f"ip neigh replace {GW2} lladdr 02:00:00:00:00:99 dev va nud permanent")
    before = kernel_state(ns)

    # this kernel takes every neighbour a route it accepted can use: to have one refused,
    # its request names an interface that does not exist
    real = fib._replace_neighbour
    gw3 = socket.inet_pton(socket.AF_INET, GW3)
    monkeypatch.setattr(fib, "_replace_neighbour", lambda r: real(
        r._replace(route=dataclasses.replace(r.route, ifindex=99999)) if r.hop == gw3 else r))
    batch = [KernelRoute("10.1.0.0/24", va, GW2, MAC2), KernelRoute("10.2.0.0/24", va, GW2, MAC2),
             KernelRoute("10.3.0.0/24", va, GW3, MAC3)]
    with pytest.raises(TargetError, match=f"neighbour {GW3} on ifindex {va}: .*back as it was"):
        fib.replace(ns.path, batch, "r1")
    assert kernel_state(ns) == before


@needs_root
@pytest.mark.parametrize("prefix, old, new, old_mac, new_mac", [
    ("10.1.0.0/24", GW, GW2, MAC, MAC2),
    ("2001:db8:100::/48", GW6, "2001:db8:1::3", MAC, MAC2),
])
def test_replacing_a_route_with_a_new_gateway_moves_it(node, prefix, old, new, old_mac, new_mac):
    ns, va = node
    fib.replace(ns.path, [KernelRoute(prefix, va, old, old_mac)], "r1")
    fib.replace(ns.path, [KernelRoute(prefix, va, new, new_mac)], "r1")
    assert fib.routes(ns.path, "r1") == [KernelRoute(prefix, va, new, new_mac)]
    version = 6 if ":" in prefix else 4
    assert innet_routes(ns, version) == {(prefix, new)}


@needs_root
def test_delete_keeps_the_neighbours_still_in_use(node):
    ns, va = node
    kept = [KernelRoute("10.1.0.0/24", va, GW, MAC)]
    gone = [KernelRoute("10.2.0.0/24", va, GW, MAC), KernelRoute("10.3.0.0/24", va, GW2, MAC2),
            KernelRoute("192.0.2.9/32", va, None, MAC3)]
    fib.replace(ns.path, kept + gone, "r1")
    sh(ns.name, f"ip route add 172.16.0.0/24 via {GW3}")     # the administrator's: innet never deletes it
    missing = KernelRoute("10.9.0.0/24", va, GW, MAC)
    admins = KernelRoute("172.16.0.0/24", va, GW3, None)
    assert fib.delete(ns.path, gone + [missing, admins], "r1", keep_neighbours={(va, GW)}) == 3
    assert fib.routes(ns.path, "r1") == kept
    assert permanent_neighbours(ns) == {(GW, MAC)}
    assert f"172.16.0.0/24 via {GW3}" in sh(ns.name, "ip route show")


@needs_root
def test_ipv6_routes_go_in_come_back_when_refused_and_go_out(node):
    ns, va = node
    routes = [KernelRoute("2001:db8:1::9/128", va, None, MAC2), KernelRoute("2001:db8:100::/48", va, GW6, MAC),
              KernelRoute("2001:db8:200::/64", va, GW6, MAC)]
    fib.replace(ns.path, routes + [KernelRoute("10.1.0.0/24", va, GW, MAC3)], "r1")
    assert fib.routes(ns.path, "r1") == [KernelRoute("10.1.0.0/24", va, GW, MAC3)] + routes
    assert innet_routes(ns, 6) == {(r.prefix, r.via) for r in routes}
    assert {(GW6, MAC), ("2001:db8:1::9", MAC2)} <= permanent_neighbours(ns)

    before = kernel_state(ns)
    with pytest.raises(TargetError, match="route 2001:db8:ff::/48"):
        fib.replace(ns.path, [KernelRoute("2001:db8:100::/48", va, "2001:db8:1::3", MAC2),
                              KernelRoute("2001:db8:ff::/48", va, "2001:db8:ee::1", MAC3)], "r1")
    assert kernel_state(ns) == before

    assert fib.delete(ns.path, routes, "r1", keep_neighbours=set()) == 3
    assert innet_routes(ns, 6) == set()
    assert permanent_neighbours(ns) == {(GW, MAC3)}


@pytest.mark.parametrize("routes, complaint", [
    ([KernelRoute("10.1.0.1/24", 2, "192.0.2.2", None)], "not a canonical prefix"),
    ([KernelRoute("10.1.0.0/33", 2, "192.0.2.2", None)], "not a canonical prefix"),
    ([KernelRoute("10.1.0.0/24", 2, None, None)], "no gateway but is not one host"),
    ([KernelRoute("10.1.0.0/24", 2, "2001:db8::1", None)], "not of the prefix's family"),
    ([KernelRoute("10.1.0.0/24", 2, "192.0.2.2", "02:00:00:00:00")], "not a MAC address"),
    ([KernelRoute("10.1.0.0/24", 2, "192.0.2.2", None)] * 2, "appears twice"),
    ([KernelRoute("10.1.0.0/24", 2, "192.0.2.2", MAC), KernelRoute("10.2.0.0/24", 2, "192.0.2.2", MAC2)],
     "given two MACs"),
])
def test_a_malformed_batch_is_refused_before_the_kernel_sees_it(routes, complaint):
    with pytest.raises(EntryError, match=complaint):
        fib.replace("/nonexistent/netns", routes, "r1")


@needs_root
@pytest.mark.skipif(not os.environ.get("INNET_FIB_BENCH"), reason="a measurement: set INNET_FIB_BENCH=1 (and -s)")
def test_rates(node):
    """Routes/s of replace (new, then each moved to another gateway), routes() and delete, IPv4
    via one gateway."""
    ns, va = node
    for length in (32, 24):
        for count in (1_000, 10_000, 100_000):
            shift = 32 - length
            prefixes = [f"{socket.inet_ntop(socket.AF_INET, ((10 << 24) + (i << shift)).to_bytes(4, 'big'))}/{length}"
                        for i in range(count)]
            new = [KernelRoute(p, va, GW, MAC) for p in prefixes]
            moved = [KernelRoute(p, va, GW2, MAC2) for p in prefixes]
            rates = [_rate(count, fib.replace, ns.path, new, "bench"),
                     _rate(count, fib.replace, ns.path, moved, "bench"),
                     _rate(count, fib.routes, ns.path, "bench"),
                     _rate(count, fib.delete, ns.path, moved, "bench", set())]
            assert fib.routes(ns.path, "bench") == []
            print(f"/{length} {count:>7,}: replace new {rates[0]:>9,.0f}/s   replace existing {rates[1]:>9,.0f}/s"
                  f"   routes() {rates[2]:>9,.0f}/s   delete {rates[3]:>9,.0f}/s")


def _rate(count: int, call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return count / (time.perf_counter() - start)
