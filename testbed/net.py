"""Bring a topology up in Mininet, with the controller driving its routers.

XDP routers are Mininet hosts with kernel forwarding on (the slow path); the controller runs
NFRouter on their interfaces (the fast path) and installs every route in both. BMv2 routers
are Mininet hosts running simple_switch_grpc (testbed.bmv2): the controller pushes NFRouter's
pipeline and the same routes; their kernel takes no part, so neighbours get permanent
neighbour entries for them. Interfaces that face a native-XDP router, and do not run XDP
themselves, run `rxcount`, because a veth only accepts XDP-redirected frames when its peer
runs an XDP program. A link with a bandwidth that ends at an XDP router runs through a link
emulator (testbed.linkemu), because XDP redirects skip the qdiscs that would shape it; with
`tap_links`, so does every link between routers, unshaped unless it has a bandwidth, so that
captures on the emulator's ports see what routers send each other.
"""
from __future__ import annotations

import logging
import os
import signal
import time

from mininet.link import Link, TCLink
from mininet.net import Mininet
from mininet.node import Host

from controller.errors import InnetError, TopologyError
from controller.node import Node
from controller.p4 import switch
from controller.routes import ROUTER as ROUTER_NF
from controller.routes import Route, RouteService
from controller.scope import ScopeError
from controller.service import Controller
from controller.topology import TopoLink, Topology
from testbed import linkemu
from testbed.bmv2 import Bmv2Router
from testbed.leftovers import alive

log = logging.getLogger("innet.testbed")
RX_NF = "rxcount"
CHAIN_LINK_MTU = 1508   # hosts' 1500 and NSH's 8 bytes (nfs/sff.yaml: a frame that does not fit is dropped)


class Router(Host):
    """A Linux router: kernel IPv4/IPv6 forwarding on."""
    kernel_stack = True

    def config(self, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        return result


class Testbed:
    def __init__(self, topology: Topology, controller: Controller | None = None, progress=print,
                 tap_links: bool = False):
        self.topo = topology
        self.tap_links = tap_links   # every router-to-router link through a link emulator, to capture on
        self.controller = controller or Controller()
        self.routes = RouteService(self.controller)
        self.net: Mininet | None = None
        self.progress = progress
        self._scope_fd: int | None = None   # the scope's testbed lock, held while the testbed runs
        self.host_pids: dict[str, int] = {}   # node -> its Mininet shell, to check teardown against
        self.emulators: dict[str, TopoLink] = {}   # link emulator (testbed.linkemu) -> the link it carries

    # ---- life cycle ------------------------------------------------------------------
    def start(self, deploy: bool = True) -> "Testbed":
        if os.geteuid() != 0:
            raise InnetError("the testbed needs root (Mininet and XDP)", hint="run it with sudo")
        self._hold_scope()
        self.progress(f"[testbed] building {self.topo.name}: {len(self.topo.nodes)} nodes, {len(self.topo.links)} links "
                      f"(scope {self.controller.scope.name})")
        try:
            self.controller.store.set_testbed(self.topo.name, os.getpid(), self.topo.to_doc())
            self._build()
            if deploy:
                self.deploy_routers()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        net = self.net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False, waitConnected=False)
        for n in self.topo.nodes.values():
            net.addHost(n.name, cls=ROUTER_CLASSES[n.target] if n.role == "router" else Host, ip=None)
        emulated = {link.index for link in linkemu.emulated(self.topo, self.tap_links)}
        for link in self.topo.links:
            if link.index in emulated:
                self.emulators[linkemu.add_emulated_link(net, self.topo, link)] = link
                continue
            extra = {"cls": TCLink, "bw": link.bw} if link.bw else {"cls": Link}
            net.addLink(link.a.node, link.b.node, intfName1=link.a.name, intfName2=link.b.name,
                        addr1=link.a.mac, addr2=link.b.mac, **extra)
        net.build()
        self.host_pids = {h.name: h.pid for h in net.hosts}
        for link in self.topo.links:   # between routers, room for a service chain's NSH (8 bytes)
            if {self.topo.nodes[link.a.node].role, self.topo.nodes[link.b.node].role} == {"router"}:
                for end in (link.a, link.b):
                    net[end.node].cmd(f"ip link set dev {end.name} mtu {CHAIN_LINK_MTU}")
        for name, link in self.emulators.items():
            routers = {self.topo.nodes[link.a.node].role, self.topo.nodes[link.b.node].role} == {"router"}
            net[name].bridge(linkemu.ports(name), CHAIN_LINK_MTU if routers else 1500, shaped=bool(link.bw))
            self.controller.add_node(Node(name, f"/proc/{net[name].pid}/ns/net", linkemu.ROLE, "xdp",
                                          kernel_slow_path=False))
        for n in self.topo.nodes.values():
            host = net[n.name]
            for iface in n.interfaces:
                # checksums must be complete before a frame meets an XDP redirect
                host.cmd(f"ethtool -K {iface.name} tx off >/dev/null 2>&1")
            if _kernel_stack(host):
                host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.accept_dad=0")
                for iface in n.interfaces:
                    host.cmd(f"ip addr add {iface.ipv4} dev {iface.name}")
                    host.cmd(f"ip -6 addr add {iface.ipv6} dev {iface.name} nodad")
            else:
                self.progress(f"[testbed] starting the BMv2 switch of {n.name}")
                host.start_switch(self.controller.scope, [i.name for i in n.interfaces], progress=self.progress)
            if n.role == "host":
                # a new namespace may inherit forwarding from the root one: hosts must not route
                host.cmd("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0")
                gw = self.topo.gateway(n.name)
                if not _kernel_stack(net[gw.node]):   # nothing there answers ARP or ND
                    host.cmd(f"ip neigh replace {gw.ipv4.ip} lladdr {gw.mac} dev {gw.peer.name} nud permanent")
                    host.cmd(f"ip -6 neigh replace {gw.ipv6.ip} lladdr {gw.mac} dev {gw.peer.name} nud permanent")
                host.cmd(f"ip route add default via {gw.ipv4.ip}")
                host.cmd(f"ip -6 route add default via {gw.ipv6.ip}")
            target = n.target if n.role == "router" else "xdp"
            self.controller.add_node(Node(n.name, f"/proc/{host.pid}/ns/net", n.role, target,
                                          kernel_slow_path=_kernel_stack(host)))

    def deploy_routers(self) -> None:
        """NFRouter on every router, rxcount where XDP routers redirect into, and all static routes."""
        if self.emulators:
            self.progress(f"[testbed] {len(self.emulators)} link emulator(s) carry links, shaped where the link has a "
                          f"bandwidth: {', '.join(_emulated_link(n, l) for n, l in self.emulators.items())}")
        for name, interfaces in self._receivers().items():
            # on a BMv2 router's node, rxcount runs in XDP beside the switch, on its kernel's view
            self.controller.deploy(name, RX_NF, interfaces, target="xdp")
        for r in self.topo.routers:
            self.progress(f"[testbed] deploying {ROUTER_NF} on {r.name} ({r.target}: "
                          f"{', '.join(i.name for i in r.interfaces)})")
            self.controller.deploy(r.name, ROUTER_NF, [i.name for i in r.interfaces])
            routes = self.topo.static_routes(r.name)
            self.progress(f"[testbed] installing {len(routes)} routes on {r.name}")
            self.routes.add_many(r.name, [Route(x.prefix, x.interface, x.mac, x.via, x.local) for x in routes])

    def _receivers(self) -> dict[str, list[str]]:
        """node -> its interfaces that face an XDP router but do not run NFRouter in XDP themselves
        (a link emulator's port among them)."""
        out: dict[str, list[str]] = {}
        emulated = {(end.node, end.name): (name, port) for name, link in self.emulators.items()
                    for end, port in zip((link.a, link.b), linkemu.ports(name))}
        for r in self.topo.routers:
            if r.target != "xdp":
                continue
            for iface in r.interfaces:
                if (r.name, iface.name) in emulated:   # the emulator's port faces the router
                    emulator, port = emulated[(r.name, iface.name)]
                    out.setdefault(emulator, []).append(port)
                    continue
                peer = self.topo.nodes[iface.peer.node]
                if not (peer.role == "router" and peer.target == "xdp"):
                    out.setdefault(peer.name, []).append(iface.peer.name)
        return out

    def stop(self) -> None:
        """Remove every NF and switch, then the network: no namespace, link, pin or process is left.
        A testbed that never took its scope (refused: another one runs there) touches nothing."""
        if self._scope_fd is None:
            return
        self.controller.store.clear_services()   # their rules and instances go with the nodes below
        self.controller.store.clear_paths()      # so do the path allocator's overrides
        for name in [*self.topo.nodes, *self.emulators]:
            if name in self.controller.nodes:
                try:
                    self.controller.forget_node(name)
                except InnetError as exc:
                    log.warning("removing what runs on %s: %s", name, exc)
        if self.net is not None:
            self.progress(f"[testbed] stopping {self.topo.name}")
            for host in self.net.hosts:
                if isinstance(host, Bmv2Router):
                    host.stop_switch()
            self.net.stop()
            self.net = None
        self.controller.scope.drop_empty_pin_root()
        if self._scope_fd is not None:
            self.controller.store.clear_testbed()
            os.close(self._scope_fd)
            self._scope_fd = None

    def _hold_scope(self) -> None:
        """Take the scope for this testbed: refuse if a live testbed holds it, clear one that died."""
        scope = self.controller.scope
        fd = scope.try_hold_testbed()
        if fd is None:
            running = self.controller.store.testbed() or {}
            raise ScopeError(f"scope '{scope.name}' already runs testbed {running.get('topology', '?')} "
                             f"(pid {running.get('pid', '?')}); nothing was changed",
                             hint="stop that one first (Ctrl-C or kill -TERM its pid), or bring this one up in "
                                  "another scope: innet --scope NAME up ...")
        self._scope_fd = fd
        for line in clear_stale(self.controller):
            self.progress(f"[testbed] {line}")

    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- access ----------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.controller.node(name)

    def host(self, name: str):
        if self.net is None or name not in self.net:
            raise TopologyError(f"the testbed has no running node '{name}'")
        return self.net[name]


ROUTER_CLASSES = {"xdp": Router, "bmv2": Bmv2Router}


def _emulated_link(emulator: str, link: TopoLink) -> str:
    return f"{emulator} ({link.a.node}-{link.b.node}, {f'{link.bw:g} Mbit/s' if link.bw else 'unshaped, tapped'})"


def clear_stale(controller: Controller) -> list[str]:
    """What a testbed killed without teardown left in its scope (its node processes, BMv2
    switches, programs, pins and desired state), removed. Call it while holding the scope's
    testbed lock, or when no live process holds it."""
    report = []
    stale = controller.store.testbed()
    for name, node in controller.nodes.items():
        pid = _node_pid(node)
        if stale is not None and pid and _is_mininet(pid, name):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
            report.append(f"killed {name}'s leftover Mininet process {pid}")
        if switch.stop(controller.scope, name):
            report.append(f"stopped {name}'s leftover BMv2 switch")
        if stale is not None or (node.netns and not os.path.exists(node.netns)):
            report += [f"{name}: {line}" for line in controller.forget_node(name)]
            report.append(f"{name}: dropped from the desired state")
    controller.scope.drop_empty_pin_root()
    if stale is not None:
        controller.store.clear_services()
        controller.store.clear_paths()
        controller.store.clear_testbed()
        report.append(f"cleared testbed {stale['topology']} of pid {stale['pid']}, which ended without teardown")
    return report


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _node_pid(node: Node) -> int | None:
    parts = (node.netns or "").split("/")
    return int(parts[2]) if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() else None


def _is_mininet(pid: int, name: str) -> bool:
    try:
        return f"mininet:{name}".encode() in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def _kernel_stack(host) -> bool:
    """Whether the node's kernel holds its addresses and answers for it (a plain Host does)."""
    return getattr(host, "kernel_stack", True)
