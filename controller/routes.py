"""Routes on a node: the NFRouter's tables (fast path) and the kernel FIB (slow path), together.

Knows nothing about BPF or P4: it writes logical `ipv4_routes`/`ipv6_routes` entries
through the controller, whichever target the node runs. A node without a kernel slow path
(`Node.kernel_slow_path`, e.g. a switch) gets its routes in the tables only.
"""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from controller import fib
from controller.core import Controller
from controller.errors import EntryError
from controller.tables import TableEntry, parse_mac

NF = "nfrouter"
STATE_ROOT = Path(os.environ.get("INNET_STATE", "/run/innet")) / "routes"


@dataclass(frozen=True)
class Route:
    prefix: str
    interface: str | None = None   # egress interface; None for a local route
    mac: str | None = None         # next hop's MAC
    via: str | None = None         # gateway address, needed unless the prefix is one host
    local: bool = False            # the prefix is the node's own: deliver to its stack
    packets: int = 0
    bytes: int = 0


def _table(net) -> str:
    return "ipv4_routes" if net.version == 4 else "ipv6_routes"


class RouteService:
    def __init__(self, controller: Controller):
        self.controller = controller

    # the gateway of each route is kept beside the data plane so a new controller can delete it
    def _state_file(self, node: str) -> Path:
        return STATE_ROOT / f"{node}.json"

    def _gateways(self, node: str) -> dict[str, str | None]:
        path = self._state_file(node)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_gateways(self, node: str, gateways: dict) -> None:
        path = self._state_file(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gateways))

    def _check(self, prefix: str, via: str | None, interface: str | None, local: bool):
        try:
            net = ipaddress.ip_network(prefix, strict=True)
        except ValueError as exc:
            raise EntryError(f"route {prefix!r}: not a valid prefix", hint=str(exc)) from None
        if via is not None:
            try:
                gw = ipaddress.ip_address(via)
            except ValueError as exc:
                raise EntryError(f"route {prefix}: gateway {via!r} is not an address", hint=str(exc)) from None
            if gw.version != net.version:
                raise EntryError(f"route {prefix}: gateway {via} is IPv{gw.version}, the prefix IPv{net.version}")
        elif not local and net.prefixlen != net.max_prefixlen:
            raise EntryError(f"route {prefix}: a prefix route needs a gateway (via) so the kernel's slow path "
                             f"uses the same next hop", hint="give via=<next-hop address>, or route a single host")
        if not local and not interface:
            raise EntryError(f"route {prefix}: a forwarding route needs an egress interface")
        return net

    def add(self, node: str, prefix: str, interface: str | None = None, mac: str | None = None,
            via: str | None = None, local: bool = False) -> Route:
        """Install a route in the fast path and the kernel; all or nothing."""
        net = self._check(prefix, via, interface, local)
        n = self.controller.node(node)
        if local:
            entry = TableEntry(_table(net), {"dst_addr": str(net)}, "local", {})
            self.controller.write(node, NF, [entry])
            return Route(str(net), local=True)
        link = n.interface(interface)
        mac = parse_mac(mac, f"route {prefix} next-hop MAC")
        entry = TableEntry(_table(net), {"dst_addr": str(net)}, "forward",
                           {"egress_port": interface, "dst_mac": mac, "src_mac": link["mac"]})
        self.controller.write(node, NF, [entry])
        if n.kernel_slow_path:
            try:
                fib.install(n, str(net), link["ifindex"], via, mac)
            except BaseException:
                self.controller.delete(node, NF, [entry])
                raise
        gateways = self._gateways(node)
        gateways[str(net)] = via
        self._save_gateways(node, gateways)
        return Route(str(net), interface, mac, via)

    def delete(self, node: str, prefix: str) -> bool:
        net = self._check(prefix, None, None, local=True)
        n = self.controller.node(node)
        current = {r.prefix: r for r in self.list(node)}
        route = current.get(str(net))
        if route is None:
            return False
        self.controller.delete(node, NF, [TableEntry(_table(net), {"dst_addr": str(net)}, route_action(route))])
        if not route.local:
            gateways = self._gateways(node)
            via = gateways.pop(str(net), None)
            if n.kernel_slow_path:
                neighbour = via or str(net.network_address)
                still_used = any((g or p.split("/")[0]) == neighbour for p, g in gateways.items())
                fib.remove(n, str(net), n.interface(route.interface)["ifindex"], via, drop_neighbour=not still_used)
            self._save_gateways(node, gateways)
        return True

    def list(self, node: str) -> list[Route]:
        """Every route of the node's fast path, with its packet and byte counters."""
        gateways = self._gateways(node)
        routes = []
        for table in ("ipv4_routes", "ipv6_routes"):
            for c in self.controller.read_counters(node, NF, table):
                prefix = c.entry.match["dst_addr"]
                if c.entry.action == "local":
                    routes.append(Route(prefix, local=True, packets=c.packets, bytes=c.bytes))
                else:
                    routes.append(Route(prefix, c.entry.params["egress_port"], c.entry.params["dst_mac"],
                                        gateways.get(prefix), False, c.packets, c.bytes))
        return sorted(routes, key=lambda r: (ipaddress.ip_network(r.prefix).version, ipaddress.ip_network(r.prefix)))

    def clear_state(self, node: str) -> None:
        self._state_file(node).unlink(missing_ok=True)


def route_action(route: Route) -> str:
    return "local" if route.local else "forward"


def as_dict(route: Route) -> dict:
    return asdict(route)
