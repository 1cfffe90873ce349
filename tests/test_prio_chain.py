"""prio as a hop of an XDP service chain: an instance deployed behind the forwarder sff runs
prio's chain program (nfs/prio.yaml programs.xdp.behind, ebpf/prio_chain.bpf.c), which
classifies the packet an NSH frame carries with prio's tables, counts it in prio's statistics
and hands the frame back to the forwarder.

The line tests run real frames from scapy through test_sff's line (h1 - r1 - r2 - h2, sff in
front of nfrouter on both routers); the last test runs the chain program alone under
BPF_PROG_TEST_RUN on plain and NSH frames.
"""
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from controller.bpf import libbpf
from controller.bpf.build import compile_program
from controller.catalog import get_nf
from controller.stats import Flow
from controller.tables import TableEntry
from controller.targets.chain import record_key
from frames import NSH
from sffline import H1, H1_6, H2, H2_6, PORT, XDP_PASS, classify, hop

pytestmark = pytest.mark.needs_root

NSH_BYTES = 8      # MD type 2 without context headers, as sff pushes it
PAYLOAD = b"p" * 64   # frames well above Ethernet's minimum: no padding changes their length
EF, AF11 = 46, 10  # DSCPs

RULES = [TableEntry("dscp_levels", {"dscp": EF}, "set_level", {"level": 0}),
         TableEntry("flow_levels", {"src_addr": H1, "dst_addr": H2, "src_port": 5001, "dst_port": PORT,
                                    "proto": 17}, "set_level", {"level": 1})]


def udp(t, dscp: int, sport: int) -> bytes:
    """h1 -> h2 as h1 sends it to r1, with DSCP `dscp`."""
    return bytes(Ether(src=t.macs["h1"], dst=t.macs["r1a"]) / IP(src=H1, dst=H2, tos=dscp << 2, ttl=64)
                 / UDP(sport=sport, dport=PORT) / PAYLOAD)


def traffic_by_level(t) -> dict[int, list[bytes]]:
    """Frames and the level RULES put them in: by DSCP, by flow over DSCP, by neither (the lowest)."""
    return {0: [udp(t, EF, 1000 + i) for i in range(3)],
            1: [udp(t, EF, 5001)] * 2,
            2: [udp(t, AF11, 1100 + i) for i in range(4)]}


def level_counts(t, node: str) -> tuple[list[int], list[int]]:
    regs = t.ctl.read_registers(node, "prio", "levels")
    return [int(p) for p in regs["packets"]], [int(b) for b in regs["bytes"]]


def rule_counts(t, node: str) -> dict[str, int]:
    return {c.entry.table: c.packets for table in ("dscp_levels", "flow_levels")
            for c in t.ctl.read_counters(node, "prio", table)}


def test_prio_behind_the_forwarder_classifies_the_inner_packet_and_hands_it_on(line):
    """SPI 1: prio on r1 (SI 255), then r2 (SI 254), which decapsulates. Each packet reaches h2
    as routed once, its DSCP untouched; prio counts it in the level its inner DSCP and 5-tuple
    pick, with the NSH frame's bytes; the forwarder lowers SI once for prio's hop."""
    t, m = line, line.macs
    d = t.ctl.deploy(t.r1, "prio", behind=("sff", 0))
    assert (d.behind, d.interfaces, d.healthy) == (("sff", 0), (), True)
    record = t.ctl.records.get(t.r1, record_key("prio"))
    assert record["hook"] == "xdp" and Path(record["object"]).name.startswith("prio_chain-"), \
        "behind the forwarder prio runs its chain program, not the tc classifier"
    assert t.slots(t.r1) == {0: t.prog_id(t.r1, "prio")}
    t.ctl.write(t.r1, "prio", RULES)
    t.write(t.r1, classify(1), hop(1, 255, "to_nf", slot=0),
            hop(1, 254, "forward", egress_port="r1b", dst_mac=m["r2a"], src_mac=m["r1b"]))
    t.write(t.r2, hop(1, 254, "decap"))

    by_level = traffic_by_level(t)
    sent = [f for frames in by_level.values() for f in frames]
    got = t.send(sent)
    assert sorted(got) == sorted(t.delivered(f) for f in sent), "every packet goes on, otherwise byte for byte"
    packets, bytes_ = level_counts(t, t.r1)
    assert packets == [len(by_level[lv]) for lv in range(3)], "the inner DSCP and 5-tuple pick the level"
    assert bytes_ == [sum(len(f) + NSH_BYTES for f in by_level[lv]) for lv in range(3)]
    assert rule_counts(t, t.r1) == {"dscp_levels": 3, "flow_levels": 2}, "the flow's entry beats its DSCP's"
    n = len(sent)
    assert t.hops(t.r1) == {(1, 255): n, (1, 254): n} and t.hops(t.r2) == {(1, 254): n}, \
        "SI falls by one for prio's hop: 255 to prio, 254 back from it and at r2"
    assert {k: c for k, c in t.verdicts(t.r1).items() if c} == {"classified": n, "to_nf": n, "forwarded": n}

    assert t.ctl.remove(t.r1, "prio")
    assert t.slots(t.r1) == {} and t.gone(t.r1, "prio")


def test_cms_precision_and_prio_each_count_every_packet_once(line):
    """The issue's chain cms -> precision -> prio on r1 (SI 255, 254, 253), out at 252 to r2."""
    t, m = line, line.macs
    for slot, nf in enumerate(("cms", "precision", "prio")):
        t.ctl.deploy(t.r1, nf, behind=("sff", slot))
    t.ctl.write(t.r1, "prio", RULES)
    t.write(t.r1, classify(1), *(hop(1, 255 - slot, "to_nf", slot=slot) for slot in range(3)),
            hop(1, 252, "forward", egress_port="r1b", dst_mac=m["r2a"], src_mac=m["r1b"]))
    t.write(t.r2, hop(1, 252, "decap"))

    by_level = traffic_by_level(t)
    sent = [f for frames in by_level.values() for f in frames]
    assert sorted(t.send(sent)) == sorted(t.delivered(f) for f in sent)
    by_flow = {}
    for f in sent:
        flow = Flow.of(H1, H2, Ether(f)[UDP].sport, PORT, 17)
        by_flow[flow] = by_flow.get(flow, 0) + 1
    assert t.counted(t.r1, "cms") == by_flow and t.counted(t.r1, "precision") == by_flow
    assert level_counts(t, t.r1)[0] == [len(by_level[lv]) for lv in range(3)]
    n = len(sent)
    assert t.hops(t.r1) == {(1, si): n for si in (255, 254, 253, 252)}, "one SI per NF, each NF once"
    assert t.verdicts(t.r1)["to_nf"] == 3 * n and t.routed_plainly(t.r2) == n


# ---- the chain program alone ------------------------------------------------------------------
def _level_entry(level: int, stats_slot: int) -> bytes:
    return struct.pack("=B3xI", level, stats_slot)   # struct level_entry (include/prio.h)


def _flow_key(src: str, dst: str, sport: int, dport: int, proto: int) -> bytes:
    """struct flow_key (include/flowkey.h): IPv4-mapped addresses, ports in host order."""
    def mapped(addr: str) -> bytes:
        return bytes(10) + b"\xff\xff" + bytes(int(x) for x in addr.split("."))
    return mapped(src) + mapped(dst) + struct.pack("=HHB3x", sport, dport, proto)


def _summed(m: libbpf.BpfMap, index: int) -> tuple[int, int]:
    """(packets, bytes) of a per-CPU struct counters cell, over every CPU."""
    cells = [struct.unpack("=QQ", v[:16]) for v in m.lookup_per_cpu(struct.pack("=I", index))]
    return sum(c[0] for c in cells), sum(c[1] for c in cells)


def test_the_chain_program_classifies_plain_and_nsh_frames_by_the_inner_packet():
    """Unattached (an empty chain_next: XDP_PASS), on the same packets plain and inside an NSH
    (with and without a context header, IPv4 and IPv6): one level each, whichever way they come;
    frames that are not IP or whose NSH is broken are handed on uncounted."""
    nf = get_nf("prio")
    program = nf.xdp_program(behind=True)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ef = IP(src=H1, dst=H2, tos=EF << 2) / UDP(sport=1000, dport=PORT) / PAYLOAD              # level 0
    flow = IP(src=H1, dst=H2, tos=EF << 2) / UDP(sport=5001, dport=PORT) / PAYLOAD            # level 1
    plain6 = IPv6(src=H1_6, dst=H2_6, tc=AF11 << 2) / UDP(sport=1, dport=PORT) / PAYLOAD      # level 2

    def nsh(inner, nextproto: int = 1) -> bytes:
        return bytes(eth.copy() / NSH(mdtype=2, nextproto=nextproto, spi=1, si=254) / inner)

    tlv = bytes.fromhex("000102040a0b0c0d")   # one context header: class 1, type 2, 4 bytes
    with_tlv = bytes(eth.copy() / NSH(mdtype=2, length=4, nextproto=1, spi=1, si=254)) + tlv + bytes(ef)
    by_level = {0: [bytes(eth / ef), nsh(ef), with_tlv],
                1: [bytes(eth / flow), nsh(flow)],
                2: [bytes(eth / plain6), nsh(plain6, nextproto=2)]}
    uncounted = [with_tlv[:14] + bytes([with_tlv[14] | 0x40]) + with_tlv[15:],   # NSH version 1
                 with_tlv[:40],                                                    # cut in the inner header
                 bytes(eth.copy() / NSH(mdtype=2, nextproto=3, spi=1, si=254) / ef)]  # next protocol Ethernet
    with libbpf.BpfObject(str(compile_program(program["source"]))).load() as obj:
        obj.maps["dscp_levels"].update(bytes([EF]), _level_entry(0, 0))
        obj.maps["flow_levels"].update(_flow_key(H1, H2, 5001, PORT, 17), _level_entry(1, 1))
        for f in [f for frames in by_level.values() for f in frames] + uncounted:
            res = libbpf.test_run(obj.programs[program["entry"]], f)
            assert (res.retval, res.data_out) == (XDP_PASS, f), "every frame goes on unchanged"
        for level, frames in by_level.items():
            assert _summed(obj.maps["level_stats"], level) == (len(frames), sum(map(len, frames))), f"level {level}"
        assert _summed(obj.maps["rule_stats"], 0)[0] == 3 and _summed(obj.maps["rule_stats"], 1)[0] == 2, \
            "the DSCP entry counts its three packets, the flow entry (over the same DSCP) its two"
