"""Several NFs on one XDP hook, chained by tail calls (ebpf/include/chain.h, controller/targets/chain.py).

A router namespace holds xa and xc, their peers xb and xd sit in a second namespace. NFRouter
on the router forwards 10.62.0.0/16 from xa out of xc; rxcount on xd lets the veth take the
redirected frames in, where a capture checks their bytes. Real frames are sent from xb, and
each NF's own maps say what it saw. IPv6 is off, so every frame is one the test sent.
"""
import time
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from controller.bpf import libbpf
from controller.bpf.build import EBPF_DIR, compile_program
from controller.catalog import CATALOG_DIR, load_nf
from controller.errors import BpfError, TargetError
from controller.netns import netns
from controller.node import Node
from controller.routes import RouteService
from controller.service import Controller
from controller.stats import Flow, FlowMonitor, read_flows
from controller.targets import xdp as xdp_target
from controller.targets.chain import NodeChains, record_key
from controller.targets.xdp import XdpHook
from frames import routed
from testbed import traffic
from testbed.scratch import Veth, namespace

pytestmark = pytest.mark.needs_root

PORT = 7777
NFS = ("precision", "cms", "nfrouter", "rxcount")


@dataclass
class Router:
    ctl: Controller
    name: str      # the router's node
    peer: str      # the node holding xb and xd
    macs: dict     # interface -> MAC, both namespaces

    def frame(self, src: str = "10.61.1.2", sport: int = 1000, payload: bytes = b"chain") -> bytes:
        return bytes(Ether(src=self.macs["xb"], dst=self.macs["xa"]) / IP(src=src, dst="10.62.0.5", ttl=64)
                     / UDP(sport=sport, dport=PORT) / payload)

    def routed(self, frame: bytes) -> bytes:
        return routed(frame, src_mac=self.macs["xc"], dst_mac=self.macs["xd"])

    def add_route(self) -> None:
        RouteService(self.ctl).add(self.name, "10.62.0.0/16", "xc", self.macs["xd"], via="10.61.2.2")

    def through(self, frames: list[bytes]) -> list[bytes]:
        """Send frames from xb into xa; what leaves xc (seen on xd)."""
        cap = traffic.Capture(self.ctl.node(self.peer), "xd", f"udp dst port {PORT}", timeout=1.0,
                              count=len(frames))
        traffic.send(self.ctl.node(self.peer), "xb", frames)
        return cap.frames()

    def chains(self) -> NodeChains:
        return NodeChains(self.name, self.ctl.records, self.ctl.target("xdp").node_pins(self.name))

    def chain_on(self, ifname: str) -> list[str]:
        """The NFs a packet arriving on `ifname` meets, in order: read from the hook and the records."""
        with netns(self.ctl.node(self.name).netns), IPRoute() as ipr:
            prog_id = XdpHook.prog_id(ipr, ipr.link_lookup(ifname=ifname)[0])
        return self.chains().walk(prog_id)

    def counted(self, nf: str) -> dict[Flow, int]:
        return {c.flow: c.packets for c in read_flows(self.ctl, self.name, nf)}

    def forwarded(self) -> int:
        return self.ctl.read_stat(self.name, "nfrouter", "verdicts")["forwarded"]

    def prog_id(self, nf: str) -> int:
        return self.ctl.records.get(self.name, record_key(nf))["prog_id"]

    def pins(self, nf: str) -> list:
        """The pin directories of instance `nf` (one per generation found)."""
        return list(self.ctl.target("xdp").node_pins(self.name).glob(f"{nf}@*"))

    def gone(self, nf: str) -> bool:
        """Nothing of instance `nf` is left: no pins, no record, no desired instance."""
        return not self.pins(nf) and self.ctl.records.get(self.name, record_key(nf)) is None \
            and self.ctl.store.instance(self.name, nf) is None

    def hooks(self) -> dict[str, int | None]:
        with netns(self.ctl.node(self.name).netns), IPRoute() as ipr:
            return {i: XdpHook.prog_id(ipr, ipr.link_lookup(ifname=i)[0]) for i in ("xa", "xc")}


@pytest.fixture
def router():
    veths = [Veth("xa", "xb", "10.61.1.1/24", "10.61.1.2/24"), Veth("xc", "xd", "10.61.2.1/24", "10.61.2.2/24")]
    with namespace("xc", veths, peers_apart=True, ipv6=False) as ns:
        ctl = Controller()
        node, peer = ctl.add_node(Node(ns.name, ns.path)), ctl.add_node(Node(ns.peer, f"/var/run/netns/{ns.peer}"))
        macs = {i: v["mac"] for n in (node, peer) for i, v in n.interfaces().items()}
        r = Router(ctl, ns.name, ns.peer, macs)
        ctl.deploy(peer.name, "rxcount", ["xd"])
        ctl.deploy(node.name, "nfrouter", ["xa", "xc"])
        r.add_route()
        try:
            yield r
        finally:
            try:
                for nf in NFS:
                    ctl.remove(node.name, nf)
                ctl.remove(peer.name, "rxcount")
                left = leftovers(ctl, node.name)
            finally:
                for n in (node.name, peer.name):
                    ctl.forget_node(n)
        assert not left, "pins or records left behind"


def leftovers(ctl: Controller, node: str) -> list:
    """The node's pin directory, and its records or counter slots in the scope's database."""
    pins = ctl.target("xdp").node_pins(node)
    return ([pins] if pins.exists() else []) + ([f"records of {node}"] if node in ctl.records.nodes() else [])


def flows(n: int) -> list[tuple[Flow, int]]:
    """(flow, sport) of n flows from xb's subnet."""
    return [(Flow.of("10.61.1.2", "10.62.0.5", 2000 + i, PORT, 17), 2000 + i) for i in range(n)]


def send_counted(r: Router, n_flows: int = 3, per_flow: int = 5) -> tuple[list[bytes], list[bytes], dict]:
    """Send per_flow frames of each flow; (sent, received on xd, flow -> frames sent)."""
    sent, by_flow = [], {}
    for flow, sport in flows(n_flows):
        by_flow[flow] = per_flow
        sent += [r.frame(sport=sport)] * per_flow
    got = r.through(sent)
    time.sleep(0.05)
    return sent, got, by_flow


def test_cms_in_front_of_nfrouter_counts_and_the_router_forwards(router):
    r = router
    before = r.hooks()
    r.ctl.deploy(r.name, "cms")   # every interface of the node, as `innet nf deploy <node> cms`
    assert r.chain_on("xa") == r.chain_on("xc") == ["cms", "nfrouter"]
    assert r.hooks() != before, "cms is the program on the hooks now"
    forwarded = r.forwarded()
    sent, got, by_flow = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent), "nfrouter forwards every frame, bytes as routed"
    assert r.forwarded() - forwarded == len(sent)
    assert r.counted("cms") == by_flow, "cms counts every frame before nfrouter forwards it"


def test_three_deep_then_remove_the_middle_then_the_head(router):
    r = router
    r.ctl.deploy(r.name, "cms", ["xa"])
    r.ctl.deploy(r.name, "precision", ["xa"])
    assert r.chain_on("xa") == ["precision", "cms", "nfrouter"], "the latest pass-through NF at the head"
    assert r.chain_on("xc") == ["nfrouter"]
    sent, got, by_flow = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent)
    assert r.counted("cms") == by_flow and r.counted("precision") == by_flow

    assert r.ctl.remove(r.name, "cms")
    assert r.chain_on("xa") == ["precision", "nfrouter"]
    assert r.gone("cms")
    sent, got, _ = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent), "forwarding goes on without the middle NF"
    assert r.counted("precision") == {f: 2 * n for f, n in by_flow.items()}, "precision keeps counting"

    assert r.ctl.remove(r.name, "precision")
    assert r.hooks()["xa"] == r.prog_id("nfrouter"), "nfrouter is attached to xa again"
    sent, got, _ = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent), "nfrouter alone still forwards"

    assert r.ctl.remove(r.name, "nfrouter")   # its routes go with it
    assert r.hooks() == {"xa": None, "xc": None}
    assert not leftovers(r.ctl, r.name)


def test_removing_the_router_keeps_cms_and_a_new_router_goes_behind_it(router):
    r = router
    r.ctl.deploy(r.name, "cms", ["xa", "xc"])
    assert r.ctl.remove(r.name, "nfrouter")   # its routes go with it, from the kernel FIB too
    assert r.chain_on("xa") == ["cms"]
    sent, got, by_flow = send_counted(r)
    assert got == [], "nothing forwards without the router: the frames go to the kernel, which does not"
    assert r.counted("cms") == by_flow, "cms counts on alone"

    r.ctl.deploy(r.name, "nfrouter", ["xa", "xc"])   # a terminal NF goes behind the pass-through ones
    r.add_route()
    assert r.chain_on("xa") == r.chain_on("xc") == ["cms", "nfrouter"]
    sent, got, _ = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent)
    assert r.counted("cms") == {f: 2 * n for f, n in by_flow.items()}


def test_redeploys_are_idempotent(router):
    r = router
    r.ctl.deploy(r.name, "cms", ["xa"])
    hooks = r.hooks()
    ids = {nf: r.prog_id(nf) for nf in ("cms", "nfrouter")}
    for nf, ifaces in (("cms", ["xa"]), ("nfrouter", ["xa", "xc"]), ("cms", ["xa"])):
        r.ctl.deploy(r.name, nf, ifaces)
    assert r.hooks() == hooks
    assert {nf: r.prog_id(nf) for nf in ("cms", "nfrouter")} == ids
    assert r.chain_on("xa") == ["cms", "nfrouter"]
    sent, got, by_flow = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent)
    assert r.counted("cms") == by_flow


def test_a_changed_program_takes_its_places_in_the_chain(router, tmp_path):
    """cms reloaded from changed source in the middle of precision -> cms -> nfrouter: the new
    program replaces the old one in precision's chain_next. It is a new generation: its maps
    start empty (Deployment.cleared says so) and the old generation's pins are gone."""
    r = router
    r.ctl.deploy(r.name, "cms", ["xa"])
    r.ctl.deploy(r.name, "precision", ["xa"])
    sent, _, by_flow = send_counted(r)
    old_id, (old_pin,) = r.prog_id("cms"), r.pins("cms")
    (tmp_path / "include").symlink_to(EBPF_DIR / "include")
    (tmp_path / "cms.bpf.c").write_text((EBPF_DIR / "cms.bpf.c").read_text() + "/* changed */\n")
    entry = (CATALOG_DIR / "cms.yaml").read_text().replace("source: ebpf/cms.bpf.c", f"source: {tmp_path}/cms.bpf.c")
    (tmp_path / "cms.yaml").write_text(entry)
    d = r.ctl.deploy(r.name, load_nf(tmp_path / "cms.yaml"), ["xa"])
    assert d.cleared == ("cms",), "a changed program's maps are new"
    assert r.prog_id("cms") != old_id
    assert [p.name for p in r.pins("cms")] != [old_pin.name] and not old_pin.exists()
    assert r.chain_on("xa") == ["precision", "cms", "nfrouter"]
    assert r.chains().next_id("precision") == r.prog_id("cms")
    assert r.counted("cms") == {}, "the new maps start empty"
    sent, got, _ = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent)
    assert r.counted("cms") == by_flow, "the new program counts what came after it"
    assert r.counted("precision") == {f: 2 * n for f, n in by_flow.items()}, "precision kept its maps"


def test_a_foreign_program_is_refused(router):
    r = router
    obj = libbpf.BpfObject(str(compile_program("ebpf/xdp_pass.bpf.c"))).load()   # no innet deployment's
    try:
        with netns(r.ctl.node(r.name).netns), IPRoute() as ipr:
            XdpHook.attach(ipr, r.ctl.node(r.name), "xa", ipr.link_lookup(ifname="xa")[0],
                           obj.programs["xdp_pass"])
    finally:
        obj.close()
    with pytest.raises(TargetError, match="xa already runs XDP program id .*, not this deployment's") as exc:
        r.ctl.deploy(r.name, "cms", ["xa"])
    assert "xdp off" in exc.value.hint
    assert r.gone("cms")


def test_two_terminal_nfs_are_refused_clearly(router, tmp_path):
    r = router
    # rxcount without `chain: pass`: an NF that cannot be followed, like nfrouter
    (tmp_path / "sink.yaml").write_text("name: sink\nprograms:\n  xdp: {source: ebpf/xdp_pass.bpf.c, entry: xdp_pass}\n")
    sink = load_nf(tmp_path / "sink.yaml")
    hooks = r.hooks()
    refused = "already runs nfrouter, which cannot be followed: sink and nfrouter"
    with pytest.raises(TargetError, match=refused) as exc:
        r.ctl.deploy(r.name, sink, ["xa"])
    assert f"innet nf remove {r.name} nfrouter" in exc.value.hint
    assert r.hooks() == hooks
    assert r.gone("sink")
    sent, got, _ = send_counted(r)
    assert sorted(got) == sorted(r.routed(f) for f in sent)


def test_a_pass_through_nf_joins_one_chain_at_a_time(router):
    r = router
    r.ctl.deploy(r.name, "cms", ["xa"])
    with pytest.raises(TargetError, match="would join different chains: xa runs cms -> nfrouter; xc runs nfrouter"):
        r.ctl.deploy(r.name, "precision", ["xa", "xc"])
    assert r.gone("precision")
    assert r.chain_on("xa") == ["cms", "nfrouter"] and r.chain_on("xc") == ["nfrouter"]


@pytest.mark.parametrize("step", ["pin", "record"])
@pytest.mark.parametrize("first, then", [("nfrouter", "cms"), ("cms", "nfrouter")])
def test_a_failed_deploy_puts_the_chain_back(router, monkeypatch, first, then, step):
    """A failure pinning the program (now done before it runs anywhere) or at the last step,
    writing the records after every hook and chain_next slot is set (cms's record is the last
    written either way: its own, or its `next` when nfrouter goes behind it), leaves hooks,
    chain_next slots, records and desired state as they were."""
    r = router
    if first == "cms":   # cms alone first: nfrouter will be deployed behind it
        r.ctl.remove(r.name, "nfrouter")
        r.ctl.deploy(r.name, "cms", ["xa", "xc"])
    hooks = r.hooks()
    chain = r.chain_on("xa")
    records = r.ctl.records.items(r.name)

    def failing_pin(fd, path):
        raise BpfError(f"pinning {path}: injected failure")

    put = r.ctl.records.put

    def failing_put(node, key, value):
        put(node, key, value)   # written in the deploy's transaction, then the deploy fails
        if key == record_key("cms"):
            raise BpfError(f"writing {key}: injected failure")

    if step == "pin":
        monkeypatch.setattr(xdp_target.libbpf, "pin", failing_pin)
    else:
        monkeypatch.setattr(r.ctl.records, "put", failing_put)
    with pytest.raises(BpfError, match=("pinning" if step == "pin" else "writing") + ".*injected failure"):
        r.ctl.deploy(r.name, then, ["xa", "xc"])
    monkeypatch.undo()
    assert r.hooks() == hooks and r.chain_on("xa") == chain
    assert r.gone(then) and r.ctl.records.items(r.name) == records
    if first == "cms":
        assert r.chains().next_id("cms") is None and r.chains().metas["cms"]["next"] is None
    else:
        sent, got, _ = send_counted(r)
        assert sorted(got) == sorted(r.routed(f) for f in sent), "the router forwards as before"


# ---- Mininet: heavy hitters on an XDP router ------------------------------------------------
@pytest.mark.testbed
def test_cms_on_an_xdp_router_finds_the_top_flow(linear):
    from frames import H1, H1_MAC, H2, R1_IN_MAC
    from frames import PORT as H2_PORT

    tb = linear
    tb.controller.deploy("r1", "cms")
    try:
        assert tb.controller.deployment("r1", "cms").interfaces == ("r1-eth0", "r1-eth1")
        monitor = FlowMonitor(tb.controller, "r1", "cms", k=3)
        monitor.start()
        sizes = {5000: 40, 5001: 10, 5002: 5}   # source port -> frames
        frames = [bytes(Ether(src=H1_MAC, dst=R1_IN_MAC) / IP(src=H1, dst=H2) / UDP(sport=sport, dport=H2_PORT)
                        / b"hh") for sport, n in sizes.items() for _ in range(n)]
        cap = traffic.Capture(tb.node("h2"), "h2-eth0", f"udp dst port {H2_PORT}", timeout=1.5,
                              count=len(frames), absorb_udp=H2_PORT)
        traffic.send(tb.node("h1"), "h1-eth0", frames)
        assert len(cap.frames()) == len(frames), "nfrouter behind cms forwards every frame to h2"
        top = monitor.sample().flows
        assert [(r.flow, r.packets) for r in top] == \
            [(Flow.of(H1, H2, sport, H2_PORT, 17), n) for sport, n in sizes.items()]
    finally:
        tb.controller.remove("r1", "cms")
