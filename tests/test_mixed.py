"""A BMv2 switch and an XDP router on one path (topology `mixed`: h1 -- s1 -- r1 -- h2).

Real frames from scapy cross both data planes: s1 is simple_switch_grpc running NFRouter's
P4 pipeline, r1 runs NFRouter in XDP; both got their routes through the same controller calls.
"""
import ipaddress

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from controller.errors import TargetError
from controller.p4 import switch
from controller.topology import load_topology
from frames import routed
from testbed import traffic
from testbed.leftovers import leftovers

pytestmark = pytest.mark.testbed

TOPO = load_topology("mixed")
PORT = 9999
PAYLOAD = b"innet mixed path " * 2


@pytest.fixture(scope="module")
def mixed():
    from testbed.net import Testbed

    if switch.unavailable():
        pytest.skip(switch.unavailable())
    tb = Testbed(TOPO, progress=lambda msg: None).start()
    yield tb
    tb.stop()


def iface(node):
    return TOPO.node(node).interfaces[0]


def udp(src: str, dst: str, v6: bool, hops_left: int = 64) -> Ether:
    """A UDP frame from host `src` to host `dst`, sent to `src`'s gateway."""
    s, d = iface(src), iface(dst)
    ip = IPv6(src=str(s.ipv6.ip), dst=str(d.ipv6.ip), hlim=hops_left) if v6 else \
        IP(src=str(s.ipv4.ip), dst=str(d.ipv4.ip), ttl=hops_left)
    return Ether(src=s.mac, dst=TOPO.gateway(src).mac) / ip / UDP(sport=1234, dport=PORT) / PAYLOAD


def route_packets(tb, node: str) -> dict[str, int]:
    return {r.prefix: r.packets for r in tb.routes.list(node)}


def forwarded(tb, node: str) -> int:
    return tb.controller.read_stat(node, "nfrouter", "verdicts")["forwarded"]


def moved(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def cross(tb, src: str, dst: str, frame: Ether) -> list[bytes]:
    cap = traffic.Capture(tb.node(dst), iface(dst).name, f"udp dst port {PORT}", timeout=2.0, count=2,
                          absorb_udp=PORT)
    traffic.send(tb.node(src), iface(src).name, [bytes(frame)])
    return cap.frames()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("src, dst", [("h1", "h2"), ("h2", "h1")], ids=["bmv2-then-xdp", "xdp-then-bmv2"])
def test_frames_cross_both_data_planes(mixed, src, dst, v6):
    counters = {n: (route_packets(mixed, n), forwarded(mixed, n)) for n in ("s1", "r1")}
    frame = udp(src, dst, v6)
    got = cross(mixed, src, dst, frame)
    assert got == [routed(frame, iface(dst).peer.mac, iface(dst).mac, hops=2)]   # the last hop's MACs
    dst_ip = iface(dst).ipv6.ip if v6 else iface(dst).ipv4.ip
    for node in ("s1", "r1"):
        routes, fwd = counters[node]
        grew = moved(routes, route_packets(mixed, node))
        assert len(grew) == 1 and list(grew.values()) == [1], f"{node}: route counters moved by {grew}"
        assert any(dst_ip in ipaddress.ip_network(p) for p in grew), (node, grew)
        assert forwarded(mixed, node) - fwd == 1, f"{node}: NFRouter's forwarded verdict did not count the frame"


def test_hosts_ping_across(mixed):
    h1, h2 = mixed.host("h1"), mixed.host("h2")
    for cmd in (f"ping -c 2 -i 0.2 -W 1 {iface('h2').ipv4.ip}", f"ping -6 -c 2 -i 0.2 -W 1 {iface('h2').ipv6.ip}"):
        assert " 0% packet loss" in h1.cmd(cmd), cmd
    assert " 0% packet loss" in h2.cmd(f"ping -c 2 -i 0.2 -W 1 {iface('h1').ipv4.ip}")


def test_ttl_expiring_at_the_switch_goes_no_further(mixed):
    """TTL 1 at s1: no kernel slow path there, so the switch drops it (no CPU port) and counts it."""
    before = mixed.controller.read_stat("s1", "nfrouter", "verdicts")["pass_ttl_expired"]
    assert cross(mixed, "h1", "h2", udp("h1", "h2", v6=False, hops_left=1)) == []
    assert mixed.controller.read_stat("s1", "nfrouter", "verdicts")["pass_ttl_expired"] - before == 1


def test_teardown_leaves_nothing(mixed):
    pids = dict(mixed.host_pids)
    mixed.stop()
    assert leftovers(TOPO, mixed.controller.scope, pids) == []


def test_a_switch_that_cannot_start_leaves_nothing_behind(monkeypatch):
    """No simple_switch_grpc: a clear error, and the half-built topology is torn down."""
    from testbed.net import Testbed

    monkeypatch.setattr(switch, "find_tool", lambda name: None)
    tb = Testbed(TOPO, progress=lambda msg: None)
    with pytest.raises(TargetError, match="simple_switch_grpc not found"):
        tb.start()
    assert leftovers(TOPO, tb.controller.scope, tb.host_pids) == []
