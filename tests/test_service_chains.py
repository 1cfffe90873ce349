"""Service chains from a descriptor on a Mininet line3 (XDP routers), packet by packet.

nsds/heavy-hitters-sol006.yaml puts cms on r1, precision on r2 and a second cms on r3 for TCP
from h1 to h2's port 5201 (SPI of h1-to-h2), and the first cms alone on the way back. Frames
are sent from the hosts; each forwarder's (SPI, SI) counters say at which SI they crossed it,
each NF's flow table that it saw them, and the other host what came out. The testbed taps its
router-to-router links (testbed.linkemu: a bridge between the routers, whose kernel a capture
can see, where XDP routers would otherwise redirect to each other past any capture), so the
NSH frames on every link between hops are captured and decoded with scapy.contrib.nsh."""
from __future__ import annotations

import json
import multiprocessing
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
from controller.topology import load_topology
from frames import NSH, NSH_NEXT_IPV4, on_the_wire, tap
from running import chain_service, running_testbed
from testbed import traffic

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parent.parent
DESCRIPTOR = REPO / "nsds" / "heavy-hitters-sol006.yaml"
SERVICE = "heavy-hitters-ns"
TOPO = load_topology("line3")
SERVER_PORT = 5201


def iface(node: str, towards: str):
    return next(i for i in TOPO.nodes[node].interfaces if i.peer.node == towards)


H1, H2 = iface("h1", "r1"), iface("h2", "r3")


def tcp(sport: int, reverse: bool = False, payload: bytes = b"chain") -> bytes:
    """h1 -> h2:5201 as h1 sends it (reverse: h2:5201 -> h1 as h2 sends it)."""
    src, dst = (H2, H1) if reverse else (H1, H2)
    ports = dict(sport=SERVER_PORT, dport=sport) if reverse else dict(sport=sport, dport=SERVER_PORT)
    return bytes(Ether(src=src.mac, dst=src.peer.mac) / IP(src=str(src.ipv4.ip), dst=str(dst.ipv4.ip), ttl=64)
                 / TCP(flags="S", **ports) / payload)


@pytest.fixture(scope="module")
def line3():
    with running_testbed(TOPO, tap_links=True) as tb:
        yield tb


@pytest.fixture
def chains(line3):
    with chain_service(line3, SERVICE) as service:
        yield service


def deployed(chains):
    p = chains.deploy(DESCRIPTOR.read_text(), source=str(DESCRIPTOR))
    return p, {path.graph: path.spi for path in p.paths}


def capture(tb, node: str, ifname: str, bpf: str, count: int) -> traffic.Capture:
    return traffic.Capture(tb.node(node), ifname, bpf, timeout=2.0, count=count)


def hop_packets(chains, spi: int) -> dict[tuple[str, int, str], int]:
    return {(h["node"], h["si"], h["action"]): h["packets"] for h in chains.show(SERVICE)["hops"] if h["spi"] == spi}


def test_each_router_sees_the_path_at_its_si_and_the_destination_gets_the_original_packet(line3, chains):
    """The forwarders' view: each (SPI, SI) entry counts the frames that arrived with that SI
    (the NSH bytes on the links between them are checked in the test after this one)."""
    p, spi = deployed(chains)
    before = hop_packets(chains, spi["h1-to-h2"])
    at_h2 = capture(line3, "h2", H2.name, f"tcp dst port {SERVER_PORT}", 3)
    sent = [tcp(40000 + i) for i in range(3)]
    traffic.send(line3.node("h1"), H1.name, sent)
    got = at_h2.frames()
    after = hop_packets(chains, spi["h1-to-h2"])
    assert {k: after[k] - before[k] for k in after} == {
        ("r1", 255, "to_nf"): 3, ("r1", 254, "forward"): 3, ("r2", 254, "to_nf"): 3,
        ("r2", 253, "forward"): 3, ("r3", 253, "to_nf"): 3, ("r3", 252, "decap"): 3}
    assert len(got) == 3
    for g, s in zip(got, sent):
        g, s = Ether(g), Ether(s)
        assert (g.src, g.dst, g[IP].ttl) == (H2.peer.mac, H2.mac, 63), "routed once, by the egress router"
        assert bytes(g[TCP]) == bytes(s[TCP]) and (g[IP].src, g[IP].dst) == (s[IP].src, s[IP].dst)


def test_frames_on_every_link_between_hops_decode_as_nsh_with_the_path_and_its_si(line3, chains):
    """Captured on the link emulators between the routers, both ways: one NSH frame per packet
    sent (MD type 2, no context headers, next protocol IPv4) with the graph's SPI, an SI one
    lower per NF behind it, a TTL one lower per router behind it, the hop's MACs, and inside
    the packet the host sent, byte for byte: the chain does not route it."""
    p, spi = deployed(chains)
    paths = {path.graph: path for path in p.paths}
    assert on_the_wire(paths["h1-to-h2"]) == [("r1", "r2", 254, 62), ("r2", "r3", 253, 61)]
    assert on_the_wire(paths["h2-to-h1"]) == [("r3", "r2", 255, 62), ("r2", "r1", 255, 61)]
    sent = {"h1-to-h2": [tcp(43000 + i) for i in range(3)],
            "h2-to-h1": [tcp(43100 + i, reverse=True) for i in range(2)]}
    captures = {}
    for graph, path in paths.items():
        for sender, receiver, si, ttl in on_the_wire(path):
            emulator, port = tap(line3, sender, receiver)
            # the port's own egress towards the sender carries the other direction: by source MAC
            bpf = f"ether proto 0x894f and ether src {iface(sender, receiver).mac}"
            # no count to stop at (the hosts' answers match too): open while the others start and the frames cross
            captures[(graph, sender, receiver, si, ttl)] = traffic.Capture(line3.node(emulator), port, bpf, timeout=6.0)
    traffic.send(line3.node("h1"), H1.name, sent["h1-to-h2"])
    traffic.send(line3.node("h2"), H2.name, sent["h2-to-h1"])
    for (graph, sender, receiver, si, ttl), cap in captures.items():
        originals = [bytes(Ether(f)[IP]) for f in sent[graph]]
        # the hosts' kernels answer the SYNs (RSTs), which cross the links too: the sent packets only
        on_link = [frame for frame in map(Ether, cap.frames()) if bytes(frame[NSH].payload) in originals]
        assert sorted(bytes(f[NSH].payload) for f in on_link) == sorted(originals), \
            f"{graph}, {sender}->{receiver}: one NSH frame per packet, the packet unchanged inside"
        for frame in on_link:
            nsh = frame[NSH]
            assert (frame.src, frame.dst) == (iface(sender, receiver).mac, iface(receiver, sender).mac)
            assert (nsh.ver, nsh.mdtype, nsh.length, nsh.nextproto) == (0, 2, 2, NSH_NEXT_IPV4), \
                f"{graph}, {sender}->{receiver}: a bare MD type 2 header (2 words) before an IPv4 packet"
            assert (nsh.spi, nsh.si, nsh.ttl) == (spi[graph], si, ttl), f"{graph}, {sender}->{receiver}"


def test_every_nf_counts_each_packet_once_and_per_hop_counters_agree(line3, chains):
    p, spi = deployed(chains)
    sport = 41000
    sent = [tcp(sport) for _ in range(5)]
    at_h2 = capture(line3, "h2", H2.name, f"tcp dst port {SERVER_PORT}", 5)
    traffic.send(line3.node("h1"), H1.name, sent)
    assert len(at_h2.frames()) == 5
    for inst in p.instances:
        counted = {str(c.flow): c.packets for c in read_flows(line3.controller, inst.node, inst.id)}
        mine = [n for f, n in counted.items() if f":{sport} ->" in f]
        assert mine == [5], f"{inst.id} on {inst.node} counted {mine}"
    hops = [h for h in chains.show(SERVICE)["hops"] if h["spi"] == spi["h1-to-h2"]]
    assert len(hops) == 6 and len({h["packets"] for h in hops}) == 1 and hops[0]["packets"] >= 5


def test_the_reverse_graph_and_unmatched_traffic(line3, chains):
    p, spi = deployed(chains)
    before = hop_packets(chains, spi["h2-to-h1"])
    at_h1 = capture(line3, "h1", H1.name, f"tcp src port {SERVER_PORT}", 1)
    traffic.send(line3.node("h2"), H2.name, [tcp(42000, reverse=True)])
    assert len(at_h1.frames()) == 1
    after = hop_packets(chains, spi["h2-to-h1"])
    assert {k: after[k] - before[k] for k in after} == {
        ("r3", 255, "forward"): 1, ("r2", 255, "forward"): 1, ("r1", 255, "to_nf"): 1, ("r1", 254, "decap"): 1}
    time.sleep(0.2)   # h1 answers that SYN with a RST to h2:5201, which the forward graph carries
    unclassified = line3.controller.read_stat("r1", "sff", "verdicts")["unclassified"]
    forward_before = hop_packets(chains, spi["h1-to-h2"])
    plain = capture(line3, "h2", H2.name, "udp dst port 7777", 1)
    udp = Ether(src=H1.mac, dst=H1.peer.mac) / IP(src=str(H1.ipv4.ip), dst=str(H2.ipv4.ip)) / UDP(dport=7777)
    traffic.send(line3.node("h1"), H1.name, [bytes(udp)])
    assert len(plain.frames()) == 1
    assert line3.controller.read_stat("r1", "sff", "verdicts")["unclassified"] > unclassified, \
        "traffic of no graph is routed plainly"   # (with the hosts' own IPv6 neighbour discovery)
    assert hop_packets(chains, spi["h1-to-h2"]) == forward_before


def test_a_repeat_is_a_no_op_and_delete_leaves_nothing(line3, chains):
    p, spi = deployed(chains)
    again, spi_again = deployed(chains)
    assert spi_again == spi and again.to_doc() == p.to_doc()
    assert chains.delete(SERVICE)
    ctl = line3.controller
    for node in ("r1", "r2", "r3"):
        assert [i.id for i in ctl.instances(node)] == ["nfrouter"], "chain NFs and the unused forwarder are gone"
        pins = ctl.scope.pin_root / node
        assert sorted(d.name.split("@")[0] for d in pins.iterdir()) == ["nfrouter"]
    assert ctl.store.services() == {}


def test_iperf3_runs_through_the_chain(line3, chains):
    deployed(chains)
    h1, h2 = line3.host("h1"), line3.host("h2")
    server = h2.popen(["iperf3", "-s", "-1"])
    time.sleep(0.5)
    out = h1.cmd(f"iperf3 -c {H2.ipv4.ip} -t 1 -J")
    server.wait(timeout=10)
    result = json.loads(out)
    assert result["end"]["sum_received"]["bytes"] > 1_000_000
    decap = next(h for h in chains.show(SERVICE)["hops"] if h["action"] == "decap" and h["node"] == "r3")
    assert decap["packets"] > 500


def _deploy_in_child(scope: str) -> None:
    os.environ["INNET_SCOPE"] = scope
    from controller.service import Controller
    from controller.sfc import ChainService
    ChainService(Controller()).deploy(DESCRIPTOR.read_text())


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_kill_9_mid_deploy_then_one_command_leaves_the_chain_whole_or_absent(line3, chains, fraction):
    started = time.perf_counter()
    deployed(chains)
    took = time.perf_counter() - started
    chains.delete(SERVICE)
    child = multiprocessing.get_context("fork").Process(target=_deploy_in_child, args=(line3.controller.scope.name,))
    child.start()
    time.sleep(took * fraction)
    if child.exitcode is None:
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    status = subprocess.run([sys.executable, "-m", "testbed.cli", "status", "--json"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "INNET_SCOPE": line3.controller.scope.name})
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending_operations"] == []
    ctl = line3.controller
    chain_instances = {(i.node, i.id) for i in ctl.instances() if i.id.startswith(f"{SERVICE}--")}
    if SERVICE in ctl.store.services():
        shown = chains.show(SERVICE)
        assert chain_instances == {(i["node"], i["id"]) for i in shown["instances"]}, status.stderr
        assert all(i["health"] == "ok" for n in json.loads(status.stdout)["nodes"] for i in n["instances"])
        held = {(n, tuple(sorted(m.items()))) for n in ("r1", "r2", "r3") if ctl.store.instance(n, "sff")
                for _, m, _, _ in ctl.store.entries(n, "sff")}
        assert len(held) == len(shown["hops"]) + len(shown["classifier"])
    else:
        assert chain_instances == set()
        assert all(not ctl.store.entries(n, "sff") for n in ("r1", "r2", "r3"))


def _innet(scope: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "INNET_SCOPE": scope})


def test_service_plan_shows_the_placement_beside_what_runs_and_installs_nothing(line3, chains, tmp_path):
    ctl, scope = line3.controller, line3.controller.scope.name
    held = lambda: ({(i.node, i.id) for i in ctl.instances()}, ctl.store.services())  # noqa: E731
    before = held()
    planned = _innet(scope, "service", "plan", str(DESCRIPTOR), "--json")
    assert planned.returncode == 0, planned.stderr
    fresh = json.loads(planned.stdout)
    assert fresh["change"] == "created"
    assert [(i["nf"], i["node"], i["slot"]) for i in fresh["instances"]] == [
        ("cms", "r1", 0), ("precision", "r2", 0), ("cms", "r3", 0)]
    assert fresh["paths"][0]["path"] == ["h1", "r1", "r2", "r3", "h2"]
    assert held() == before, "planning installs nothing"
    p, spi = deployed(chains)
    again = json.loads(_innet(scope, "service", "plan", str(DESCRIPTOR), "--json").stdout)
    assert again["change"] == "unchanged" and {x["graph"]: x["spi"] for x in again["paths"]} == spi
    # another service beside it: its cms goes where a slot is free, on a fresh SPI
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"applications": [{"application_name": "app", "microservices": [
        {"microservice_name": "src", "ns_ref": "app_a"}, {"microservice_name": "dst", "ns_ref": "app_b"}]}],
        "net_services": [{"ns_name": "other", "network_functions": [{"nf_ref": "m", "type": "cms"}],
                          "forwarding_graphs": [{"graph_name": "g", "links": [{"id": "to_dst", "connection_points": [
                              {"microservice_ref": "app_a:1"}, {"nf_ref": "m"}, {"microservice_ref": "app_b:1"}]}]}]}]}))
    beside = json.loads(_innet(scope, "service", "plan", str(other), "--bind", "src=h1", "--bind", "dst=h2",
                               "--json").stdout)
    assert [(i["node"], i["slot"]) for i in beside["instances"]] == [("r1", 1)]
    assert beside["paths"][0]["spi"] not in spi.values()
    assert set(ctl.store.services()) == {SERVICE}


def test_a_delay_budget_the_testbed_cannot_meet_is_refused_and_nothing_is_deployed(line3, chains):
    from controller.chains import HOP_MS, ChainError

    doc = json.loads((REPO / "nsds" / "ping-demo.json").read_text())
    doc["net_services"][0]["forwarding_graphs"][0]["e2e_delay_budget"] = "1us"
    with pytest.raises(ChainError, match=rf"^service ping-demo, graph to_dst: delay budget 0\.001 ms cannot be met: "
                                         rf"the best path h1–r1–r2–r3–h2 takes {3 * HOP_MS['xdp']:.4g} ms"):
        chains.deploy(doc, bind={"src": "h1", "dst": "h2"})
    ctl = line3.controller
    assert ctl.store.services() == {}
    assert all([i.id for i in ctl.instances(r)] == ["nfrouter"] for r in ("r1", "r2", "r3"))
    shipped = _innet(ctl.scope.name, "service", "plan", str(REPO / "nsds" / "ping-demo.json"), "--bind", "src=h1",
                     "--bind", "dst=h2")
    assert shipped.returncode == 0, "the shipped 5 ms budget is met on line3: " + shipped.stderr
