"""innet's P4 programs on a real BMv2 switch, through the controller.

One simple_switch_grpc in a namespace of its own (prefix `p4d`), started in the suite's scope
and driven through a Controller (one instance per NF, named after it), runs the composed pipeline
(p4/innet.p4) with every NF on the ingress port p4a: cms, precision and prio measure and
classify, nfrouter forwards to p4c. Frames are sent from p4b (p4a's peer) and captured on
p4d (p4c's peer); IPv6 is off in the namespace so the kernel adds no frames of its own.
Each program also compiles standalone and composed with its parameters at both extremes.
"""
from collections import Counter

import pytest
from scapy.layers.inet import ICMP, IP, IPOption_RR, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from controller.catalog import load_catalog
from controller.errors import EntryError
from controller.node import Node
from controller.p4 import composed, switch
from controller.p4.thrift import ThriftClient
from controller.service import Controller
from controller.tables import TableEntry, ip_str
from frames import routed
from testbed import traffic
from testbed.scratch import Veth, namespace, sh

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))]

CATALOG = load_catalog()
P4_NFS = [n for n, nf in CATALOG.items() if "bmv2" in nf.programs]
ROUTER_MAC, NEXT_HOP_MAC, HOST_MAC = "02:00:00:00:0d:01", "02:00:00:00:0d:02", "02:00:00:00:0d:03"
EF = 46   # the DSCP prio puts in level 0
PRIO_FLOW = ("10.0.9.1", "10.0.2.9", 4000, 4001, 17)   # prio's flow_levels entry: level 1
BURST = 24
BMV2_QUEUE_DEPTH = 64   # simple_switch's default, per priority queue


@pytest.fixture(scope="module")
def p4sw():
    with namespace("p4d", [Veth("p4a", "p4b"), Veth("p4c", "p4d")], lo_up=True, ipv6=False) as ns:
        name = ns.name
        sh(name, f"ip link set p4a address {ROUTER_MAC}")   # the frames' destination: nfrouter routes only its own
        ctl = Controller()
        ctl.add_node(Node(name, ns.path, target="bmv2", kernel_slow_path=False))
        try:
            switch.start(ctl.scope, name, ["p4a", "p4c"], netns=ns.path)
            ctl.deploy(name, "nfrouter", ["p4a", "p4c"])
            for nf in ("cms", "precision", "prio"):
                ctl.deploy(name, nf, ["p4a"])
            forward = {"egress_port": "p4c", "dst_mac": NEXT_HOP_MAC, "src_mac": ROUTER_MAC}
            ctl.write(name, "nfrouter", [
                TableEntry("ipv4_routes", {"dst_addr": "10.0.2.0/24"}, "forward", forward),
                TableEntry("ipv6_routes", {"dst_addr": "2001:db8:2::/64"}, "forward", forward)])
            src, dst, sport, dport, proto = PRIO_FLOW
            ctl.write(name, "prio", [
                TableEntry("dscp_levels", {"dscp": EF}, "set_level", {"level": 0}),
                TableEntry("flow_levels", {"src_addr": src, "dst_addr": dst, "src_port": sport, "dst_port": dport,
                                           "proto": proto}, "set_level", {"level": 1})])
            yield ctl, name
        finally:
            try:
                for nf in ("prio", "precision", "cms", "nfrouter"):
                    ctl.remove(name, nf)
                ctl.forget_node(name)
            finally:
                switch.stop(ctl.scope, name)
    assert not switch.state_dir(ctl.scope, name).exists(), "the switch's sockets, logs and state went with it"


def frame(src, dst, sport, dport, proto=17, dscp=0, payload=b"p4d") -> bytes:
    ip = IPv6(src=src, dst=dst, tc=dscp << 2) if ":" in src else IP(src=src, dst=dst, tos=dscp << 2)
    l4 = UDP(sport=sport, dport=dport) if proto == 17 else TCP(sport=sport, dport=dport)
    return bytes(Ether(src=HOST_MAC, dst=ROUTER_MAC) / ip / l4 / payload).ljust(60, b"\0")


def expected_out(raw: bytes) -> bytes:
    """What leaves p4c for a frame sent into p4a: routed with this switch's MACs, the padding
    frame() added trimmed."""
    padding = Ether(raw).getlayer(Padding)
    return routed(raw[:len(raw) - len(padding)] if padding is not None else raw, ROUTER_MAC, NEXT_HOP_MAC)


def through(ctl, name, frames: list[bytes]) -> list[bytes]:
    """Send the frames into the switch's p4a; return what leaves its p4c. BMv2 reads a port
    through libpcap, whose ring holds 32 frames here: a longer back-to-back burst loses the
    rest, so the frames go in bursts of BURST, one sender process (a pause) apart."""
    node = ctl.node(name)
    bursts = [frames[i:i + BURST] for i in range(0, len(frames), BURST)]
    capture = traffic.Capture(node, "p4d", "", timeout=2.0 + len(bursts), count=len(frames))
    for burst in bursts:
        traffic.send(node, "p4b", burst)
    return capture.frames()


def flows_of(frames: list[bytes]) -> Counter:
    out = Counter()
    for raw in frames:
        f = Ether(raw)
        ip = f[IP] if IP in f else f[IPv6]
        out[(ip.src, ip.dst, ip.sport, ip.dport, ip.proto if IP in f else ip.nh)] += 1
    return out


def test_every_packet_leaves_once_with_the_routers_bytes(p4sw):
    """cms, precision (whose takeovers resubmit the packet) and prio pass every packet on to
    the router exactly once, unchanged: what leaves is the router's output, byte for byte."""
    ctl, name = p4sw
    frames = ([frame("10.0.1.1", "10.0.2.1", 1000, 80)] * 20 + [frame("2001:db8:1::1", "2001:db8:2::1", 5, 6, 6)] * 5
              + [frame("10.0.1.2", "10.0.2.2", 7, 8, dscp=EF, payload=b"")]   # padded to 60 bytes
              + [frame("10.0.1.%d" % i, "10.0.2.3", 2000 + i, 53) for i in range(10)])
    before = ctl.read_stat(name, "nfrouter", "verdicts")["forwarded"]
    out = through(ctl, name, frames)
    assert Counter(out) == Counter(expected_out(f) for f in frames)
    assert ctl.read_stat(name, "nfrouter", "verdicts")["forwarded"] - before == len(frames)


def test_cms_counts_each_packet_once_per_row_and_never_under(p4sw):
    ctl, name = p4sw
    frames = ([frame("10.0.3.1", "10.0.2.4", 1, 2)] * 30 + [frame("2001:db8:3::1", "2001:db8:2::4", 3, 4, 6)] * 12
              + [frame("10.0.3.%d" % i, "10.0.2.5", 100 + i, 53) for i in range(2, 20)])
    before = ctl.read_registers(name, "cms", "sketch")["packets"]
    through(ctl, name, frames)
    after = ctl.read_registers(name, "cms", "sketch")
    bank = int(ctl.read_registers(name, "cms", "control")["active_bank"][0]) & 1
    grown = after["packets"].astype(int) - before.astype(int)
    assert list(grown[bank].sum(axis=1)) == [len(frames)] * grown.shape[1]   # every row counts every packet
    assert grown[1 - bank].sum() == 0
    cand = ctl.read_registers(name, "cms", "candidates")
    held = {(ip_str(int(s)), ip_str(int(d)), int(sp), int(dp), int(pr)): int(p)
            for s, d, sp, dp, pr, p in zip(*(cand[f][bank] for f in ("src_addr", "dst_addr", "src_port", "dst_port",
                                                                      "proto", "packets"))) if p}
    for flow, sent in flows_of(frames).items():
        if sent > 1:   # the heavy flows hold their slots, with estimates that never under-count
            assert held.get(flow, 0) >= sent, f"{flow}: sent {sent}, candidate estimate {held.get(flow)}"


def test_flow_keys_are_those_of_the_xdp_programs(p4sw):
    """The parser reaches the ports behind IPv4 options and up to four IPv6 extension headers,
    keys later fragments without ports, and leaves a segment cut before its ports uncounted,
    as ebpf/include/flowkey.h does."""
    ctl, name = p4sw
    eth = Ether(src=HOST_MAC, dst=ROUTER_MAC)
    v6 = dict(src="2001:db8:8::1", dst="2001:db8:8::2")
    cases = [
        (IP(src="10.0.8.1", dst="10.0.8.2", options=[IPOption_RR()]) / UDP(sport=11, dport=12), 11, 12, 17),
        (IP(src="10.0.8.3", dst="10.0.8.4", frag=10, proto=17) / (b"x" * 16), 0, 0, 17),
        (IP(src="10.0.8.5", dst="10.0.8.6") / ICMP(), 0, 0, 1),
        (IPv6(**v6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=13, dport=14), 13, 14, 17),
        (IPv6(**v6) / IPv6ExtHdrFragment(offset=0, m=1) / TCP(sport=15, dport=16), 15, 16, 6),
        (IPv6(**v6) / IPv6ExtHdrFragment(offset=5, nh=17) / (b"y" * 16), 0, 0, 17),
        (IPv6(**v6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
         / UDP(sport=19, dport=20), 19, 20, 17),
        (IPv6(**v6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
         / IPv6ExtHdrDestOpt() / UDP(sport=21, dport=22), 0, 0, 60),   # a fifth header: keyed by it
    ]
    frames = [bytes(eth / pkt) for pkt, *_ in cases]
    cut = bytes(eth / IP(src="10.0.8.7", dst="10.0.8.8") / TCP(sport=1, dport=2))[:14 + 20 + 2]
    ctl.reset_registers(name, "cms", "candidates")   # earlier tests' heavier flows would hold the slots
    before = ctl.read_registers(name, "cms", "sketch")["packets"].astype(int)
    through(ctl, name, frames + [cut])
    grown = ctl.read_registers(name, "cms", "sketch")["packets"].astype(int) - before
    assert grown[0, 0].sum() == len(frames)   # the cut segment is not counted
    cand = ctl.read_registers(name, "cms", "candidates")
    held = {(ip_str(int(s)), ip_str(int(d)), int(sp), int(dp), int(pr))
            for s, d, sp, dp, pr, p in zip(*(cand[f][0] for f in ("src_addr", "dst_addr", "src_port", "dst_port",
                                                                   "proto", "packets"))) if p}
    for (pkt, sport, dport, proto), raw in zip(cases, frames):
        ip = Ether(raw)[IP] if IP in Ether(raw) else Ether(raw)[IPv6]
        assert (ip.src, ip.dst, sport, dport, proto) in held, pkt.summary()


def test_cms_counts_in_the_bank_the_controller_makes_active(p4sw):
    ctl, name = p4sw
    ctl.write_registers(name, "cms", "control", 0, {"active_bank": 1})
    try:
        before = ctl.read_registers(name, "cms", "sketch")["packets"].astype(int)
        through(ctl, name, [frame("10.0.4.1", "10.0.2.6", 9, 9)] * 7)
        grown = ctl.read_registers(name, "cms", "sketch")["packets"].astype(int) - before
        assert grown[1].sum(axis=1).tolist() == [7] * grown.shape[1] and grown[0].sum() == 0
    finally:
        ctl.write_registers(name, "cms", "control", 0, {"active_bank": 0})


def test_precision_tracks_flows_in_free_slots_exactly(p4sw):
    """With free slots, a new flow's first packet takes a slot over (probability 1/(0+1)) on its
    resubmitted pass, and every later packet counts there."""
    ctl, name = p4sw
    ctl.reset_registers(name, "precision", "flows")
    frames = ([frame("10.0.5.1", "10.0.2.7", 11, 12)] * 25 + [frame("2001:db8:5::1", "2001:db8:2::7", 13, 14, 6)] * 10
              + [frame("10.0.5.2", "10.0.2.8", 15, 16)] * 3)
    through(ctl, name, frames)
    reg = ctl.read_registers(name, "precision", "flows")
    tracked = Counter()
    for s, d, sp, dp, pr, p in zip(*(reg[f].ravel() for f in ("src_addr", "dst_addr", "src_port", "dst_port",
                                                               "proto", "packets"))):
        if p:
            tracked[(ip_str(int(s)), ip_str(int(d)), int(sp), int(dp), int(pr))] += int(p)
    assert tracked == flows_of(frames)


def test_prio_levels_by_flow_then_dscp_then_lowest(p4sw):
    ctl, name = p4sw
    ctl.reset_registers(name, "prio", "levels")
    frames = ([frame(*PRIO_FLOW[:4], dscp=EF)] * 4          # the flow entry wins over its DSCP
              + [frame("10.0.6.1", "10.0.2.10", 1, 1, dscp=EF)] * 6 + [frame("10.0.6.2", "10.0.2.11", 1, 1)] * 3)
    through(ctl, name, frames)
    levels = ctl.read_registers(name, "prio", "levels")
    assert levels["packets"].tolist() == [6, 4, 3]
    assert levels["bytes"].tolist() == [6 * 60, 4 * 60, 3 * 60]
    by_table = {t: sum(c.packets for c in ctl.read_counters(name, "prio", t)) for t in ("dscp_levels", "flow_levels")}
    assert by_table["flow_levels"] >= 4 and by_table["dscp_levels"] >= 6


def test_prio_level_beyond_levels_is_refused(p4sw):
    """The catalog bounds level by the NF's `levels` parameter; BMv2 checks it as XDP does."""
    ctl, name = p4sw
    levels = ctl.deployment(name, "prio").params["levels"]
    with pytest.raises(EntryError, match=rf"level: {levels} is out of range.*below {levels} \(levels\)"):
        ctl.write(name, "prio", [TableEntry("dscp_levels", {"dscp": 8}, "set_level", {"level": levels})])
    assert not [e for e in ctl.read(name, "prio", "dscp_levels") if e.match["dscp"] == 8]


def test_level_zero_rides_the_queue_bmv2_serves_first(p4sw):
    """Level L is BMv2 priority queue levels-1-L: BMv2 1.15 serves its highest queue first.
    Closing that queue of the egress port (depth 0) removes exactly the level-0 packets."""
    ctl, name = p4sw
    sw = switch.info(ctl.scope, name)
    first = ctl.deployment(name, "prio").params["levels"] - 1
    level0 = [frame("10.0.7.1", "10.0.2.12", 1, 1, dscp=EF, payload=b"level0")] * 5
    lowest = [frame("10.0.7.2", "10.0.2.13", 1, 1, payload=b"lowest")] * 5
    thrift = ThriftClient(sw.netns, sw.thrift_port, f"BMv2 switch of {name}")
    try:
        thrift.set_queue_depth(sw.ports["p4c"], first, 0)
        out = through(ctl, name, level0 + lowest)
    finally:
        thrift.set_queue_depth(sw.ports["p4c"], first, BMV2_QUEUE_DEPTH)
        thrift.close()
    assert Counter(out) == Counter(expected_out(f) for f in lowest)


EXTREMES = {"min": lambda p: p.min, "max": lambda p: p.max}


@pytest.mark.parametrize("extreme", EXTREMES)
@pytest.mark.parametrize("program", P4_NFS + ["composed"])
def test_program_compiles_at_parameter_extremes(program, extreme):
    from controller.p4.build import compile_p4, find_tool

    if not find_tool("p4c"):
        pytest.skip("p4c not found on PATH or in /opt/p4/bin")
    pick = EXTREMES[extreme]
    if program == "composed":
        nfs = [nf for nf in CATALOG.values() if composed.runs(nf)]
        source = "p4/innet.p4"
    else:
        nfs, source = [CATALOG[program]], CATALOG[program].programs["bmv2"]["source"]
    defines = {p.bmv2["define"]: pick(p) for nf in nfs for p in nf.parameters.values() if "define" in p.bmv2}
    build = compile_p4(source, {**defines, "CPU_PORT": 510} if extreme == "max" else defines)
    assert build.json.exists() and build.p4info.exists()
