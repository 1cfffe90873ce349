"""A three-NF chain (cms -> precision -> prio) on diamond, frame by frame on every link.

diamond's links carry 100 Mbit/s through link emulators (testbed.linkemu), whose bridges a
capture can watch. The chain's descriptor (Smart-Orchestrator format with innet's
network_functions) names no router: placement takes the least-delay path r1 - r2 - r4 (1 ms
links against the r3 branch's 2 ms) and spreads the NFs over it, one per router; the way back
runs through the cms alone. Twice: every router on XDP, and r2 a BMv2 switch (the chain then
crosses XDP - BMv2 - XDP; it stays on r2's branch, 2 ms of links and the switch beating 4 ms).
"""
from __future__ import annotations

import copy
import json
import time

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from controller.stats import read_flows
from controller.topology import load_topology, parse_topology
from frames import NSH, NSH_NEXT_IPV4, on_the_wire, tap
from running import chain_service, running_testbed
from testbed import traffic

pytestmark = pytest.mark.testbed
SERVICE = "diamond-chain"
NFS = [{"nf_ref": "sketch", "type": "cms"}, {"nf_ref": "hh", "type": "precision"}, {"nf_ref": "queues", "type": "prio"}]
DESCRIPTOR = {
    "applications": [{"application_name": "app", "microservices": [
        {"microservice_name": "src", "ns_ref": "app_a"}, {"microservice_name": "dst", "ns_ref": "app_b"}]}],
    "net_services": [{"ns_name": SERVICE, "network_functions": NFS, "forwarding_graphs": [
        {"graph_name": "to_dst", "links": [{"id": "to_dst", "connection_points": [
            {"microservice_ref": "app_a:1"}, *({"nf_ref": nf["nf_ref"]} for nf in NFS),
            {"microservice_ref": "app_b:1"}]}]},
        {"graph_name": "to_src", "links": [{"id": "to_src", "connection_points": [
            {"microservice_ref": "app_b:1"}, {"nf_ref": "sketch"}, {"microservice_ref": "app_a:1"}]}]}]}]}
BIND = {"src": "h1", "dst": "h2"}


def diamond(r2_target: str):
    doc = copy.deepcopy(load_topology("diamond").to_doc())
    doc["nodes"]["r2"]["target"] = r2_target
    return parse_topology(doc, "diamond")


@pytest.fixture(scope="module", params=["xdp", "bmv2"], ids=["xdp", "r2-bmv2"])
def testbed(request):
    with running_testbed(diamond(request.param)) as tb:
        yield tb


@pytest.fixture
def chains(testbed):
    with chain_service(testbed, SERVICE) as service:
        yield service


def iface(tb, node: str, towards: str):
    return tb.topo.interface_towards(node, towards)


def pings(tb, count: int, first_seq: int, reverse: bool = False) -> list[bytes]:
    """ICMP echo requests h1 -> h2 (reverse: h2 -> h1) as the sending host puts them on its link."""
    src, dst = ("h2", "h1") if reverse else ("h1", "h2")
    out, back = iface(tb, src, "r4" if reverse else "r1"), iface(tb, dst, "r1" if reverse else "r4")
    return [bytes(Ether(src=out.mac, dst=out.peer.mac) / IP(src=str(out.ipv4.ip), dst=str(back.ipv4.ip), ttl=64)
                  / ICMP(id=0x1ee7, seq=first_seq + i) / b"diamond chain") for i in range(count)]


def send_paced(tb, host: str, frames: list[bytes]) -> None:
    """One at a time: a BMv2 switch's libpcap ring holds some tens of frames, and a PRECISION
    takeover on BMv2 is written by the packet's next pass (a packet that overtakes it counts as new)."""
    towards = "r1" if host == "h1" else "r4"
    for frame in frames:
        traffic.send(tb.node(host), iface(tb, host, towards).name, [frame])


def test_the_chain_takes_the_least_delay_branch_one_nf_per_router(testbed, chains):
    p = chains.deploy(DESCRIPTOR, bind=BIND)
    paths = {x.graph: x for x in p.paths}
    assert paths["to_dst"].routers == ["r1", "r2", "r4"] and paths["to_src"].routers == ["r4", "r2", "r1"]
    assert [(i.nf, i.node) for i in p.instances] == [("cms", "r1"), ("precision", "r2"), ("prio", "r4")]


def test_nsh_frames_on_every_link_of_both_paths_and_nothing_on_the_other_branch(testbed, chains):
    p = chains.deploy(DESCRIPTOR, bind=BIND)
    paths = {x.graph: x for x in p.paths}
    assert on_the_wire(paths["to_dst"]) == [("r1", "r2", 254, 62), ("r2", "r4", 253, 61)]
    assert on_the_wire(paths["to_src"]) == [("r4", "r2", 255, 62), ("r2", "r1", 255, 61)]
    sent = {"to_dst": pings(testbed, 3, 100), "to_src": pings(testbed, 2, 200, reverse=True)}
    captures = {}
    for graph, path in paths.items():
        for sender, receiver, si, ttl in on_the_wire(path):
            emulator, port = tap(testbed, sender, receiver)
            bpf = f"ether proto 0x894f and ether src {iface(testbed, sender, receiver).mac}"
            captures[(graph, sender, receiver, si, ttl)] = traffic.Capture(testbed.node(emulator), port, bpf,
                                                                           timeout=6.0)
    other_branch = {pair: traffic.Capture(testbed.node(tap(testbed, *pair)[0]), tap(testbed, *pair)[1], "ip or ether "
                                          "proto 0x894f", timeout=6.0) for pair in (("r1", "r3"), ("r3", "r4"))}
    send_paced(testbed, "h1", sent["to_dst"])
    send_paced(testbed, "h2", sent["to_src"])
    for (graph, sender, receiver, si, ttl), cap in captures.items():
        originals = sorted(bytes(Ether(f)[IP]) for f in sent[graph])
        # h2 answers the echo requests: its replies cross the links too, on the other graph
        on_link = [f for f in map(Ether, cap.frames()) if bytes(f[NSH].payload) in originals]
        assert sorted(bytes(f[NSH].payload) for f in on_link) == originals, \
            f"{graph}, {sender}->{receiver}: one NSH frame per packet, the packet unchanged inside"
        for frame in on_link:
            nsh = frame[NSH]
            assert (frame.src, frame.dst) == (iface(testbed, sender, receiver).mac,
                                              iface(testbed, receiver, sender).mac)
            assert (nsh.ver, nsh.mdtype, nsh.length, nsh.nextproto) == (0, 2, 2, NSH_NEXT_IPV4)
            assert (nsh.spi, nsh.si, nsh.ttl) == (paths[graph].spi, si, ttl), f"{graph}, {sender}->{receiver}"
    for pair, cap in other_branch.items():
        assert [f for f in cap.frames() if ICMP in Ether(f) or NSH in Ether(f)] == [], f"{pair}: off the path"


def test_each_nf_sees_each_packet_once_and_the_destination_the_original(testbed, chains):
    p = chains.deploy(DESCRIPTOR, bind=BIND)
    ctl, h2 = testbed.controller, iface(testbed, "h2", "r4")
    queues = next(i for i in p.instances if i.nf == "prio")
    levels = ctl.read_registers(queues.node, queues.id, "levels")["packets"].sum()
    at_h2 = traffic.Capture(testbed.node("h2"), h2.name, "icmp[icmptype] == icmp-echo", timeout=4.0, count=4)
    sent = pings(testbed, 4, 300)
    time.sleep(0.3)
    send_paced(testbed, "h1", sent)
    got = at_h2.frames()
    assert len(got) == 4
    for g, s in zip(map(Ether, got), map(Ether, sent)):
        assert (g.src, g.dst, g[IP].ttl) == (h2.peer.mac, h2.mac, 63), "routed once, by the egress router"
        assert bytes(g[ICMP]) == bytes(s[ICMP])
    for inst in (i for i in p.instances if i.nf != "prio"):
        counted = [c.packets for c in read_flows(ctl, inst.node, inst.id)
                   if str(c.flow).startswith(f"{iface(testbed, 'h1', 'r1').ipv4.ip}") and " icmp" in str(c.flow).lower()]
        assert counted == [4], f"{inst.nf} on {inst.node} counted {counted}"
    assert ctl.read_registers(queues.node, queues.id, "levels")["packets"].sum() - levels == 4, \
        "prio classified each echo request once (h2's replies go back through the cms alone)"


def test_ping_and_iperf3_through_the_chain(testbed, chains):
    p = chains.deploy(DESCRIPTOR, bind=BIND)
    h2 = iface(testbed, "h2", "r4")
    out = testbed.host("h1").cmd(f"ping -c 3 -i 0.3 -W 2 {h2.ipv4.ip}")
    assert " 0% packet loss" in out, out
    server = testbed.host("h2").popen(["iperf3", "-s", "-1"])
    time.sleep(0.5)
    result = json.loads(testbed.host("h1").cmd(f"iperf3 -c {h2.ipv4.ip} -t 1 -J"))
    server.wait(timeout=15)
    assert result["end"]["sum_received"]["bytes"] > 100_000
    decap = next(h for h in chains.show(SERVICE)["hops"]
                 if h["action"] == "decap" and h["spi"] == next(x.spi for x in p.paths if x.graph == "to_dst"))
    assert decap["node"] == "r4" and decap["packets"] > 50, "the TCP segments went through the chain"
