"""Service chains on BMv2 routers, and on a chain that crosses XDP and BMv2 routers.

nsds/heavy-hitters-sol006.yaml on line3 puts cms on r1, precision on r2 and a second cms on r3
for TCP from h1 to h2's port 5201, and the first cms alone on the way back. Two testbeds run it:
every router a BMv2 switch, and r2 alone a BMv2 switch between two XDP routers (the chain then
goes XDP -> BMv2 -> XDP). A BMv2 switch sends through libpcap and a frame an XDP router redirects
towards a switch meets the switch node's kernel first, so a capture on a BMv2 router's interface
sees the NSH frames of both links it touches: they are decoded with scapy.contrib.nsh.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from controller.stats import read_flows
from controller.topology import load_topology, parse_topology
from frames import NSH   # scapy.contrib.nsh with MD type 2 decoding
from running import chain_service, running_testbed
from testbed import traffic

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parent.parent
DESCRIPTOR = REPO / "nsds" / "heavy-hitters-sol006.yaml"
SERVICE = "heavy-hitters-ns"
SERVER_PORT = 5201


def line3(targets: dict[str, str]):
    doc = copy.deepcopy(load_topology("line3").to_doc())
    for node, target in targets.items():
        doc["nodes"][node]["target"] = target
    return parse_topology(doc, "line3")


TOPOLOGIES = {"bmv2": line3({"r1": "bmv2", "r2": "bmv2", "r3": "bmv2"}), "mixed": line3({"r2": "bmv2"})}


@pytest.fixture(scope="module", params=sorted(TOPOLOGIES))
def testbed(request):
    with running_testbed(TOPOLOGIES[request.param]) as tb:
        yield tb


@pytest.fixture
def chains(testbed):
    with chain_service(testbed, SERVICE) as service:
        yield service


def iface(tb, node: str, towards: str):
    return tb.topo.interface_towards(node, towards)


def tcp(tb, sport: int, reverse: bool = False) -> bytes:
    """h1 -> h2:5201 as h1 sends it (reverse: h2:5201 -> h1 as h2 sends it)."""
    h1, h2 = iface(tb, "h1", "r1"), iface(tb, "h2", "r3")
    src, dst = (h2, h1) if reverse else (h1, h2)
    ports = dict(sport=SERVER_PORT, dport=sport) if reverse else dict(sport=sport, dport=SERVER_PORT)
    return bytes(Ether(src=src.mac, dst=src.peer.mac) / IP(src=str(src.ipv4.ip), dst=str(dst.ipv4.ip), ttl=64)
                 / TCP(flags="S", **ports) / b"chain")


def deployed(chains):
    p = chains.deploy(DESCRIPTOR.read_text(), source=str(DESCRIPTOR))
    return p, {path.graph: path.spi for path in p.paths}


def hop_packets(chains, spi: int) -> dict[tuple[str, int, str], int]:
    return {(h["node"], h["si"], h["action"]): h["packets"] for h in chains.show(SERVICE)["hops"] if h["spi"] == spi}


def nsh_capture(tb, node: str, towards: str, count: int) -> traffic.Capture:
    """NSH frames `node` sends `towards`, captured at r2 (a BMv2 router in both testbeds); the
    hosts' answers (RSTs to the test's SYNs) cross the same links the other way."""
    at = "r2" if "r2" in (node, towards) else node
    other = towards if at == node else node
    sender = iface(tb, node, towards).mac
    return traffic.Capture(tb.node(at), iface(tb, at, other).name, f"ether proto 0x894f and ether src {sender}",
                           timeout=3.0, count=count)


def test_nsh_frames_on_every_link_carry_the_path_and_the_destination_gets_the_original_packet(testbed, chains):
    p, spi = deployed(chains)
    before = hop_packets(chains, spi["h1-to-h2"])
    on_r1_r2 = nsh_capture(testbed, "r1", "r2", 3)
    on_r2_r3 = nsh_capture(testbed, "r2", "r3", 3)
    h2 = iface(testbed, "h2", "r3")
    at_h2 = traffic.Capture(testbed.node("h2"), h2.name, f"tcp dst port {SERVER_PORT}", timeout=3.0, count=3)
    sent = [tcp(testbed, 40000 + i) for i in range(3)]
    time.sleep(0.3)
    traffic.send(testbed.node("h1"), iface(testbed, "h1", "r1").name, sent)
    # r1 ran cms (255 -> 254), r2 precision (254 -> 253), r3 the second cms; the NSH TTL falls
    # by one per node the frame leaves, the inner packet is not routed inside the chain
    for frames, (src, dst), si, ttl in ((on_r1_r2.frames(), ("r1", "r2"), 254, 62),
                                        (on_r2_r3.frames(), ("r2", "r3"), 253, 61)):
        out = iface(testbed, src, dst)
        assert len(frames) == 3, f"{src}->{dst}: {len(frames)} NSH frames"
        for got, s in zip(frames, sent):
            f = Ether(got)
            assert (f.src, f.dst, f.type) == (out.mac, out.peer.mac, 0x894F), f"{src}->{dst} addressing"
            nsh = f[NSH]
            assert (nsh.ver, nsh.mdtype, nsh.nextproto, nsh.spi, nsh.si, nsh.ttl, nsh.length) == \
                (0, 2, 1, spi["h1-to-h2"], si, ttl, 2), f"{src}->{dst}: {nsh.summary()}"
            assert bytes(nsh.payload) == bytes(Ether(s)[IP]), f"{src}->{dst}: the inner packet as h1 sent it"
    got = at_h2.frames()
    assert len(got) == 3
    for g, s in zip(got, sent):
        g, s = Ether(g), Ether(s)
        assert (g.src, g.dst, g[IP].ttl) == (h2.peer.mac, h2.mac, 63), "routed once, by the egress router"
        assert bytes(g[TCP]) == bytes(s[TCP]) and (g[IP].src, g[IP].dst) == (s[IP].src, s[IP].dst)
    after = hop_packets(chains, spi["h1-to-h2"])
    assert {k: after[k] - before[k] for k in after} == {
        ("r1", 255, "to_nf"): 3, ("r1", 254, "forward"): 3, ("r2", 254, "to_nf"): 3,
        ("r2", 253, "forward"): 3, ("r3", 253, "to_nf"): 3, ("r3", 252, "decap"): 3}


def test_every_nf_counts_each_packet_once(testbed, chains):
    p, spi = deployed(chains)
    sport = 41000
    h2 = iface(testbed, "h2", "r3")
    at_h2 = traffic.Capture(testbed.node("h2"), h2.name, f"tcp dst port {SERVER_PORT}", timeout=3.0, count=5)
    time.sleep(0.3)
    # one at a time: a PRECISION takeover is written by the packet's next pass through the switch
    # (as the paper's recirculation), and a packet of the flow that overtakes it is counted as new
    for _ in range(5):
        traffic.send(testbed.node("h1"), iface(testbed, "h1", "r1").name, [tcp(testbed, sport)])
    assert len(at_h2.frames()) == 5
    for inst in p.instances:
        counted = {str(c.flow): c.packets for c in read_flows(testbed.controller, inst.node, inst.id)}
        mine = [n for f, n in counted.items() if f":{sport} ->" in f]
        assert mine == [5], f"{inst.id} on {inst.node} ({testbed.topo.nodes[inst.node].target}) counted {mine}"
    handed = {i["id"]: i["packets"] for i in chains.show(SERVICE)["instances"]}
    assert set(handed) == {i.id for i in p.instances} and all(n >= 5 for n in handed.values()), handed


def test_the_reverse_graph_and_unmatched_traffic(testbed, chains):
    p, spi = deployed(chains)
    h1, h2 = iface(testbed, "h1", "r1"), iface(testbed, "h2", "r3")
    before = hop_packets(chains, spi["h2-to-h1"])
    back = nsh_capture(testbed, "r2", "r1", 1)
    at_h1 = traffic.Capture(testbed.node("h1"), h1.name, f"tcp src port {SERVER_PORT}", timeout=3.0, count=1)
    time.sleep(0.3)
    traffic.send(testbed.node("h2"), h2.name, [tcp(testbed, 42000, reverse=True)])
    assert len(at_h1.frames()) == 1
    (frame,) = back.frames()
    assert (Ether(frame)[NSH].spi, Ether(frame)[NSH].si) == (spi["h2-to-h1"], 255), "no NF before r1 on the way back"
    after = hop_packets(chains, spi["h2-to-h1"])
    assert {k: after[k] - before[k] for k in after} == {
        ("r3", 255, "forward"): 1, ("r2", 255, "forward"): 1, ("r1", 255, "to_nf"): 1, ("r1", 254, "decap"): 1}
    time.sleep(0.3)
    forward_before = hop_packets(chains, spi["h1-to-h2"])
    plain = traffic.Capture(testbed.node("h2"), h2.name, "udp dst port 7777", timeout=3.0, count=1)
    no_nsh = nsh_capture(testbed, "r1", "r2", 1)
    udp = Ether(src=h1.mac, dst=h1.peer.mac) / IP(src=str(h1.ipv4.ip), dst=str(h2.ipv4.ip)) / UDP(dport=7777)
    time.sleep(0.3)
    traffic.send(testbed.node("h1"), h1.name, [bytes(udp)])
    assert len(plain.frames()) == 1, "traffic of no graph is routed plainly"
    assert [f for f in no_nsh.frames() if UDP in Ether(f)] == []
    assert hop_packets(chains, spi["h1-to-h2"]) == forward_before


def test_delete_leaves_no_rule_or_instance(testbed, chains):
    ctl = testbed.controller
    routers = ("r1", "r2", "r3")
    before = {node: sorted(i.id for i in ctl.instances(node)) for node in routers}
    p, spi = deployed(chains)
    again, spi_again = deployed(chains)
    assert spi_again == spi and again.to_doc() == p.to_doc(), "a repeat is a no-op"
    assert {node: sorted(i.id for i in ctl.instances(node)) for node in routers} != before
    assert chains.delete(SERVICE)
    assert {node: sorted(i.id for i in ctl.instances(node)) for node in routers} == before, \
        "chain NFs and the forwarders no service uses are gone"
    for node in routers:
        assert all(d.healthy for d in ctl.deployments(node)), node
        if testbed.topo.nodes[node].target == "bmv2":
            assert ctl.read(node, "nfrouter", "flow_routes") == []
    assert ctl.store.services() == {}


LNSD = DESCRIPTOR.parent / "heavy-hitters-lnsd.yaml"


def test_the_lnsd_example_chains_cms_precision_prio_on_bmv2_with_ping_and_iperf3(testbed, chains):
    """nsds/heavy-hitters-lnsd.yaml (default-nfrouter-mode bmv2): cms -> precision -> prio for all
    of h1's traffic to h2, cms on the way back; its NFs go to BMv2 routers only (in the mixed
    testbed all three to r2, between two XDP routers)."""
    key = "heavy-hitter-watch"
    p = chains.deploy(LNSD.read_text(), source=str(LNSD))
    try:
        assert {testbed.topo.nodes[i.node].target for i in p.instances} == {"bmv2"}
        up = next(x for x in p.paths if x.graph == "upstream")
        h2 = iface(testbed, "h2", "r3")
        queues = next(i for i in p.instances if i.nf == "prio")
        levels_before = testbed.controller.read_registers(queues.node, queues.id, "levels")["packets"].sum()
        before = {(h["node"], h["si"]): h["packets"] for h in chains.show(key)["hops"] if h["spi"] == up.spi}
        out = testbed.host("h1").cmd(f"ping -c 3 -i 0.3 -W 2 {h2.ipv4.ip}")
        assert " 0% packet loss" in out, out
        after = {(h["node"], h["si"]): h["packets"] for h in chains.show(key)["hops"] if h["spi"] == up.spi}
        hops = [(r.node, r.match["si"], r.action) for r in p.rules if r.table == "sfc_hops" and r.match["spi"] == up.spi]
        assert [a for *_, a in hops].count("to_nf") == 3 and hops[-1][1:] == (252, "decap"), hops
        assert all(after[(n, si)] - before[(n, si)] >= 3 for n, si, _ in hops), "every hop saw the pings"
        assert testbed.controller.read_registers(queues.node, queues.id, "levels")["packets"].sum() - levels_before \
            >= 3, "prio classified the pings (its lowest level: no entry)"
        server = testbed.host("h2").popen(["iperf3", "-s", "-1"])
        time.sleep(0.5)
        result = testbed.host("h1").cmd(f"iperf3 -c {h2.ipv4.ip} -t 1 -J")
        server.wait(timeout=15)
        assert json.loads(result)["end"]["sum_received"]["bytes"] > 100_000, "TCP through a BMv2 chain"
    finally:
        chains.delete(key)


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_kill_9_mid_deploy_then_one_command_leaves_a_working_chain_or_none(testbed, chains, fraction):
    """The lnsd example's precision asks for 3 stages: its deploy builds and loads a new pipeline
    on the switch, which empties its tables, so a kill can land between the push and the refill."""
    key, ctl = "heavy-hitter-watch", testbed.controller
    env = {**os.environ, "INNET_SCOPE": ctl.scope.name}
    deploy = [sys.executable, "-m", "testbed.cli", "service", "deploy", str(LNSD)]
    # a process of its own, as an operator's (a forked one would share this one's gRPC connections),
    # timed from start to end as the run it kills
    started = time.perf_counter()
    assert subprocess.run(deploy, cwd=REPO, env=env, capture_output=True).returncode == 0
    took = time.perf_counter() - started
    chains.delete(key)
    child = subprocess.Popen(deploy, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(took * fraction)
    child.send_signal(signal.SIGKILL)
    child.wait()
    status = subprocess.run([sys.executable, "-m", "testbed.cli", "status", "--json"], cwd=REPO, capture_output=True,
                            text=True, env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["pending_operations"] == []
    assert all(i["health"] == "ok" for n in report["nodes"] for i in n["instances"]), report["nodes"]
    chain_instances = {(i.node, i.id) for i in ctl.instances() if i.id.startswith(f"{key}--")}
    whole = key in ctl.store.services()
    try:
        if whole:
            assert chain_instances == {(i["node"], i["id"]) for i in chains.show(key)["instances"]}
        else:
            assert chain_instances == set()
            assert all(not ctl.store.entries(n, "sff") for n in ("r1", "r2", "r3") if ctl.store.instance(n, "sff"))
        h2 = iface(testbed, "h2", "r3")
        out = testbed.host("h1").cmd(f"ping -c 2 -i 0.3 -W 2 {h2.ipv4.ip}")
        assert " 0% packet loss" in out, f"{'through the chain' if whole else 'routed plainly'}: {out}"
    finally:
        chains.delete(key)
