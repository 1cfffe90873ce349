"""Bring a topology up in Mininet, with the controller driving its routers.

XDP routers are Mininet hosts with kernel forwarding on (the slow path); the controller runs
NFRouter on their interfaces (the fast path) and installs every route in both. BMv2 routers
are Mininet hosts running simple_switch_grpc (testbed.bmv2): the controller pushes NFRouter's
pipeline and the same routes; their kernel takes no part, so neighbours get permanent
neighbour entries for them. Interfaces that face a native-XDP router, and do not run XDP
themselves, run `rxcount`, because a veth only accepts XDP-redirected frames when its peer
runs an XDP program.
"""
from __future__ import annotations

import logging
import os

from mininet.link import Link, TCLink
from mininet.net import Mininet
from mininet.node import Host

from controller.catalog import get_nf, load_catalog
from controller.core import NODES_FILE, Controller
from controller.errors import InnetError, TopologyError
from controller.node import Node
from controller.routes import NF as ROUTER_NF
from controller.routes import RouteService
from controller.topology import Topology
from testbed.bmv2 import Bmv2Router

log = logging.getLogger("innet.testbed")
RX_NF = "rxcount"


class Router(Host):
    """A Linux router: kernel IPv4/IPv6 forwarding on."""
    kernel_stack = True

    def config(self, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        return result


class Testbed:
    def __init__(self, topology: Topology, controller: Controller | None = None, progress=print):
        self.topo = topology
        self.controller = controller or Controller()
        self.routes = RouteService(self.controller)
        self.net: Mininet | None = None
        self.progress = progress

    # ---- life cycle ------------------------------------------------------------------
    def start(self, deploy: bool = True) -> "Testbed":
        if os.geteuid() != 0:
            raise InnetError("the testbed needs root (Mininet and XDP)", hint="run it with sudo")
        self.progress(f"[testbed] building {self.topo.name}: {len(self.topo.nodes)} nodes, {len(self.topo.links)} links")
        try:
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
        for link in self.topo.links:
            extra = {"cls": TCLink, "bw": link.bw} if link.bw else {"cls": Link}
            net.addLink(link.a.node, link.b.node, intfName1=link.a.name, intfName2=link.b.name,
                        addr1=link.a.mac, addr2=link.b.mac, **extra)
        net.build()
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
                host.start_switch([i.name for i in n.interfaces], progress=self.progress)
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
        self.controller.save_nodes()

    def deploy_routers(self) -> None:
        """NFRouter on every router, rxcount where XDP routers redirect into, and all static routes."""
        for name, interfaces in self._receivers().items():
            rx = self._rx_node(name)
            self.controller.target(rx).deploy(rx, get_nf(RX_NF), interfaces)
        for r in self.topo.routers:
            self.progress(f"[testbed] deploying {ROUTER_NF} on {r.name} ({r.target}: "
                          f"{', '.join(i.name for i in r.interfaces)})")
            self.controller.deploy(r.name, ROUTER_NF, [i.name for i in r.interfaces])
            routes = self.topo.static_routes(r.name)
            self.progress(f"[testbed] installing {len(routes)} routes on {r.name}")
            for route in routes:
                self.routes.add(r.name, route.prefix, route.interface, route.mac, route.via, route.local)

    def _receivers(self) -> dict[str, list[str]]:
        """node -> its interfaces that face an XDP router but do not run NFRouter in XDP themselves."""
        out: dict[str, list[str]] = {}
        for r in self.topo.routers:
            if r.target != "xdp":
                continue
            for iface in r.interfaces:
                peer = self.topo.nodes[iface.peer.node]
                if not (peer.role == "router" and peer.target == "xdp"):
                    out.setdefault(peer.name, []).append(iface.peer.name)
        return out

    def _rx_node(self, name: str) -> Node:
        """Where `rxcount` runs for node `name`: its controller node, or for a BMv2 router the XDP
        view of its namespace (the controller drives the switch there, not XDP)."""
        host = self.net[name]
        return self.controller.node(name) if _kernel_stack(host) else host.kernel_node()

    def stop(self) -> None:
        """Remove every NF and switch, then the network: no namespace, link, pin or process is left."""
        for name in list(self.controller.nodes):
            for nf in load_catalog():   # the routers' NFs, and any other NF deployed since
                try:
                    self.controller.remove(name, nf)
                except InnetError as exc:
                    log.warning("removing %s from %s: %s", nf, name, exc)
            try:
                if self.net is not None:
                    rx = self._rx_node(name)
                    self.controller.target(rx).remove(rx, get_nf(RX_NF))
            except InnetError as exc:
                log.warning("removing %s from %s: %s", RX_NF, name, exc)
            self.routes.clear_state(name)
        if self.net is not None:
            self.progress(f"[testbed] stopping {self.topo.name}")
            for host in self.net.hosts:
                if not _kernel_stack(host):
                    host.stop_switch()
            self.net.stop()
            self.net = None
        self.controller.nodes.clear()
        NODES_FILE.unlink(missing_ok=True)

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


def _kernel_stack(host) -> bool:
    """Whether the node's kernel holds its addresses and answers for it (a plain Host does)."""
    return getattr(host, "kernel_stack", True)
