"""Real frames from scapy through the real NFRouter on r1 (linear: h1 -- r1 -- h2), on both
targets: XDP (with the node's kernel as slow path) and BMv2 (simple_switch_grpc, no CPU port
in the testbed, so what the XDP router hands to the kernel is counted and dropped there).
Forwarded frames must come out byte for byte as expected, the same bytes on both targets."""
import socket

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6TimeExceeded, IPv6
from scapy.layers.l2 import ARP, Ether

from controller.tables import TableEntry
from frames import H1, H1_6, H1_MAC, H2, H2_6, H2_MAC, PORT, R1_IN, R1_IN_6, R1_IN_MAC, routed, udp4, udp6
from testbed import traffic

pytestmark = [pytest.mark.testbed, pytest.mark.parametrize("linear", ["xdp", "bmv2"], indirect=True)]


def slow_path(tb) -> bool:
    """Whether r1's kernel takes what the fast path does not forward (XDP), or nothing does (BMv2)."""
    return tb.node("r1").kernel_slow_path


def verdicts(tb):
    return tb.controller.read_stat("r1", "nfrouter", "verdicts")


def to_h2(tb):
    """Packets the fast path forwarded to h2 (its two host routes), replies excluded."""
    return sum(r.packets for r in tb.routes.list("r1") if r.prefix in (f"{H2}/32", "2001:db8:0:2::2/128"))


def through_r1(tb, frames, bpf=f"udp dst port {PORT}", timeout=1.5):
    """Send frames from h1; return what reaches h2 and how r1's counters moved
    ("forwarded": fast-path packets to h2; the rest: verdict counters)."""
    before, fwd_before = verdicts(tb), to_h2(tb)
    cap = traffic.Capture(tb.node("h2"), "h2-eth0", bpf, timeout=timeout, count=len(frames), absorb_udp=PORT)
    traffic.send(tb.node("h1"), "h1-eth0", [bytes(f) for f in frames])
    got = cap.frames()
    after = verdicts(tb)
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k] and k != "forwarded"}
    moved["forwarded"] = to_h2(tb) - fwd_before
    return got, moved


def route_counter(tb, prefix):
    return next(r for r in tb.routes.list("r1") if r.prefix == prefix)


def test_ipv4_forwarded_by_the_fast_path(linear):
    before = route_counter(linear, "10.0.2.2/32")
    frame = udp4(ttl=64)
    got, moved = through_r1(linear, [frame])
    assert moved.get("forwarded") == 1
    assert got == [routed(frame)], "MACs, TTL and the IPv4 checksum as the kernel would write them"
    out = Ether(got[0])
    assert out[IP].ttl == 63
    checksum = out[IP].chksum
    del out[IP].chksum
    assert Ether(bytes(out))[IP].chksum == checksum, "IPv4 header checksum invalid after forwarding"
    after = route_counter(linear, "10.0.2.2/32")
    assert after.packets - before.packets == 1
    assert after.bytes - before.bytes == len(got[0])


def test_ipv6_forwarded_by_the_fast_path(linear):
    frame = udp6(hlim=9)
    got, moved = through_r1(linear, [frame])
    assert moved.get("forwarded") == 1
    assert got == [routed(frame)]
    assert Ether(got[0])[IPv6].hlim == 8


def test_longest_prefix_wins(linear):
    """Two routes out of r1-eth1, to h2 and to a second neighbour on h2's link (10.0.2.9, known
    by its MAC alone): the longer prefix decides the next hop. (Neither leads back out of
    r1-eth0, the frames' ingress: such a hairpin is the kernel's, which sends a redirect.)"""
    routes = linear.routes
    neighbour_mac = "02:00:00:03:02:09"
    routes.add("r1", "10.99.0.0/16", "r1-eth1", neighbour_mac, via="10.0.2.9")
    routes.add("r1", "10.99.1.0/24", "r1-eth1", H2_MAC, via=H2)     # the longer one: to h2
    try:
        got, _ = through_r1(linear, [udp4(dst="10.99.1.7")])
        assert [Ether(g).dst for g in got] == [H2_MAC]
        got, _ = through_r1(linear, [udp4(dst="10.99.2.7")])
        assert [Ether(g).dst for g in got] == [neighbour_mac], "the /16 should have sent 10.99.2.7 to 10.0.2.9"
        assert route_counter(linear, "10.99.1.0/24").packets == 1
        assert route_counter(linear, "10.99.0.0/16").packets == 1
    finally:
        routes.delete("r1", "10.99.0.0/16")
        routes.delete("r1", "10.99.1.0/24")
    assert not [r for r in routes.list("r1") if r.prefix.startswith("10.99.")]


def answered_or_dropped(tb, frame, answer_filter: str, verdict: str, check):
    """Send `frame` to r1, which must count it under `verdict`. With a kernel slow path the
    kernel answers (`check` judges the answer); on BMv2 nothing answers and nothing passes."""
    before = verdicts(tb)
    cap = traffic.Capture(tb.node("h2"), "h2-eth0", f"udp dst port {PORT}", timeout=1.5, absorb_udp=PORT)
    replies = traffic.exchange(tb.node("h1"), "h1-eth0", [bytes(frame)], answer_filter, timeout=1.5, count=1)
    assert verdicts(tb)[verdict] >= before[verdict] + 1
    assert cap.frames() == [], "nothing the fast path refused may reach h2"
    if slow_path(tb):
        assert len(replies) == 1 and check(Ether(replies[0]))
    else:
        assert replies == [], "BMv2 without a CPU port drops what it cannot forward"


def test_ttl_1_goes_to_the_slow_path(linear):
    answered_or_dropped(linear, udp4(ttl=1), f"icmp and src host {R1_IN}", "pass_ttl_expired",
                        lambda r: r[ICMP].type == 11)


def test_hop_limit_1_goes_to_the_slow_path(linear):
    answered_or_dropped(linear, udp6(hlim=1), f"icmp6 and src host {R1_IN_6}", "pass_ttl_expired",
                        lambda r: ICMPv6TimeExceeded in r)


def test_unknown_destination_goes_to_the_slow_path(linear):
    answered_or_dropped(linear, udp4(dst="198.51.100.9"), f"icmp and src host {R1_IN}", "pass_no_route",
                        lambda r: r[ICMP].type == 3)


def test_arp_goes_to_the_slow_path(linear):
    ask = Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=H1_MAC, psrc=H1, pdst=R1_IN)
    answered_or_dropped(linear, ask, "arp and arp[6:2] = 2", "pass_not_ip", lambda r: r[ARP].hwsrc == R1_IN_MAC)


def test_neighbour_discovery_goes_to_the_slow_path(linear):
    solicited = "ff02::1:ff00:1"          # solicited-node multicast of ...::1
    ns = (Ether(src=H1_MAC, dst="33:33:ff:00:00:01") / IPv6(src=H1_6, dst=solicited, hlim=255)
          / ICMPv6ND_NS(tgt=R1_IN_6))
    answered_or_dropped(linear, ns, f"icmp6 and ip6[40] = 136 and src host {R1_IN_6}", "pass_local",
                        lambda r: r[ICMPv6ND_NA].tgt == R1_IN_6)


def test_malformed_frames_follow_the_documented_rule(linear):
    good = udp4(payload=b"after")
    raw = bytes(udp4())
    truncated_ip = raw[:14 + 10]                     # IPv4 header cut short
    ihl_short = bytearray(raw)
    ihl_short[14] = 0x44                             # IHL 4 < 5
    options = udp4()
    options[IP].options = [IPOption_RR()]
    bad_sum = udp4()
    bad_sum[IP].chksum = 0x1234
    first_frag = udp4(flags="MF", frag=0, payload=b"f" * 32)
    later_frag = udp4(frag=4, payload=b"g" * 32)
    frames = [truncated_ip, bytes(ihl_short), options, bad_sum, first_frag, later_frag, good]
    got, moved = through_r1(linear, frames, bpf=f"dst host {H2} and (udp or ip[6:2] & 0x3fff != 0)", timeout=2)
    assert moved.get("pass_malformed") == 3            # truncated, IHL<5, bad checksum: the kernel drops them
    assert moved.get("pass_ip_options", 0) >= 1        # (IPv6 MLD reports from the hosts count here too)
    assert moved.get("forwarded") == 3                 # both fragments and the good packet
    fast = [routed(f) for f in (first_frag, later_frag, good)]
    assert [g for g in got if g in fast] == fast, "the fast path's frames, byte for byte, in order"
    rest = [Ether(g) for g in got if g not in fast]
    if slow_path(linear):
        assert len(rest) == 1 and rest[0][IP].options and rest[0][IP].ttl == 63, \
            "the kernel forwards the options packet"
    else:
        assert rest == [], "BMv2 without a CPU port drops the options packet"


def test_ethernet_padding_is_trimmed_like_the_kernel(linear):
    short = bytes(udp4(payload=b"x")) + b"\x00" * 13    # padded to 60 bytes on the wire
    got, moved = through_r1(linear, [short])
    assert moved.get("forwarded") == 1
    assert got == [routed(udp4(payload=b"x"))] and len(got[0]) == 14 + 20 + 8 + 1



def test_a_packet_over_the_egress_mtu_goes_to_the_slow_path(linear):
    """The MTU check takes the IP length, as the kernel's does: a packet of exactly the egress
    MTU is forwarded (bytes past its IP length trimmed, not counted), one byte more goes to the
    kernel, which answers "fragmentation needed" for a DF packet."""
    if linear.node("r1").target != "xdp":
        pytest.skip("BMv2 knows no port MTU: it holds every packet to NFROUTER_MTU")
    r1, mtu = linear.host("r1"), 1300
    udp_overhead = 20 + 8
    fits = udp4(flags="DF", payload=b"m" * (mtu - udp_overhead))
    over = udp4(flags="DF", payload=b"m" * (mtu + 1 - udp_overhead))
    was = int(r1.cmd("cat /sys/class/net/r1-eth1/mtu"))
    r1.cmd(f"ip link set dev r1-eth1 mtu {mtu}")
    try:
        got, moved = through_r1(linear, [bytes(fits) + b"\x00" * 4])
        assert moved.get("forwarded") == 1 and got == [routed(fits)]
        answered_or_dropped(linear, over, f"icmp and src host {R1_IN}", "pass_too_big",
                            lambda r: (r[ICMP].type, r[ICMP].code, r[ICMP].nexthopmtu) == (3, 4, mtu))
    finally:
        r1.cmd(f"ip link set dev r1-eth1 mtu {was}")


def test_sources_are_checked_against_the_addresses_r1_has_when_nfrouter_is_deployed(linear):
    """XDP's own_ipv4 holds every IPv4 address of r1's namespace, written whole at each deploy:
    an address added since counts once NFRouter is deployed again (its packets go to the kernel,
    which drops them as martian), and one removed since is gone from it again."""
    if linear.node("r1").target != "xdp":
        pytest.skip("BMv2's node has no addresses: its own are its local routes (the next test)")
    from controller.bpf.libbpf import BpfMap

    ctl, r1, added = linear.controller, linear.host("r1"), "10.0.9.1"
    interfaces = list(ctl.deployment("r1", "nfrouter").interfaces)

    def own() -> set[str]:
        pinned = BpfMap.from_pin(str(ctl.target("xdp").pin_dir(ctl.node("r1"), "nfrouter") / "own_ipv4"))
        try:
            return {socket.inet_ntoa(v[:4]) for _, v in pinned.items() if v[:4] != bytes(4)}
        finally:
            pinned.close()

    def namespace_addresses() -> set[str]:
        return {line.split()[3].split("/")[0] for line in r1.cmd("ip -4 -o addr show").splitlines()}

    assert own() == namespace_addresses() >= {R1_IN, "10.0.2.1"}
    r1.cmd(f"ip addr add {added}/32 dev r1-eth1")
    try:
        ctl.deploy("r1", "nfrouter", interfaces)
        assert added in own()
        frame = udp4()
        frame[IP].src = added
        got, moved = through_r1(linear, [frame])
        assert got == [] and moved.get("pass_local_source") == 1 and moved["forwarded"] == 0
    finally:
        r1.cmd(f"ip addr del {added}/32 dev r1-eth1")
        ctl.deploy("r1", "nfrouter", interfaces)
    assert own() == namespace_addresses() and added not in own()

def test_bmv2_checks_sources_against_its_local_routes(linear):
    """A BMv2 node's own addresses are its /32 local routes, which the target mirrors into
    own_ipv4 as it writes them: a local route added makes its address's packets go to the CPU
    (pass_local_source), and once the route is gone they are forwarded again."""
    if linear.node("r1").target != "bmv2":
        pytest.skip("XDP checks sources against the namespace's addresses (the previous test)")
    from controller.routes import RouteService

    routes, added = RouteService(linear.controller), "10.0.9.1"
    frame = udp4()
    frame[IP].src = added
    # (a BMv2 route's counters count what matched it, refused or not: the verdicts tell)
    got, moved = through_r1(linear, [frame])
    assert len(got) == 1 and "pass_local_source" not in moved
    routes.add("r1", f"{added}/32", local=True)
    try:
        got, moved = through_r1(linear, [frame])
        assert got == [] and moved.get("pass_local_source") == 1
    finally:
        routes.delete("r1", f"{added}/32")
    got, moved = through_r1(linear, [frame])
    assert len(got) == 1 and "pass_local_source" not in moved


# ---- flow_routes: per-flow next hops over the LPM routes ------------------------------------
OVERRIDE_MAC = "02:00:00:0f:00:01"     # the override's source MAC: a frame carrying it took the override


def flow_route(src, dst, sport, dport, proto=17, port="r1-eth0", dst_mac=H1_MAC, src_mac=OVERRIDE_MAC):
    """A flow_routes entry sending the flow back out r1-eth0 towards h1, with a MAC of its own."""
    return TableEntry("flow_routes", {"src_addr": src, "dst_addr": dst, "src_port": sport, "dst_port": dport,
                                      "proto": proto},
                      "forward", {"egress_port": port, "dst_mac": dst_mac, "src_mac": src_mac})


def flow_counters(tb):
    return {tuple(c.entry.match[k] for k in ("src_addr", "dst_addr", "src_port", "dst_port", "proto")): c.packets
            for c in tb.controller.read_counters("r1", "nfrouter", "flow_routes")}


def overridden(tb, frames, timeout=1.5):
    """Send frames from h1; return what comes back to h1 by an override and what reaches h2."""
    back = traffic.Capture(tb.node("h1"), "h1-eth0", f"ether src {OVERRIDE_MAC}", timeout=timeout, count=len(frames))
    got, _ = through_r1(tb, frames, timeout=timeout)
    return back.frames(), got


def with_sport(frame, sport):
    frame = frame.copy()
    frame[UDP].sport = sport
    return frame


@pytest.mark.parametrize("version", [4, 6])
def test_flow_route_overrides_the_next_hop_of_one_flow(linear, version):
    """One flow to h2 has an override (back out r1-eth0 to h1, with its own MACs); another flow to
    the same destination follows the LPM route to h2. Deleting the override returns the flow to
    the route."""
    make, src, dst = (udp4, H1, H2) if version == 4 else (udp6, H1_6, H2_6)
    ctl = linear.controller
    entry = flow_route(src, dst, 1234, PORT)
    ctl.write("r1", "nfrouter", [entry])
    try:
        elephant, mouse = make(), with_sport(make(), 4321)
        back, got = overridden(linear, [elephant, mouse])
        assert back == [routed(elephant, src_mac=OVERRIDE_MAC, dst_mac=H1_MAC)], \
            "the overridden flow leaves by the override's port and MACs, TTL/hop limit down by one"
        assert got == [routed(mouse)], "the other flow to the same destination follows the route"
        assert flow_counters(linear) == {(src, dst, 1234, PORT, 17): 1}
    finally:
        assert ctl.delete("r1", "nfrouter", [entry]) == 1
    assert flow_counters(linear) == {}
    back, got = overridden(linear, [make()])
    assert back == [] and got == [routed(make())], "without its override the flow follows the route again"


def test_flow_route_keeps_every_pass_rule(linear):
    """An override only changes the next hop of a packet the router forwards: TTL 1 still goes to
    the kernel (which answers time exceeded), and nothing leaves by the override."""
    ctl = linear.controller
    entry = flow_route(H1, H2, 1234, PORT)
    ctl.write("r1", "nfrouter", [entry])
    try:
        back = traffic.Capture(linear.node("h1"), "h1-eth0", f"ether src {OVERRIDE_MAC}", timeout=2)
        answered_or_dropped(linear, udp4(ttl=1), f"icmp and src host {R1_IN}", "pass_ttl_expired",
                            lambda r: r[ICMP].type == 11)
        assert back.frames() == [], "a TTL 1 packet never takes the override"
        assert flow_counters(linear) == {(H1, H2, 1234, PORT, 17): 0}
    finally:
        ctl.delete("r1", "nfrouter", [entry])


def test_the_xdp_override_lookup_is_gated_on_there_being_overrides(linear):
    """The program skips flow_routes while it is empty: its gate opens before the first entry is
    written and shuts once the last is deleted (the packets above show the lookup runs while open)."""
    if linear.node("r1").target != "xdp":
        pytest.skip("the gate is the XDP program's: BMv2 applies its table as it is")
    from controller.bpf.libbpf import BpfMap

    ctl = linear.controller

    def gate() -> int:
        pinned = BpfMap.from_pin(str(ctl.target("xdp").pin_dir(ctl.node("r1"), "nfrouter") / "flow_routes_gate"))
        try:
            return int.from_bytes(pinned.lookup(b"\0\0\0\0")[:4], "little")
        finally:
            pinned.close()

    first, second = flow_route(H1, H2, 1234, PORT), flow_route(H1, H2, 1235, PORT)
    assert gate() == 0
    ctl.write("r1", "nfrouter", [first, second])
    assert gate() == 1
    ctl.delete("r1", "nfrouter", [first])
    assert gate() == 1, "one override is left"
    ctl.delete("r1", "nfrouter", [second])
    assert gate() == 0
