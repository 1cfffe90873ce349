"""Differential test: the XDP router and Linux's own forwarding emit the same bytes."""
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from frames import H1, H1_6, H1_MAC, H2, H2_6, R1_IN_MAC
from testbed import traffic

pytestmark = pytest.mark.testbed


def packet_set(seed=7):
    rng = random.Random(seed)
    eth = Ether(src=H1_MAC, dst=R1_IN_MAC)
    out = []
    for i in range(60):
        size = rng.choice([0, 1, 18, 100, 512, 1400])
        payload = bytes(rng.getrandbits(8) for _ in range(size))
        l4 = rng.choice([UDP(sport=rng.randrange(1, 65535), dport=7000 + i),
                         TCP(sport=rng.randrange(1, 65535), dport=7000 + i, flags="S"),
                         ICMP(type=8, id=i, seq=i)])
        if rng.random() < 0.5:
            p = eth / IP(src=H1, dst=H2, ttl=rng.randrange(2, 256), tos=rng.randrange(256), id=i) / l4 / payload
            if rng.random() < 0.2:
                p[IP].flags = "MF"
        else:
            p = eth / IPv6(src=H1_6, dst=H2_6, hlim=rng.randrange(2, 256), tc=rng.randrange(256),
                           fl=rng.randrange(1 << 20)) / l4 / payload
        out.append(bytes(p))
    return out


def forwarded_bytes(tb, frames):
    # only the set's own frames: r1 also sends ARP, NDP and MLD of its own to h2
    cap = traffic.Capture(tb.node("h2"), "h2-eth0",
                          f"ether src {tb.topo.gateway('h2').mac} and (src host {H1} or src host {H1_6})",
                          timeout=2.5, count=len(frames))
    traffic.send(tb.node("h1"), "h1-eth0", frames)
    return sorted(cap.frames())


def test_xdp_and_kernel_forward_identical_bytes(linear):
    frames = packet_set()
    def to_h2():
        return sum(r.packets for r in linear.routes.list("r1") if r.prefix in (f"{H2}/32", f"{H2_6}/128"))

    before = to_h2()
    via_xdp = forwarded_bytes(linear, frames)
    assert to_h2() - before == len(frames), "every frame of the set takes the XDP fast path"

    ctl = linear.controller
    interfaces = list(ctl.deployment("r1", "nfrouter").interfaces)
    kernel = ctl.plane("r1").fib_routes()
    assert kernel, "r1's routes are in its kernel FIB too"
    ctl.remove("r1", "nfrouter")      # its routes go with it, from the kernel FIB too
    try:
        ctl.plane("r1").fib_replace(kernel)   # the same kernel routes back: Linux forwards alone now
        ctl.deploy("r1", "rxcount", ["r1-eth1"])   # keep h2's redirect path symmetric
        via_kernel = forwarded_bytes(linear, frames)
    finally:
        ctl.remove("r1", "rxcount")
        ctl.deploy("r1", "nfrouter", interfaces)
        from controller.topology import load_topology
        for route in load_topology("linear").static_routes("r1"):
            linear.routes.add("r1", route.prefix, route.interface, route.mac, route.via, route.local)
    assert len(via_xdp) == len(frames)
    assert via_kernel == via_xdp
    assert all(r.fast_path and r.kernel for r in linear.routes.list("r1")), "r1 routes as before"
