"""The line test_sff.py and test_prio_chain.py run service chains on: h1 - r1a [r1] r1b - r2a [r2]
r2b - h2 in three throwaway namespaces (hosts in one), sff in front of nfrouter on every router
interface, rxcount on the hosts' interfaces, routes h1 <-> h2; the router-to-router link's MTU
leaves room for the NSH. Its `line` fixture is in conftest.py."""
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from controller.catalog import get_nf
from controller.dataplane import InstanceSpec
from controller.node import Node
from controller.routes import RouteService
from controller.service import Controller
from controller.stats import Flow, flow_counts, flow_table
from controller.tables import TableEntry
from controller.targets import chain
from controller.targets.chain import record_key
from frames import routed
from testbed import traffic
from testbed.scratch import NO_IPV6, sh

PORT = 7799
H1, R1A, R1B, R2A, R2B, H2 = "10.71.1.2", "10.71.1.1", "10.71.12.1", "10.71.12.2", "10.71.2.1", "10.71.2.2"
H1_6, H2_6 = "2001:db8:71:1::2", "2001:db8:71:2::2"
NSH_MTU = 1508   # the hosts' 1500 and the NSH's 8 bytes
# (interface, its namespace role, address, peer, peer's role, peer's address, MTU)
LINKS = [("h1", "h", f"{H1}/24", "r1a", "1", f"{R1A}/24", 1500),
         ("r1b", "1", f"{R1B}/24", "r2a", "2", f"{R2A}/24", NSH_MTU),
         ("r2b", "2", f"{R2B}/24", "h2", "h", f"{H2}/24", 1500)]
XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4




# ---- the line ---------------------------------------------------------------------------------
@contextmanager
def _namespaces():
    """Fresh namespaces h (hosts), 1 and 2 (routers) joined as LINKS says; deleted on exit."""
    tag = uuid.uuid4().hex[:6]
    names = {role: f"sfc{role}-{tag}" for role in ("h", "1", "2")}
    made = []
    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            sh(name, NO_IPV6)
        for a, ra, addr_a, b, rb, addr_b, mtu in LINKS:
            sh(names[ra], f"ip link add {a} mtu {mtu} type veth peer name {b} netns {names[rb]} && "
                          f"ip addr add {addr_a} dev {a} && ip link set {a} up")
            sh(names[rb], f"ip link set {b} mtu {mtu} && ip addr add {addr_b} dev {b} && ip link set {b} up")
        yield names
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False)


def classify(spi: int, src: str = H1, dst: str = H2, proto: int = 17, sport: int = 0, dport: int = 0,
             si: int = 255) -> TableEntry:
    return TableEntry("sfc_classify", {"src_addr": src, "dst_addr": dst, "proto": proto, "src_port": sport,
                                       "dst_port": dport}, "encap", {"spi": spi, "si": si})


def hop(spi: int, si: int, action: str, **params) -> TableEntry:
    return TableEntry("sfc_hops", {"spi": spi, "si": si}, action, params)


@dataclass
class Line:
    ctl: Controller
    r1: str
    r2: str
    hosts: str
    macs: dict   # interface -> MAC, every namespace

    def frame(self, sport: int = 1000, proto: str = "udp", size: int | None = None, reverse: bool = False,
              v6: bool = False, payload: bytes = b"sfc") -> bytes:
        """h1 -> h2 as h1 sends it to r1 (reverse: h2 -> h1 as h2 sends it to r2); `size`: IP length."""
        src, dst = (H2_6, H1_6) if v6 and reverse else (H1_6, H2_6) if v6 else (H2, H1) if reverse else (H1, H2)
        eth = Ether(src=self.macs["h2"], dst=self.macs["r2b"]) if reverse else \
            Ether(src=self.macs["h1"], dst=self.macs["r1a"])
        ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst, ttl=64)
        l4 = TCP(sport=sport, dport=PORT) if proto == "tcp" else UDP(sport=sport, dport=PORT)
        if size is not None:
            payload = b"x" * (size - len(ip / l4))
        return bytes(eth / ip / l4 / payload)

    def delivered(self, frame: bytes, reverse: bool = False) -> bytes:
        """`frame` as the destination receives it through the chain: routed once, by the egress
        router's nfrouter after decapsulation."""
        if reverse:
            return routed(frame, src_mac=self.macs["r1a"], dst_mac=self.macs["h1"])
        return routed(frame, src_mac=self.macs["r2b"], dst_mac=self.macs["h2"])

    def send(self, frames: list[bytes], reverse: bool = False, timeout: float = 1.0,
             count: int | None = None) -> list[bytes]:
        """Send from h1 (reverse: h2); what reaches the other host's port PORT."""
        at, to = ("h2", "h1") if reverse else ("h1", "h2")
        hosts = self.ctl.node(self.hosts)
        cap = traffic.Capture(hosts, to, f"dst port {PORT}", timeout=timeout,
                              count=len(frames) if count is None else count, absorb_udp=PORT)
        traffic.send(hosts, at, frames)
        return cap.frames()

    def write(self, node: str, *entries: TableEntry) -> None:
        self.ctl.write(node, "sff", list(entries))

    def verdicts(self, node: str) -> dict[str, int]:
        return self.ctl.read_stat(node, "sff", "verdicts")

    def hops(self, node: str) -> dict[tuple[int, int], int]:
        """(spi, si) -> packets that matched the sfc_hops entry."""
        return {(c.entry.match["spi"], c.entry.match["si"]): c.packets
                for c in self.ctl.read_counters(node, "sff", "sfc_hops")}

    def routed_plainly(self, node: str) -> int:
        return self.ctl.read_stat(node, "nfrouter", "verdicts")["forwarded"]

    def behind(self, node: str, nf: str, slot: int, params: dict | None = None, forwarder: str = "sff"):
        """Run NF `nf` (instance id `nf`) behind the node's forwarder, in `slot`."""
        return self.ctl.plane(node).apply(InstanceSpec(nf, nf, "xdp", (), params or {}, behind=(forwarder, slot)))

    def counted(self, node: str, nf: str) -> dict[Flow, int]:
        return {c.flow: c.packets for c in flow_counts(self.ctl.read_registers(node, nf, flow_table(get_nf(nf))))}

    def pin(self, node: str, instance: str):
        return self.ctl.target("xdp").pin_dir(self.ctl.node(node), instance)

    def prog_id(self, node: str, instance: str) -> int:
        return self.ctl.records.get(node, record_key(instance))["prog_id"]

    def slots(self, node: str) -> dict[int, int]:
        """The forwarder's NF slots: slot -> program id."""
        return chain.program_slots(self.pin(node, "sff"), "sfc_nfs")

    def problem(self, node: str, instance: str) -> str | None:
        return self.ctl.target("xdp").deployment(self.ctl.node(node), instance).problem

    def gone(self, node: str, instance: str) -> bool:
        pins = self.ctl.target("xdp").node_pins(node)
        return self.ctl.records.get(node, record_key(instance)) is None and not list(pins.glob(f"{instance}@*"))


@contextmanager
def sff_line():
    """The line, its forwarders and routers deployed and routed; torn down and checked after."""
    with _namespaces() as ns:
        ctl = Controller()
        nodes = {role: ctl.add_node(Node(name, f"/var/run/netns/{name}")) for role, name in ns.items()}
        macs = {i: v["mac"] for n in nodes.values() for i, v in n.interfaces().items() if i != "lo"}
        t = Line(ctl, ns["1"], ns["2"], ns["h"], macs)
        try:
            ctl.deploy(t.hosts, "rxcount", ["h1", "h2"])
            for r, ifaces in ((t.r1, ["r1a", "r1b"]), (t.r2, ["r2a", "r2b"])):
                ctl.deploy(r, "nfrouter", ifaces)
                ctl.deploy(r, "sff", ifaces)   # at the head of the hook: in front of nfrouter
            routes = RouteService(ctl)
            routes.add(t.r1, f"{H1}/32", "r1a", macs["h1"])
            routes.add(t.r1, "10.71.2.0/24", "r1b", macs["r2a"], via=R2A)
            routes.add(t.r2, f"{H2}/32", "r2b", macs["h2"])
            routes.add(t.r2, "10.71.1.0/24", "r2a", macs["r1b"], via=R1B)
            yield t
        finally:
            for name in ns.values():
                ctl.forget_node(name)
            left = [n for n in ns.values() if ctl.target("xdp").node_pins(n).exists() or n in ctl.records.nodes()]
    assert not left, f"pins or records left behind on {left}"
