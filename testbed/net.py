"""Bring a topology up in Mininet, with the controller driving its routers.

Routers are Mininet hosts with kernel forwarding on (the slow path); the controller runs
NFRouter on their interfaces (the fast path) and installs every route in both. Host
interfaces that face a native-XDP router run `rxcount`, because a veth only accepts
XDP-redirected frames when its peer runs an XDP program.
"""
from __future__ import annotations

import logging
import os

from mininet.link import Link, TCLink
from mininet.net import Mininet
from mininet.node import Host

from controller.core import NODES_FILE, Controller
from controller.errors import InnetError, TopologyError
from controller.node import Node
from controller.routes import NF as ROUTER_NF
from controller.routes import RouteService
from controller.topology import Topology

log = logging.getLogger("innet.testbed")
RX_NF = "rxcount"


class Router(Host):
    """A Linux router: kernel IPv4/IPv6 forwarding on."""

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
            net.addHost(n.name, cls=Router if n.role == "router" else Host, ip=None)
        for link in self.topo.links:
            extra = {"cls": TCLink, "bw": link.bw} if link.bw else {"cls": Link}
            net.addLink(link.a.node, link.b.node, intfName1=link.a.name, intfName2=link.b.name,
                        addr1=link.a.mac, addr2=link.b.mac, **extra)
        net.build()
        for n in self.topo.nodes.values():
            host = net[n.name]
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.accept_dad=0")
            for iface in n.interfaces:
                host.cmd(f"ip addr add {iface.ipv4} dev {iface.name}")
                host.cmd(f"ip -6 addr add {iface.ipv6} dev {iface.name} nodad")
                # checksums must be complete before a frame meets an XDP redirect
                host.cmd(f"ethtool -K {iface.name} tx off >/dev/null 2>&1")
            if n.role == "host":
                # a new namespace may inherit forwarding from the root one: hosts must not route
                host.cmd("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0")
                gw = self.topo.gateway(n.name)
                host.cmd(f"ip route add default via {gw.ipv4.ip}")
                host.cmd(f"ip -6 route add default via {gw.ipv6.ip}")
            target = n.target if n.role == "router" else "xdp"
            self.controller.add_node(Node(n.name, f"/proc/{host.pid}/ns/net", n.role, target))
        self.controller.save_nodes()

    def deploy_routers(self) -> None:
        """NFRouter on every XDP router, rxcount on the hosts facing them, and all static routes."""
        for r in self.topo.routers:
            if r.target != "xdp":
                continue
            self.progress(f"[testbed] deploying {ROUTER_NF} on {r.name} ({', '.join(i.name for i in r.interfaces)})")
            self.controller.deploy(r.name, ROUTER_NF, [i.name for i in r.interfaces])
            for iface in r.interfaces:
                if self.topo.nodes[iface.peer.node].role == "host":
                    self.controller.deploy(iface.peer.node, RX_NF, [iface.peer.name])
            routes = self.topo.static_routes(r.name)
            self.progress(f"[testbed] installing {len(routes)} routes on {r.name}")
            for route in routes:
                self.routes.add(r.name, route.prefix, route.interface, route.mac, route.via, route.local)

    def stop(self) -> None:
        """Remove every NF, then the network: no namespace, link, pin or process is left."""
        for name, node in list(self.controller.nodes.items()):
            for nf in (ROUTER_NF, RX_NF):
                try:
                    self.controller.remove(name, nf)
                except InnetError as exc:
                    log.warning("removing %s from %s: %s", nf, name, exc)
            self.routes.clear_state(name)
        if self.net is not None:
            self.progress(f"[testbed] stopping {self.topo.name}")
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
