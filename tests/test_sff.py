"""Service chains on XDP: the forwarder sff (ebpf/sff.bpf.c, nfs/sff.yaml) and NF instances behind it.

Three throwaway namespaces make a line h1 - r1a [r1] r1b - r2a [r2] r2b - h2: the hosts h1 and h2
share one namespace; each router runs sff in front of nfrouter on both its interfaces, with
routes h1 <-> h2. The hosts' interfaces run rxcount (a veth takes XDP-redirected frames only
when its peer runs an XDP program). The router-to-router link carries NSH, so its MTU is 1508;
the hosts' links keep 1500. IPv6 is off in every namespace, so every frame is one a test sent.
Real frames built with scapy go through the real programs; scapy.contrib.nsh decodes NSH.
"""
import ipaddress
import multiprocessing
import os
import signal
import statistics

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from controller.bpf import libbpf
from controller.bpf.btf import Btf
from controller.bpf.build import compile_program
from controller.catalog import get_nf
from controller.dataplane import InstanceSpec
from controller.errors import TargetError, TopologyError
from controller.netns import netns
from controller.node import Node
from controller.scope import Scope
from controller.stats import Flow, flow_table
from controller.store import DataplaneRecords, Store
from controller.targets import chain
from controller.targets.chain import record_key
from controller.targets.xdp import XdpTarget, _map_type_ids
from frames import NSH, routed
from sffline import H1, H1_6, H2, H2_6, PORT, XDP_DROP, XDP_PASS, XDP_REDIRECT, Line, classify, hop
from testbed import traffic
from testbed.scratch import sh

pytestmark = pytest.mark.needs_root


def install_chain(t: Line) -> None:
    """UDP h1 -> h2: SPI 1, cms then precision on r1, decapsulated at r2. UDP h2 -> h1: SPI 2,
    classified at r2, precision on r1, decapsulated there."""
    t.behind(t.r1, "cms", 0)
    t.behind(t.r1, "precision", 1)
    m = t.macs
    t.write(t.r1, classify(1),
            hop(1, 255, "to_nf", slot=0), hop(1, 254, "to_nf", slot=1),
            hop(1, 253, "forward", egress_port="r1b", dst_mac=m["r2a"], src_mac=m["r1b"]),
            hop(2, 255, "to_nf", slot=1), hop(2, 254, "decap"))
    t.write(t.r2, hop(1, 253, "decap"), classify(2, src=H2, dst=H1),
            hop(2, 255, "forward", egress_port="r2a", dst_mac=m["r1b"], src_mac=m["r2a"]))


def flows(n: int, reverse: bool = False) -> list[tuple[Flow, int]]:
    src, dst = (H2, H1) if reverse else (H1, H2)
    return [(Flow.of(src, dst, 3000 + i, PORT, 17), 3000 + i) for i in range(n)]


# ---- the ingress: classify and encapsulate ----------------------------------------------------
def test_the_ingress_classifies_most_specific_first_and_encapsulates(line):
    """r2 runs nfrouter alone here, which hands NSH frames to its kernel: a capture on r2a sees
    what r1 sent. Each rule's SPI tells which one matched (13: a server port, any client port); SI 255 (254 behind one NF), TTL 62
    (63, less the hop to r2); inside, the original IP packet byte for byte."""
    t, m = line, line.macs
    t.ctl.remove(t.r2, "sff")
    t.behind(t.r1, "cms", 0)
    out = {"egress_port": "r1b", "dst_mac": m["r2a"], "src_mac": m["r1b"]}
    t.write(t.r1, classify(10, sport=1000, dport=PORT), classify(11), classify(12, proto=0),
            classify(13, src=H1_6, dst=H2_6, dport=PORT), classify(14, sport=1004, dport=PORT),
            *(hop(spi, 255, "forward", **out) for spi in (10, 11, 12, 13)),
            hop(14, 255, "to_nf", slot=0), hop(14, 254, "forward", **out))
    frames = {10: t.frame(1000), 11: t.frame(1001), 12: t.frame(1002, proto="tcp"), 13: t.frame(1003, v6=True),
              14: t.frame(1004)}
    cap = traffic.Capture(t.ctl.node(t.r2), "r2a", "ether proto 0x894f", timeout=2.0, count=len(frames))
    traffic.send(t.ctl.node(t.hosts), "h1", list(frames.values()))
    got = {Ether(f)[NSH].spi: Ether(f) for f in cap.frames()}
    assert sorted(got) == sorted(frames), "one NSH frame per packet, each with its rule's SPI"
    for spi, sent in frames.items():
        f = got[spi]
        assert (f.src, f.dst, f.type) == (m["r1b"], m["r2a"], 0x894F)
        nsh = f[NSH]
        assert (nsh.ver, nsh.mdtype, nsh.length, nsh.ttl) == (0, 2, 2, 62)
        assert nsh.si == (254 if spi == 14 else 255)
        assert nsh.nextproto == (2 if spi == 13 else 1)
        assert bytes(nsh.payload) == sent[14:], "the original packet, untouched"
    assert t.counted(t.r1, "cms") == {Flow.of(H1, H2, 1004, PORT, 17): 1}, "cms saw the packet of its SPI only"
    v = t.verdicts(t.r1)
    assert (v["classified"], v["to_nf"], v["forwarded"]) == (5, 1, 5)
    assert t.routed_plainly(t.r1) == 0, "no packet took the routed path"


# ---- a two-node chain -------------------------------------------------------------------------
def test_a_two_node_chain_runs_each_nf_once_and_delivers_the_original_packet(line):
    t = line
    install_chain(t)
    sent, by_flow = [], {}
    for flow, sport in flows(3):
        by_flow[flow] = 4
        sent += [t.frame(sport)] * 4
    got = t.send(sent)
    assert sorted(got) == sorted(t.delivered(f) for f in sent), \
        "h2 receives each packet as routed once (TTL, MACs), otherwise byte for byte"
    assert t.counted(t.r1, "cms") == by_flow and t.counted(t.r1, "precision") == by_flow, \
        "each NF counts the inner flow of every packet exactly once"
    n = len(sent)
    assert t.hops(t.r1) == {(1, 255): n, (1, 254): n, (1, 253): n, (2, 255): 0, (2, 254): 0}, \
        "SI falls by one per NF: 255 to cms, 254 to precision, 253 to r2"
    assert t.hops(t.r2) == {(1, 253): n, (2, 255): 0}
    v1, v2 = t.verdicts(t.r1), t.verdicts(t.r2)
    assert {k: c for k, c in v1.items() if c} == {"classified": n, "to_nf": 2 * n, "forwarded": n}
    assert {k: c for k, c in v2.items() if c} == {"decapsulated": n}
    assert (t.routed_plainly(t.r1), t.routed_plainly(t.r2)) == (0, n), "only the egress router routes them"


def test_the_reverse_path_has_its_own_spi(line):
    t = line
    install_chain(t)
    sent = [t.frame(sport, reverse=True) for _, sport in flows(2, reverse=True) for _ in range(3)]
    got = t.send(sent, reverse=True)
    assert sorted(got) == sorted(t.delivered(f, reverse=True) for f in sent)
    assert t.counted(t.r1, "precision") == {f: 3 for f, _ in flows(2, reverse=True)}
    assert t.counted(t.r1, "cms") == {}, "cms is not on the reverse path"
    assert t.hops(t.r2)[2, 255] == t.hops(t.r1)[2, 255] == t.hops(t.r1)[2, 254] == len(sent)
    assert t.verdicts(t.r2)["classified"] == t.verdicts(t.r1)["decapsulated"] == len(sent)


def test_unmatched_traffic_is_routed_plainly(line):
    t = line
    install_chain(t)
    sent = [t.frame(4000, proto="tcp"), t.frame(4001, proto="tcp")]   # the classifier takes UDP only
    got = t.send(sent)
    assert sorted(got) == sorted(routed(f, src_mac=t.macs["r2b"], dst_mac=t.macs["h2"], hops=2) for f in sent), \
        "routed by both routers, as without a chain"
    assert (t.routed_plainly(t.r1), t.routed_plainly(t.r2)) == (2, 2)
    assert t.verdicts(t.r1)["unclassified"] == t.verdicts(t.r2)["unclassified"] == 2
    assert t.counted(t.r1, "cms") == {} and sum(t.hops(t.r1).values()) == 0


def test_an_unknown_service_path_is_dropped_and_counted(line):
    t = line
    install_chain(t)
    inner = Ether(t.frame(5000))
    stray = [bytes(Ether(src=t.macs["h1"], dst=t.macs["r1a"], type=0x894F)
                   / NSH(mdtype=2, nextproto=1, spi=spi, si=si) / inner[IP]) for spi, si in ((1, 7), (99, 255))]
    assert t.send(stray, timeout=0.5) == []
    v = t.verdicts(t.r1)
    assert v["no_hop"] == 2 and v["forwarded"] == 0
    assert t.routed_plainly(t.r1) == 0, "an NSH frame never reaches the router"
    assert t.counted(t.r1, "cms") == {}


def test_a_packet_that_would_not_fit_with_its_nsh_is_dropped_and_counted(line):
    """1500 bytes of IP fit the 1508-byte router link with their NSH, not a 1500-byte one."""
    t = line
    install_chain(t)
    big = t.frame(6000, size=1500)
    assert t.send([big]) == [t.delivered(big)]
    sh(t.r1, "ip link set r1b mtu 1500")
    assert t.send([big], timeout=0.5) == []
    small = t.frame(6001, size=1492)
    assert t.send([small]) == [t.delivered(small)]
    assert t.verdicts(t.r1)["too_big"] == 1
    assert t.counted(t.r1, "cms")[Flow.of(H1, H2, 6000, PORT, 17)] == 2, \
        "the NFs before the forward saw it: the drop is at the egress"


# ---- outcomes, one frame at a time (BPF_PROG_TEST_RUN on r1's forwarder) ---------------------------
def test_outcomes_of_odd_frames(line):
    t, m = line, line.macs
    t.behind(t.r1, "cms", 0)
    t.write(t.r1, hop(7, 9, "to_nf", slot=3), hop(7, 0, "to_nf", slot=0),
            hop(8, 9, "forward", egress_port="r1b", dst_mac=m["r2a"], src_mac=m["r1b"]), hop(9, 9, "decap"))
    ip = IP(src=H1, dst=H2) / UDP(sport=1, dport=PORT)

    def nsh(spi, si=9, ttl=63, np=1, ver=0, length=None, payload=ip):
        return bytes(Ether(src=m["h1"], dst=m["r1a"], type=0x894F)
                     / NSH(ver=ver, ttl=ttl, length=length, mdtype=2, nextproto=np, spi=spi, si=si) / payload)

    inner_eth = Ether(src=m["h1"], dst=m["r1a"])

    cases = [
        ("empty NF slot", nsh(7), XDP_DROP, "no_nf"),
        ("to_nf at SI 0", nsh(7, si=0), XDP_DROP, "no_hop"),
        ("TTL 1 leaves as 0", nsh(8, ttl=1), XDP_DROP, "ttl_expired"),
        ("TTL 0 counts as 64", nsh(8, ttl=0), XDP_REDIRECT, "forwarded"),
        ("NSH version 1", nsh(8, ver=1), XDP_DROP, "malformed"),
        ("NSH length 1", nsh(8, length=1), XDP_DROP, "malformed"),
        ("NSH longer than the frame", nsh(8)[:20], XDP_DROP, "malformed"),
        ("decap of Ethernet", nsh(9, np=3, payload=inner_eth / ip), XDP_DROP, "malformed"),
        ("decap, then routed", nsh(9), XDP_REDIRECT, "decapsulated"),
        ("ARP", bytes(Ether(src=m["h1"], dst="ff:ff:ff:ff:ff:ff", type=0x0806) / (b"\0" * 28)), XDP_PASS, "not_ip"),
    ]
    fd = libbpf.get_pinned(str(t.pin(t.r1, "sff") / chain.PROG_PIN))
    try:
        with netns(t.ctl.node(t.r1).netns):   # egress ports are the node's ifindexes
            for what, frame, action, outcome in cases:
                before = t.verdicts(t.r1)
                res = libbpf.test_run(fd, frame)
                after = t.verdicts(t.r1)
                assert res.retval == action, what
                assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {outcome: 1}, what
                if outcome == "forwarded":
                    assert Ether(res.data_out)[NSH].ttl == 63, what
    finally:
        os.close(fd)


def test_nfs_key_an_nsh_frame_by_its_inner_packet():
    """cms and precision, unattached, on NSH frames (MD type 2, with and without a context header)
    and on the same packets plain: one flow, counted from both; a broken NSH is not counted."""
    flow = Flow.of(H1, H2, 1234, PORT, 17)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    plain = eth / IP(src=H1, dst=H2) / UDP(sport=1234, dport=PORT) / b"x"
    tlv = bytes.fromhex("000102040a0b0c0d")   # class 1, type 2, 4 bytes of metadata
    raw = bytes(eth.copy() / NSH(mdtype=2, length=4, nextproto=1, spi=1, si=254)) + tlv + bytes(plain[IP])
    frames = [bytes(plain), bytes(eth.copy() / NSH(mdtype=2, nextproto=1, spi=1, si=254) / plain[IP]), raw]
    broken = [raw[:14] + bytes([raw[14] | 0x40]) + raw[15:],   # NSH version 1
              raw[:40]]                                         # cut inside the inner IP header
    for name in ("cms", "precision"):
        nf = get_nf(name)
        source = compile_program(nf.programs["xdp"]["source"])
        table = nf.stat(flow_table(nf)).xdp["map"]
        with libbpf.BpfObject(str(source)).load() as obj:
            for f in frames + broken:
                assert libbpf.test_run(obj.programs[name], f).retval == XDP_PASS
            layout = Btf(source).members(_map_type_ids(source, table)[1])
            assert _flows_in(obj.maps[table], layout) == {flow: 3}, name


def _flows_in(flow_map: libbpf.BpfMap, layout: dict) -> dict[Flow, int]:
    """Flow -> largest packet count in a cms candidates or precision key map, its cells read by
    the field positions of the program's BTF."""
    def field(cell: bytes, name: str) -> bytes:
        return cell[layout[name].offset:layout[name].offset + layout[name].size]

    found = {}
    for _, cell in flow_map.items():
        if field(cell, "src_addr") != bytes(16):
            flow = Flow.of(str(ipaddress.IPv6Address(field(cell, "src_addr")).ipv4_mapped),
                           str(ipaddress.IPv6Address(field(cell, "dst_addr")).ipv4_mapped),
                           int.from_bytes(field(cell, "src_port"), "little"),
                           int.from_bytes(field(cell, "dst_port"), "little"), field(cell, "proto")[0])
            found[flow] = max(found.get(flow, 0), int.from_bytes(field(cell, "packets"), "little"))
    return found


# ---- instances behind a forwarder ---------------------------------------------------------------
def test_an_instance_behind_the_forwarder_lives_in_its_slot(line):
    t = line
    d = t.behind(t.r1, "cms", 2)
    assert (d.behind, d.interfaces, d.healthy) == (("sff", 2), (), True)
    assert t.slots(t.r1) == {2: t.prog_id(t.r1, "cms")}
    assert chain.read_next(t.pin(t.r1, "cms")) == t.prog_id(t.r1, "sff"), "cms hands packets back to sff"
    listed = {d.instance: d for d in t.ctl.deployments(t.r1)}
    assert listed["cms"].behind == ("sff", 2) and listed["cms"].healthy

    assert t.behind(t.r1, "cms", 2).healthy, "a repeat is a no-op"
    chain.write_slot(t.pin(t.r1, "sff"), "sfc_nfs", 2, None)
    assert t.problem(t.r1, "cms") == "slot 2 of sff's sfc_nfs is empty"
    assert t.behind(t.r1, "cms", 2).healthy and t.slots(t.r1) == {2: t.prog_id(t.r1, "cms")}, "applied again: repaired"

    old_id, old_pin = t.prog_id(t.r1, "cms"), t.pin(t.r1, "cms")
    d = t.behind(t.r1, "cms", 2, {"columns": 512})
    assert d.cleared == ("cms",) and d.healthy
    assert t.prog_id(t.r1, "cms") != old_id and not old_pin.exists()
    assert t.slots(t.r1) == {2: t.prog_id(t.r1, "cms")}, "the new generation took the slot"
    assert chain.read_next(t.pin(t.r1, "cms")) == t.prog_id(t.r1, "sff")

    assert t.ctl.remove(t.r1, "cms")
    assert t.slots(t.r1) == {} and t.gone(t.r1, "cms")


def test_the_forwarder_takes_its_nfs_along(line):
    """A new generation of sff (other parameters) gets its NFs in its slots, and they hand
    packets back to it; removed, it leaves them waiting, and deployed again, it takes them back."""
    t = line
    install_chain(t)
    t.ctl.deploy(t.r1, "sff", ["r1a", "r1b"], {"max_paths": 2048})   # the controller writes its entries again
    assert t.slots(t.r1) == {0: t.prog_id(t.r1, "cms"), 1: t.prog_id(t.r1, "precision")}
    for nf in ("cms", "precision"):
        assert chain.read_next(t.pin(t.r1, nf)) == t.prog_id(t.r1, "sff") and t.problem(t.r1, nf) is None
    sent = [t.frame(sport) for _, sport in flows(2)]
    assert sorted(t.send(sent)) == sorted(t.delivered(f) for f in sent)
    assert t.counted(t.r1, "cms") == {f: 1 for f, _ in flows(2)}

    assert t.ctl.remove(t.r1, "sff")
    assert t.problem(t.r1, "cms") == "its forwarder sff is not deployed"
    t.ctl.deploy(t.r1, "sff", ["r1a", "r1b"])
    assert t.problem(t.r1, "cms") is None and t.problem(t.r1, "precision") is None
    assert t.slots(t.r1) == {0: t.prog_id(t.r1, "cms"), 1: t.prog_id(t.r1, "precision")}


def _deploy_behind_killed_before_its_record(scope_name: str, node: Node, params: dict) -> None:
    """Deploy cms behind sff in slot 0 in this (forked) process, which SIGKILLs itself where the
    deploy's one transaction would record it: after the program went into the slot."""
    scope = Scope(scope_name)
    target = XdpTarget(scope, DataplaneRecords(Store(scope.db_path)))
    target._put = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
    target.deploy(node, "cms", get_nf("cms"), [], params, behind=("sff", 0))


def test_a_deploy_behind_the_forwarder_killed_before_its_record_is_rolled_back(line):
    t = line
    node, target = t.ctl.node(t.r1), t.ctl.target("xdp")

    def killed(params: dict) -> int:
        proc = multiprocessing.get_context("fork").Process(target=_deploy_behind_killed_before_its_record,
                                                           args=(t.ctl.scope.name, node, params))
        proc.start()
        proc.join(timeout=120)
        return proc.exitcode

    assert killed({}) == -signal.SIGKILL
    assert list(t.slots(t.r1)) == [0] and t.ctl.records.get(t.r1, record_key("cms")) is None, \
        "killed with cms in the slot and no record of it"
    assert target.prune(node, {"sff", "nfrouter"}) == ["pins cms@1"]
    assert t.slots(t.r1) == {}, "the slot emptied before the stray program's pins went"

    t.behind(t.r1, "cms", 0)
    old = t.prog_id(t.r1, "cms")
    assert killed({"columns": 512}) == -signal.SIGKILL
    assert t.slots(t.r1) != {0: old}, "killed with the new generation in the slot"
    assert target.prune(node, {"sff", "nfrouter", "cms"}) == ["pins cms@2"]
    assert t.slots(t.r1) == {0: old} and t.problem(t.r1, "cms") is None, "the recorded generation is back"


def test_what_cannot_run_behind_a_forwarder_is_refused(line):
    t = line
    t.behind(t.r1, "cms", 0)
    t.ctl.deploy(t.r1, "precision", ["r1a", "r1b"])   # on the hook, in front of sff
    refused = [   # (instance, NF, behind, interfaces): error, message
        (("cms2", "cms", ("nosuch", 0), ()), TargetError, "cms2 cannot run behind nosuch on .*: nosuch is not"),
        (("cms2", "cms", ("nfrouter", 0), ()), TargetError, "nfrouter runs nfrouter, which has no NF slots"),
        (("cms2", "cms", ("sff", 8), ()), TargetError, "slot 8 of sff on .* does not exist: it has 8 NF slots"),
        (("cms2", "cms", ("sff", 0), ()), TargetError, "slot 0 of sff on .* holds cms"),
        (("sff", "sff", ("sff", 1), ()), TargetError, "sff cannot run behind itself"),
        (("cms2", "cms", ("sff", 1), ("r1a",)), TopologyError, "cms2 runs behind forwarder sff, so it takes no"),
        (("precision", "precision", ("sff", 1), ()), TargetError, "precision on .* runs on r1a, r1b; it cannot move"),
        (("cms", "cms", ("sff", 1), ()), TargetError, "cms on .* runs behind sff in slot 0; it cannot move in place"),
        (("router2", "nfrouter", ("sff", 1), ()), TargetError,
         "nfrouter cannot run behind a forwarder: only XDP NFs with `chain: pass`"),
    ]
    for (instance, nf, behind, ifaces), error, message in refused:
        with pytest.raises(error, match=message):
            t.ctl.plane(t.r1).apply(InstanceSpec(instance, nf, "xdp", ifaces, {}, behind=behind))
    assert t.gone(t.r1, "cms2") and t.gone(t.r1, "router2")
    assert t.slots(t.r1) == {0: t.prog_id(t.r1, "cms")}
    assert t.problem(t.r1, "cms") is None and t.problem(t.r1, "precision") is None


# ---- per-packet cost ----------------------------------------------------------------------------
def test_per_packet_cost(line):
    """BPF_PROG_TEST_RUN ns/packet on r1's deployed programs (in its namespace, so ports and MTUs
    are its own), one run per call (classify and decap change the frame), median of CALLS calls;
    printed. Each case must take the path it is named after."""
    calls = 2000
    t, m = line, line.macs
    install_chain(t)
    out = {"egress_port": "r1b", "dst_mac": m["r2a"], "src_mac": m["r1b"]}
    t.write(t.r1, classify(20, sport=5000, dport=PORT), hop(20, 255, "forward", **out),
            hop(21, 9, "forward", **out), hop(22, 9, "decap"))

    def nsh(spi: int) -> bytes:
        return bytes(Ether(src=m["h1"], dst=m["r1a"], type=0x894F) / NSH(mdtype=2, nextproto=1, spi=spi, si=9)
                     / IP(src=H1, dst=H2) / UDP(sport=1, dport=PORT) / (b"x" * 14))

    plain = t.frame(5001, proto="tcp", size=50)
    cases = [("empty program (rxcount): pass", "rxcount", plain, XDP_PASS),
             ("nfrouter alone: route", "nfrouter", plain, XDP_REDIRECT),
             ("sff miss, then nfrouter: route", "sff", plain, XDP_REDIRECT),
             ("sff: classify + encap + forward", "sff", t.frame(5000, size=50), XDP_REDIRECT),
             ("sff: forward an NSH frame", "sff", nsh(21), XDP_REDIRECT),
             ("sff: decap, then nfrouter: route", "sff", nsh(22), XDP_REDIRECT),
             ("sff: classify, cms, precision, forward", "sff", t.frame(5002, size=50), XDP_REDIRECT)]
    pins = {nf: t.pin(node, nf) / chain.PROG_PIN for node, nf in ((t.r1, "sff"), (t.r1, "nfrouter"),
                                                                   (t.hosts, "rxcount"))}
    fds = {nf: libbpf.get_pinned(str(p)) for nf, p in pins.items()}
    try:
        with netns(t.ctl.node(t.r1).netns):
            runners = {nf: libbpf.TestRunner(fd) for nf, fd in fds.items()}
            times = {what: [] for what, *_ in cases}
            for _ in range(calls):   # round-robin, so a burst elsewhere on the machine spreads over all
                for what, nf, frame, action in cases:
                    res = runners[nf].run(frame)
                    assert res.retval == action, what
                    times[what].append(res.duration_ns)
    finally:
        for fd in fds.values():
            os.close(fd)
    v = t.verdicts(t.r1)
    assert (v["unclassified"], v["classified"], v["to_nf"], v["forwarded"], v["decapsulated"]) == \
        (calls, 2 * calls, 2 * calls, 3 * calls, calls)
    print(f"\nBPF_PROG_TEST_RUN, 64-byte frames, median ns/packet over {calls} runs each:")
    for what, *_ in cases:
        print(f"  {what:<42} {statistics.median(times[what]):>6.0f}")
