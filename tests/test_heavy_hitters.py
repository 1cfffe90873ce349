"""Heavy-hitter NFs (cms, precision): real frames from scapy through the attached XDP programs,
and through a real BMv2 switch where one is installed.

A bare namespace holds two veth pairs: cms runs on va (frames sent from vb), precision on
vc (frames sent from vd). IPv6 is off in the namespace so the kernel adds no frames of its
own: every counted packet is one the test sent, and exact counts are known.
"""
import functools
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Ether

from controller.bpf import libbpf
from controller.bpf.build import compile_program
from controller.catalog import get_nf
from controller.errors import CatalogError, StatsError, TargetError
from controller.netns import netns
from controller.node import Node
from controller.p4 import switch
from controller.stats import (Flow, FlowCount, FlowMonitor, SketchEpochs, elephant_threshold, elephants, flow_counts,
                              flow_estimate, heavy_hitters, rates, sketch_columns, state_memory, top_k)
from controller.service import Controller
from testbed import cli, traffic
from testbed.scratch import Veth, controller_node, namespace, sh

pytestmark = pytest.mark.needs_root

CMS_PARAMS = {"rows": 4, "columns": 256, "candidates": 1024}
PROTO = {"udp": 17, "tcp": 6, "icmp": 1}


@pytest.fixture(scope="module")
def hh():
    """cms on va, precision on vc, in one namespace."""
    with controller_node("hh", [Veth("va", "vb"), Veth("vc", "vd")], ipv6=False) as (ctl, name):
        ctl.deploy(name, "cms", ["va"], CMS_PARAMS)
        ctl.deploy(name, "precision", ["vc"])
        yield ctl, name


@pytest.fixture
def bare():
    """A fresh namespace with one veth pair and nothing deployed."""
    with controller_node("hh", [Veth("va", "vb")], ipv6=False) as node:
        yield node


# ---- frames ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)   # scapy builds a frame in ~0.5 ms: build each one once
def frame(flow: Flow, payload: int = 0) -> bytes:
    ip = IPv6(src=str(flow.src), dst=str(flow.dst)) if flow.src.version == 6 else IP(src=str(flow.src),
                                                                                         dst=str(flow.dst))
    l4 = TCP(sport=flow.sport, dport=flow.dport) if flow.proto == 6 else UDP(sport=flow.sport, dport=flow.dport)
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / l4 / (b"x" * payload))


def test_flows(n: int) -> list[Flow]:
    """n distinct flows: IPv4 and IPv6, UDP and TCP."""
    flows = []
    for i in range(n):
        v6 = i % 4 == 3
        src = f"2001:db8:1::{i + 1:x}" if v6 else f"10.1.{i // 250}.{i % 250 + 1}"
        dst = "2001:db8:2::1" if v6 else "10.2.0.1"
        flows.append(Flow.of(src, dst, 10000 + i, 80 + i % 7, PROTO["tcp"] if i % 2 else PROTO["udp"]))
    return flows


test_flows.__test__ = False   # a helper, not a test


def rx_packets(ctl, name: str, ifname: str) -> int:
    with netns(ctl.node(name).netns), IPRoute() as ipr:
        link = ipr.link_lookup(ifname=ifname)[0]
        return ipr.get_links(link)[0].get("IFLA_STATS64")["rx_packets"]


def send(ctl, name: str, iface: str, rx_iface: str, frames: list[bytes]) -> None:
    """Send from `iface` and wait until its peer `rx_iface` has taken every frame in."""
    before = rx_packets(ctl, name, rx_iface)
    traffic.send(ctl.node(name), iface, frames)
    deadline = time.monotonic() + 5
    while rx_packets(ctl, name, rx_iface) - before < len(frames) and time.monotonic() < deadline:
        time.sleep(0.01)


def sketch_cells(name: str, flows: list[Flow]) -> dict[Flow, np.ndarray]:
    """Each flow's sketch cells (flat index per row, bank 0), found by running one of its frames
    through a separate, unattached copy of the same compiled program (BPF_PROG_TEST_RUN)."""
    nf = get_nf("cms")
    values = nf.resolve_parameters(CMS_PARAMS)
    defines = {p.xdp["define"]: values[p.name] for p in nf.parameters.values()}
    cells = {}
    with libbpf.BpfObject(str(compile_program(nf.programs["xdp"]["source"], defines))).load() as obj:
        sketch = obj.maps["cms_sketch"]
        prog = obj.programs["cms"]
        for flow in flows:
            before = np.frombuffer(sketch.lookup_all(), dtype="<u8")[0::2].copy()
            assert libbpf.test_run(prog, frame(flow)).retval == 2   # XDP_PASS
            after = np.frombuffer(sketch.lookup_all(), dtype="<u8")[0::2]
            cells[flow] = np.flatnonzero(after != before)
            assert len(cells[flow]) == CMS_PARAMS["rows"], f"{flow}: one cell per row"
    return cells


# ---- Count-Min --------------------------------------------------------------------------------
def test_count_min_never_undercounts_and_stays_within_its_bound(hh):
    ctl, name = hh
    flows = test_flows(300)
    sent = {f: max(1, 3000 // (i + 1)) for i, f in enumerate(flows)}          # Zipf-like
    payload = {f: i % 50 for i, f in enumerate(flows)}
    frames = [frame(f, payload[f]) for f in flows for _ in range(sent[f])]
    random.Random(1).shuffle(frames)
    sent_bytes = {f: sent[f] * len(frame(f, payload[f])) for f in flows}

    epochs = SketchEpochs(ctl, name, "cms")
    epochs.restart()
    send(ctl, name, "vb", "va", frames)
    epoch = epochs.close()
    assert epoch.packets == len(frames)
    assert epoch.bytes == sum(len(f) for f in frames)

    n, total_bytes, width = len(frames), epoch.bytes, CMS_PARAMS["columns"]
    cells = sketch_cells(name, flows)
    for f in flows:   # the controller finds a flow's cells with the program's own hashes
        assert [r * width + c for r, c in enumerate(sketch_columns(ctl, name, "cms", f))] == cells[f].tolist()
    sketch_packets = epoch.sketch["packets"].reshape(-1)
    sketch_bytes = epoch.sketch["bytes"].reshape(-1)
    for f in flows:
        est_packets = int(sketch_packets[cells[f]].min())
        est_bytes = int(sketch_bytes[cells[f]].min())
        assert sent[f] <= est_packets <= sent[f] + math.e * n / width, f"{f}: packets {est_packets} vs {sent[f]}"
        assert sent_bytes[f] <= est_bytes <= sent_bytes[f] + math.e * total_bytes / width, f"{f}: bytes"

    for f in flows[:20]:   # any flow's estimate, candidate or not, from the closed epoch
        assert epoch.estimate(f) == FlowCount(f, int(sketch_packets[cells[f]].min()),
                                              int(sketch_bytes[cells[f]].min()))

    # candidates: sent flows only, each counted since it took its slot over, never above its
    # estimate; the heaviest flows hold theirs from their first packets, so exactly
    counted = flow_counts(epoch.flows)
    assert counted and {c.flow for c in counted} <= set(flows)
    for c in counted:
        assert c.packets <= int(sketch_packets[cells[c.flow]].min()), c
        assert c.bytes <= int(sketch_bytes[cells[c.flow]].min()), c
    heaviest = sorted(flows, key=lambda f: -sent[f])[:5]
    assert {c.flow for c in epoch.top(5)} == set(heaviest)
    for c in epoch.top(2):
        assert (c.packets, c.bytes) == (sent[c.flow], sent_bytes[c.flow])

    # elephants: at least the rate of the third-heaviest flow, given in bytes/s or as half a link
    threshold = sent_bytes[heaviest[2]] / epoch.duration
    assert elephant_threshold(link_bps=16 * threshold, fraction=0.5) == pytest.approx(threshold)
    found = {r.flow for r in elephants(epoch.rates(), threshold)}
    assert set(heaviest[:3]) <= found
    for f in found:
        assert sent_bytes[f] + math.e * total_bytes / width >= threshold * epoch.duration


def test_epoch_rotation_loses_and_double_counts_nothing(hh):
    ctl, name = hh
    flows = test_flows(40)
    frames = [frame(flows[i % len(flows)], i % 30) for i in range(60000)]
    epochs = SketchEpochs(ctl, name, "cms", grace_s=0.02)
    epochs.restart()
    before = rx_packets(ctl, name, "va")
    sender = traffic._probe(ctl.node(name), "send", "vb")
    sender.stdin.write(traffic._frames_json(frames))
    sender.stdin.close()
    closed = []
    deadline = time.monotonic() + 30
    while (sender.poll() is None or rx_packets(ctl, name, "va") - before < len(frames)) \
            and time.monotonic() < deadline:
        closed.append(epochs.close())
    assert sender.wait() == 0, sender.stderr.read()
    closed.append(epochs.close())

    busy = [e for e in closed if e.packets]
    assert len(busy) >= 3, f"traffic spanned only {len(busy)} epochs: rotate faster or send more"
    for e in closed:   # a packet reads its bank once: every row of an epoch saw the same packets
        assert set(e.sketch["packets"].sum(axis=1)) == {e.packets}
        assert set(e.sketch["bytes"].sum(axis=1)) == {e.bytes}
    assert sum(e.packets for e in closed) == len(frames)
    assert sum(e.bytes for e in closed) == sum(len(f) for f in frames)
    assert {c.flow for e in busy for c in flow_counts(e.flows)} <= set(flows)
    assert {e.bank for e in busy} == {0, 1}


def test_truncated_and_non_ip_frames_are_not_counted(hh):
    ctl, name = hh
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    v4 = eth / IP(src="10.9.0.1", dst="10.9.0.2")
    v6 = eth / IPv6(src="2001:db8:9::1", dst="2001:db8:9::2")
    ignored = [
        bytes(eth / ARP(pdst="10.9.0.2")),
        bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88b5) / (b"\0" * 46)),
        bytes(eth)[:14],                                                  # Ethernet header only
        bytes(v4 / UDP(sport=1, dport=2))[:14 + 12],                      # IPv4 header cut short
        bytes(eth / IP(src="10.9.0.1", dst="10.9.0.2", ihl=4) / (b"\0" * 30)),   # IHL below 5
        bytes(v4 / UDP(sport=1, dport=2))[:14 + 20 + 2],                  # ports cut short
        bytes(v6 / UDP(sport=1, dport=2))[:14 + 30],                      # IPv6 header cut short
        bytes(v6 / TCP(sport=1, dport=2))[:14 + 40 + 3],                  # ports cut short
    ]
    counted = {   # frame -> the flow it is counted as
        bytes(v4 / UDP(sport=1111, dport=2222) / b"hi"): Flow.of("10.9.0.1", "10.9.0.2", 1111, 2222, 17),
        bytes(eth / IP(src="10.9.0.1", dst="10.9.0.2", frag=100, proto=17) / (b"\0" * 16)):   # no ports
            Flow.of("10.9.0.1", "10.9.0.2", 0, 0, 17),
        bytes(v4 / ICMP()): Flow.of("10.9.0.1", "10.9.0.2", 0, 0, 1),
        bytes(v6 / IPv6ExtHdrFragment(m=1) / UDP(sport=3333, dport=4444) / b"frag"):
            Flow.of("2001:db8:9::1", "2001:db8:9::2", 3333, 4444, 17),
    }
    epochs = SketchEpochs(ctl, name, "cms")
    epochs.restart()
    send(ctl, name, "vb", "va", ignored + list(counted))
    time.sleep(0.2)   # runt frames may never show in the interface's rx count
    epoch = epochs.close()
    assert epoch.packets == len(counted)
    assert {c.flow: c.packets for c in flow_counts(epoch.flows)} == {f: 1 for f in counted.values()}


def test_address_pair_key_mode_drops_ports(bare):
    ctl, name = bare
    ctl.deploy(name, "precision", ["va"], {"key_mode": 1})
    flows = [Flow.of("10.3.0.1", "10.3.0.2", 1000 + i, 53, 17) for i in range(5)]
    send(ctl, name, "vb", "va", [frame(f) for f in flows for _ in range(4)])
    time.sleep(0.05)
    got = flow_counts(ctl.read_registers(name, "precision", "flows"))
    assert [(c.flow, c.packets) for c in got] == [(Flow.of("10.3.0.1", "10.3.0.2", 0, 0, 17), 20)]


def test_conservative_update_never_undercounts_and_over_counts_less_than_plain():
    """The same frames, in the same order, through plain cms (va) and conservative cms (vc)
    with the same hashes: a conservative cell never exceeds the plain one, so every estimate lies
    between the exact count and the plain estimate, and the mice's excess shrinks."""
    with controller_node("hh", [Veth("va", "vb"), Veth("vc", "vd")], ipv6=False) as (ctl, name):
        ctl.deploy(name, "cms", ["va"], CMS_PARAMS)
        ctl.deploy(name, "cms", ["vc"], {**CMS_PARAMS, "conservative": 1}, instance="cms-cu")
        flows = test_flows(300)
        sent = {f: max(1, 3000 // (i + 1)) for i, f in enumerate(flows)}
        frames = [frame(f, i % 50) for i, f in enumerate(flows) for _ in range(sent[f])]
        random.Random(3).shuffle(frames)
        sent_bytes = Counter()
        for raw in frames:
            sent_bytes[raw] += len(raw)
        epochs = {inst: SketchEpochs(ctl, name, inst) for inst in ("cms", "cms-cu")}
        for e in epochs.values():
            e.restart()
        send(ctl, name, "vb", "va", frames)
        send(ctl, name, "vd", "vc", frames)
        plain, cu = epochs["cms"].close(), epochs["cms-cu"].close()

        assert plain.packets == cu.packets == len(frames), "the totals count every packet"
        assert plain.bytes == cu.bytes == sum(len(f) for f in frames)
        assert cu.sketch["packets"].sum(axis=1).max() < len(frames), "conservative rows skip cells"
        excess = {"plain": 0, "cu": 0}
        for i, f in enumerate(flows):
            exact = FlowCount(f, sent[f], sent_bytes[frame(f, i % 50)])
            p, c = plain.estimate(f), cu.estimate(f)
            assert exact.packets <= c.packets <= p.packets, f"{f}: exact {exact}, conservative {c}, plain {p}"
            assert exact.bytes <= c.bytes <= p.bytes, f"{f}: bytes"
            excess["plain"] += p.packets - exact.packets
            excess["cu"] += c.packets - exact.packets
        assert excess["cu"] < excess["plain"] / 2, excess

        for c in flow_counts(cu.flows):   # candidates: never above the sketch's estimate
            assert c.packets <= cu.estimate(c.flow).packets
        heaviest = sorted(flows, key=lambda f: -sent[f])
        assert {c.flow for c in cu.top(10)} == set(heaviest[:10])

        # the live estimate through the stats library: the epoch so far holds 7 packets of one flow
        send(ctl, name, "vd", "vc", [frame(flows[5])] * 7)
        time.sleep(0.05)
        assert flow_estimate(ctl, name, "cms-cu", flows[5]) == FlowCount(flows[5], 7, 7 * len(frame(flows[5])))
        assert flow_estimate(ctl, name, "cms-cu", flows[6]).packets == 0
        assert flow_estimate(ctl, name, "cms-cu", flows[5], bank=cu.bank).packets == 0, "the closed bank was zeroed"


# ---- PRECISION -------------------------------------------------------------------------------
def reset_precision(ctl, name: str, instance: str = "precision") -> None:
    """Empty the stages and the key table alike: a flow whose stage slot survived would count on."""
    for stat in ("stages", "flows"):
        ctl.reset_registers(name, instance, stat)


def test_precision_finds_elephants_among_mice(hh):
    ctl, name = hh
    reset_precision(ctl, name)
    alone = Flow.of("10.4.0.1", "10.4.0.2", 5, 6, 17)
    send(ctl, name, "vd", "vc", [frame(alone)] * 50)
    time.sleep(0.05)
    assert [(c.flow, c.packets) for c in flow_counts(ctl.read_registers(name, "precision", "flows"))] == \
        [(alone, 50)], "a lone flow takes an empty slot at once and counts every later packet"

    reset_precision(ctl, name)
    flows = test_flows(1508)
    big, mice = flows[:8], flows[8:]
    frames = [frame(f) for f in big for _ in range(400)] + [frame(f) for f in mice for _ in range(2)]
    random.Random(2).shuffle(frames)
    send(ctl, name, "vd", "vc", frames)
    time.sleep(0.05)
    top = heavy_hitters(ctl.read_registers(name, "precision", "flows"), 8)
    assert {f.src.version for f in big} == {4, 6}
    assert {c.flow for c in top} == set(big)
    for c in top:
        assert 0.9 * 400 <= c.packets <= 400 + 10, f"{c.flow}: counter {c.packets} for 400 packets"
    assert top[0].bytes is None


def test_the_heaviest_flows_keep_the_key_table(bare):
    """One key set (8 keys) for 208 tracked flows: the 8 heavy ones, IPv4 and IPv6, end up
    holding it, whatever order their packets came in, with their stage counters."""
    ctl, name = bare
    ctl.deploy(name, "precision", ["va"], {"stages": 2, "slots": 1024, "key_sets": 1})
    flows = test_flows(208)
    big, mice = flows[:8], flows[8:]
    frames = [frame(f) for f in big for _ in range(40)] + [frame(f) for f in mice for _ in range(3)]
    random.Random(4).shuffle(frames)
    send(ctl, name, "vb", "va", frames)
    time.sleep(0.05)
    held = flow_counts(ctl.read_registers(name, "precision", "flows"))
    assert {c.flow for c in held} == set(big)
    assert {c.flow.src.version for c in held} == {4, 6}
    stages = ctl.read_registers(name, "precision", "stages")
    assert sorted(c.packets for c in held) == sorted(stages["packets"].ravel().tolist())[-8:], \
        "a key entry holds its flow's stage counter"
    assert all(36 <= c.packets <= 40 for c in held), held


# ---- monitoring, CLI ---------------------------------------------------------------------------
def test_flow_monitor_reports_each_interval(hh):
    ctl, name = hh
    flows = test_flows(3)
    monitor = FlowMonitor(ctl, name, "cms", k=2)
    monitor.start()
    frames = [frame(f, 100) for f, n in zip(flows, (30, 20, 10)) for _ in range(n)]
    send(ctl, name, "vb", "va", frames)
    sample = monitor.sample()
    assert sample.packets == 60 and sample.bytes == sum(len(f) for f in frames)
    assert [(r.flow, r.packets) for r in sample.flows] == [(flows[0], 30), (flows[1], 20)]
    assert sample.flows[0].bytes_per_s == pytest.approx(30 * len(frames[0]) / sample.duration)
    assert monitor.sample().flows == [], "the next interval starts empty"


def test_cli_prints_the_top_flows(hh, capsys):
    ctl, name = hh
    reset_precision(ctl, name)
    flows = test_flows(2)
    send(ctl, name, "vd", "vc", [frame(flows[0])] * 7 + [frame(flows[1])] * 3)
    assert cli.main(["hh", name, "precision", "--once", "--interval", "0.05", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{flows[0]}" in out and f"{flows[1]}" not in out
    assert [ln.split()[-5] for ln in out.splitlines() if str(flows[0]) in ln] == ["7"]
    assert cli.main(["hh", name, "precision", "--once", "--top", "0"]) == 1
    assert "top-k needs k >= 1" in capsys.readouterr().err
    assert cli.main(["hh", name, "precision", "--once", "--elephant", "1mbit"]) == 1
    assert "precision counts packets only" in capsys.readouterr().err


# ---- state memory ------------------------------------------------------------------------------
def test_state_memory_counts_every_map_of_the_instance(hh):
    ctl, name = hh
    cpus = libbpf.num_possible_cpus()
    cms = state_memory(ctl, name, "cms")
    assert cms.target == "xdp"
    assert {m.name: (m.entries, m.entry_bytes) for m in cms.maps} == {
        "chain_next": (1, 8), "cms_control": (1, 8), "cms_sketch": (2 * 4 * 256, 16),
        "cms_candidates": (2 * 1024, 56), "cms_totals": (2, 16 * cpus)}
    precision = state_memory(ctl, name, "precision")   # defaults: 2 x 1024 stage slots, 64 x 8 keys
    assert {m.name: (m.entries, m.entry_bytes) for m in precision.maps} == {
        "chain_next": (1, 8), "precision_stages": (2048, 8), "precision_keys": (512, 48)}
    assert precision.bytes == 8 + 2048 * 8 + 512 * 48
    with pytest.raises(TargetError, match=f"no NF instance 'nope' on {name}"):
        state_memory(ctl, name, "nope")


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nf, params, message", [
    ("cms", {"rows": 0}, "cms.rows=0 is out of range"),
    ("cms", {"columns": 1000}, "cms.columns=1000 must be a power of two"),
    ("cms", {"columns": 1 << 17}, "cms.columns=131072 is out of range"),
    ("cms", {"candidates": 1 << 20}, "cms.candidates=1048576 is out of range"),
    ("cms", {"rows": 9}, "cms.rows=9 is out of range"),
    ("precision", {"slots": 3000}, "precision.slots=3000 must be a power of two"),
    ("precision", {"stages": 0}, "precision.stages=0 is out of range"),
])
def test_bad_sizes_are_refused_and_nothing_is_deployed(bare, nf, params, message):
    ctl, name = bare
    with pytest.raises(CatalogError, match=message):
        ctl.deploy(name, nf, ["va"], params)
    assert ctl.deployment(name, nf) is None and ctl.instances(name) == []
    assert not list(ctl.target("xdp").node_pins(name).glob(f"{nf}@*"))
    assert "xdp" not in sh(name, "ip link show va")


def test_largest_sizes_fit_the_map_limits(bare):
    ctl, name = bare
    ctl.deploy(name, "cms", ["va"], {"rows": 8, "columns": 65536, "candidates": 65536})
    ctl.deploy(name, "precision", ["vb"], {"stages": 4, "slots": 65536})
    assert SketchEpochs(ctl, name, "cms").close().sketch["packets"].shape == (8, 65536)


def test_bad_statistics_requests_say_what_is_wrong(hh):
    ctl, name = hh
    with pytest.raises(StatsError, match=r"NF precision \(instance precision\) has no epochs"):
        SketchEpochs(ctl, name, "precision")
    with pytest.raises(StatsError, match=r"NF precision \(instance precision\) has no Count-Min sketch"):
        flow_estimate(ctl, name, "precision", Flow.of("10.0.0.1", "10.0.0.2"))
    with pytest.raises(StatsError, match="a sketch has banks 0 and 1, not 2"):
        flow_estimate(ctl, name, "cms", Flow.of("10.0.0.1", "10.0.0.2"), bank=2)
    with pytest.raises(StatsError, match="top-k needs k >= 1"):
        top_k([], 0)
    with pytest.raises(StatsError, match="counts packets only"):
        top_k([FlowCount(Flow.of("10.0.0.1", "10.0.0.2"), 5)], 1, by="bytes")
    with pytest.raises(StatsError, match="fraction must be in"):
        elephant_threshold(link_bps=1e9, fraction=2)
    with pytest.raises(StatsError, match="either in bytes/s or as a fraction"):
        elephant_threshold(bytes_per_s=1e6, link_bps=1e9, fraction=0.1)
    with pytest.raises(StatsError, match="duration must be positive"):
        rates([], 0)
    with pytest.raises(StatsError, match="lack the flow table field"):
        flow_counts({"packets": np.zeros(4)})


def test_an_instances_epochs_have_one_owner_across_processes(hh):
    """Closing an epoch is destructive: a second reader of the same cms is refused, in this
    process or another, naming the owner's pid; once the owner lets go, or dies, it may."""
    ctl, name = hh
    owner = SketchEpochs(ctl, name, "cms")
    with pytest.raises(StatsError, match=rf"cms on {name}: another reader \(pid {os.getpid()}\) closes its epochs"):
        SketchEpochs(ctl, name, "cms")
    code = ("from controller.service import Controller\nfrom controller.stats import SketchEpochs\n"
            f"SketchEpochs(Controller(), {name!r}, 'cms')")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert other.returncode != 0 and f"another reader (pid {os.getpid()})" in other.stderr
    owner.release()
    SketchEpochs(ctl, name, "cms").close()   # free again: taken, used, and let go with the object
    SketchEpochs(ctl, name, "cms").release()


def test_not_deployed_epochs(bare):
    ctl, name = bare
    with pytest.raises(TargetError, match=f"no NF instance 'cms' on {name}") as exc:
        SketchEpochs(ctl, name, "cms")
    assert f"innet nf deploy {name}" in exc.value.hint


# ---- BMv2 ----------------------------------------------------------------------------------------
P4_BURST = 24   # BMv2 reads a port through libpcap, whose ring holds 32 frames here (tests/test_p4_programs.py)
needs_bmv2 = pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))


@pytest.fixture(scope="module")
def p4hh():
    """A BMv2 switch running conservative cms and precision on its port p4a (frames sent from p4b)."""
    with namespace("p4h", [Veth("p4a", "p4b")], lo_up=True, ipv6=False) as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path, target="bmv2", kernel_slow_path=False))
        try:
            switch.start(ctl.scope, ns.name, ["p4a"], netns=ns.path)
            ctl.deploy(ns.name, "cms", ["p4a"], {**CMS_PARAMS, "conservative": 1})
            ctl.deploy(ns.name, "precision", ["p4a"])
            yield ctl, ns.name
        finally:
            try:
                for nf in ("precision", "cms"):
                    ctl.remove(ns.name, nf)
                ctl.forget_node(ns.name)
            finally:
                switch.stop(ctl.scope, ns.name)


def through_switch(ctl, name: str, frames: list[bytes], epochs: SketchEpochs) -> None:
    """Send the frames into p4a in bursts; wait until cms has counted them all."""
    bank = epochs.active_bank()
    before = int(ctl.read_registers(name, "cms", "totals")["packets"][bank])
    for i in range(0, len(frames), P4_BURST):
        traffic.send(ctl.node(name), "p4b", frames[i:i + P4_BURST])
    deadline = time.monotonic() + 10
    while int(ctl.read_registers(name, "cms", "totals")["packets"][bank]) - before < len(frames):
        assert time.monotonic() < deadline, "the switch did not count every frame within 10 s"
        time.sleep(0.1)
    time.sleep(0.2)   # a precision takeover's resubmitted pass may still be on its way


@needs_bmv2
def test_bmv2_estimates_and_tracked_flows_are_exact_when_nothing_collides(p4hh):
    """12 flows, IPv4 and IPv6, through conservative cms and precision on BMv2: the controller
    finds each flow's cells with the switch's CRC-32 hashes, and with 256 columns by 4 rows no
    flow collides in every row, so each estimate is the exact count; precision tracks all 12 in
    free slots and its key table names them with their counts."""
    ctl, name = p4hh
    flows = test_flows(12)
    sent = {f: n for f, n in zip(flows, (40, 25, 12, 9, 6, 5, 4, 3, 2, 2, 1, 1))}
    frames = [frame(f, 10) for f in flows for _ in range(sent[f])]
    random.Random(5).shuffle(frames)
    for stat in ("stages", "flows"):
        ctl.reset_registers(name, "precision", stat)
    epochs = SketchEpochs(ctl, name, "cms")
    epochs.restart()
    through_switch(ctl, name, frames, epochs)

    length = len(frame(flows[0], 10))
    for f in flows:
        assert flow_estimate(ctl, name, "cms", f) == FlowCount(f, sent[f], sent[f] * len(frame(f, 10)))
    assert flow_estimate(ctl, name, "cms", Flow.of("10.77.0.1", "10.77.0.2", 1, 2, 17)).packets == 0
    epoch = epochs.close()
    assert epoch.packets == len(frames) and epoch.bytes == sum(len(f) for f in frames)
    assert {c.flow: c.packets for c in flow_counts(epoch.flows)} == sent
    assert epoch.estimate(flows[0]).bytes == sent[flows[0]] * length

    tracked = {c.flow: c.packets for c in flow_counts(ctl.read_registers(name, "precision", "flows"))}
    assert tracked == sent
    assert {f.src.version for f in tracked} == {4, 6}


@needs_bmv2
def test_bmv2_conservative_update_never_undercounts(p4hh):
    """300 flows into 256 columns: collisions everywhere, and still no estimate below the exact count."""
    ctl, name = p4hh
    flows = test_flows(300)
    sent = {f: max(1, 120 // (i + 1)) for i, f in enumerate(flows)}
    frames = [frame(f) for f in flows for _ in range(sent[f])]
    random.Random(6).shuffle(frames)
    epochs = SketchEpochs(ctl, name, "cms")
    epochs.restart()
    through_switch(ctl, name, frames, epochs)
    epoch = epochs.close()
    assert epoch.packets == len(frames)
    assert epoch.sketch["packets"].sum(axis=1).max() < len(frames), "conservative rows skip cells"
    for f in flows:
        assert sent[f] <= epoch.estimate(f).packets <= sent[f] + math.e * len(frames) / CMS_PARAMS["columns"], f
    for c in flow_counts(epoch.flows):
        assert c.packets <= epoch.estimate(c.flow).packets


@needs_bmv2
def test_bmv2_state_memory_counts_the_bound_registers(p4hh):
    ctl, name = p4hh
    cms = state_memory(ctl, name, "cms")
    assert cms.target == "bmv2"
    regs = {m.name: (m.entries, m.entry_bytes) for m in cms.maps}
    cells, cands = 2 * 4 * 256, 2 * 1024
    assert regs["cms_packets"] == regs["cms_bytes"] == (cells, 8)
    assert regs["cand_src_addr_0"] == (cands, 4) and regs["cand_packets"] == (cands, 4)
    assert cms.bytes == cells * 16 + 4 + 2 * 16 + cands * (32 + 2 + 2 + 1 + 4 + 8)
    precision = state_memory(ctl, name, "precision")
    assert precision.bytes == 2048 * 8 + 512 * (32 + 2 + 2 + 1 + 4)
