"""Routes on a node: the NFRouter instance's tables (fast path) and the kernel FIB (slow path).

Routes are desired state (the store's `routes` table); both paths are written from it in
batches, all or none: a replace that the kernel refuses puts the old route back in the
fast path too. Knows nothing about BPF or P4: it goes through the node's data-plane
interface. A node without a kernel slow path (`Node.kernel_slow_path`, e.g. a switch) gets
its routes in the tables only.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass

from controller.dataplane import FibRoute
from controller.errors import EntryError
from controller.store import RouteRow
from controller.tables import TableEntry, parse_mac

ROUTER = "nfrouter"   # the default router instance (and NF) of a node


@dataclass(frozen=True)
class Route:
    prefix: str
    interface: str | None = None   # egress interface; None for a local route
    mac: str | None = None         # next hop's MAC
    via: str | None = None         # gateway address, needed unless the prefix is one host
    local: bool = False            # the prefix is the node's own: deliver to its stack
    packets: int = 0
    bytes: int = 0
    fast_path: bool = True         # listed: whether the fast path holds it as desired
    kernel: bool | None = None     # listed: whether the kernel FIB does (None: no kernel slow path)
    fast_path_holds: str | None = None   # listed, where the fast path differs: what it holds
    kernel_holds: str | None = None      # listed, where the kernel FIB differs: what it holds


def _table(prefix: str) -> str:
    return "ipv6_routes" if ":" in prefix else "ipv4_routes"


def _address(text: str) -> tuple[str, int] | None:
    """(text, bits) when `text` is an address already in canonical form, else None: the fast
    check that keeps 100,000-route batches cheap; anything else goes through ipaddress."""
    family, bits = (socket.AF_INET6, 128) if ":" in text else (socket.AF_INET, 32)
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, TypeError):
        return None
    return (text, bits) if socket.inet_ntop(family, packed) == text else None


def _prefix(text: str) -> tuple[str, int, int]:
    """(canonical prefix, its length, the family's address bits), or an EntryError."""
    addr, _, length = text.partition("/") if isinstance(text, str) else ("", "", "")
    fast = _address(addr)
    if fast and length.isdigit() and int(length) <= fast[1]:
        plen, bits = int(length), fast[1]
        packed = socket.inet_pton(socket.AF_INET6 if bits == 128 else socket.AF_INET, addr)
        if not int.from_bytes(packed, "big") & ((1 << (bits - plen)) - 1):
            return text, plen, bits
    try:
        net = ipaddress.ip_network(text, strict=True)
    except (ValueError, TypeError) as exc:
        raise EntryError(f"route {text!r}: not a valid prefix", hint=str(exc)) from None
    return str(net), net.prefixlen, net.max_prefixlen


def _gateway(text: str, prefix: str, bits: int) -> str:
    fast = _address(text)
    if fast is None:
        try:
            gw = ipaddress.ip_address(text)
        except (ValueError, TypeError) as exc:
            raise EntryError(f"route {prefix}: gateway {text!r} is not an address", hint=str(exc)) from None
        fast = (str(gw), gw.max_prefixlen)
    if fast[1] != bits:
        raise EntryError(f"route {prefix}: gateway {text} is IPv{4 if fast[1] == 32 else 6}, "
                         f"the prefix IPv{4 if bits == 32 else 6}")
    return fast[0]


def check_route(r: Route) -> Route:
    """The route with its prefix, gateway and MAC in canonical form, or an EntryError."""
    prefix, plen, bits = _prefix(r.prefix)
    via = None if r.via is None else _gateway(r.via, prefix, bits)
    if r.local:
        return Route(prefix, local=True)
    if via is None and plen != bits:
        raise EntryError(f"route {prefix}: a prefix route needs a gateway (via) so the kernel's slow path "
                         f"uses the same next hop", hint="give via=<next-hop address>, or route a single host")
    if not r.interface:
        raise EntryError(f"route {prefix}: a forwarding route needs an egress interface")
    return Route(prefix, r.interface, parse_mac(r.mac, f"route {prefix} next-hop MAC"), via)


def route_entry(r: Route, interface_macs: dict[str, str]) -> TableEntry:
    if r.local:
        return TableEntry(_table(r.prefix), {"dst_addr": r.prefix}, "local", {})
    return TableEntry(_table(r.prefix), {"dst_addr": r.prefix}, "forward",
                      {"egress_port": r.interface, "dst_mac": r.mac, "src_mac": interface_macs.get(r.interface)})


def fib_route(r: Route | RouteRow) -> FibRoute:
    return FibRoute(r.prefix, r.interface, r.via, r.mac)


def route_entries(controller, node: str, instance: str) -> list[TableEntry]:
    """The table entries of the desired routes of a router instance."""
    rows = [r for r in controller.store.routes(node) if r.instance == instance]
    if not rows:
        return []
    macs = {i.name: i.mac for i in controller.plane(node).interfaces()}
    return [route_entry(_route(r), macs) for r in rows]


def kernel_routes(controller, node: str) -> list[FibRoute]:
    """The kernel routes the desired routes of the node make."""
    return [fib_route(r) for r in controller.store.routes(node) if not r.local]


def _route(row: RouteRow) -> Route:
    return Route(row.prefix, row.interface, row.mac, row.via, row.local)


def parse_routes(text: str, where: str = "routes") -> list[Route]:
    """Routes written one per line as `PREFIX via GATEWAY dev IFACE mac MAC`, `PREFIX dev IFACE
    mac MAC` (one host, on-link) or `PREFIX local`; '#' starts a comment."""
    routes = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        prefix, rest = words[0], words[1:]
        if rest == ["local"]:
            routes.append(Route(prefix, local=True))
            continue
        if len(rest) % 2 or not set(rest[::2]) <= {"via", "dev", "mac"}:
            raise EntryError(f"{where} line {number}: cannot read {line.strip()!r}",
                             hint="write PREFIX [via GATEWAY] dev IFACE mac MAC, or PREFIX local")
        kw = dict(zip(rest[::2], rest[1::2]))
        routes.append(Route(prefix, kw.get("dev"), kw.get("mac"), kw.get("via")))
    return routes


class RouteService:
    def __init__(self, controller, instance: str = ROUTER):
        self.controller, self.instance = controller, instance

    @staticmethod
    def _refuse_own(node: str, routes: list[Route], interfaces: list) -> None:
        """A route over one of the node's own addresses would loop packets back into it."""
        own = {str(ipaddress.ip_address(a.split("%")[0])): i.name for i in interfaces for a in i.addresses}
        for r in routes:
            if r.local:
                continue
            if r.via in own:
                raise EntryError(f"route {r.prefix} on {node}: gateway {r.via} is {node}'s own address "
                                 f"(on {own[r.via]}); packets would loop",
                                 hint="the gateway is the neighbour's address on that link")
            address, _, length = r.prefix.partition("/")
            if address in own and int(length) == (128 if ":" in address else 32):
                raise EntryError(f"route {r.prefix} on {node}: {address} is {node}'s own address; "
                                 f"forwarding it would loop", hint=f"make it a local route: innet routes add "
                                                                   f"{node} {r.prefix} --local")

    def add(self, node: str, prefix: str, interface: str | None = None, mac: str | None = None,
            via: str | None = None, local: bool = False) -> Route:
        """Install (or replace) a route in the fast path and the kernel; all or nothing."""
        return self.add_many(node, [Route(prefix, interface, mac, via, local)])[0]

    def add_many(self, node: str, routes: list[Route]) -> list[Route]:
        """Install or replace routes in one batch per path, all or none: if either path refuses,
        both hold what they held before."""
        ctl = self.controller
        n = ctl.node(node)
        ctl.instance(node, self.instance)
        checked = [check_route(r) for r in routes]
        plane = ctl.plane(node)
        interfaces = plane.interfaces()
        self._refuse_own(node, checked, interfaces)
        macs = {i.name: i.mac for i in interfaces}
        for r in checked:
            if not r.local and r.interface not in macs:
                raise EntryError(f"route {r.prefix}: {node} has no interface '{r.interface}'",
                                 hint=f"its interfaces: {', '.join(sorted(macs))}")
        with ctl._operation("routes-add", node, self.instance, {"routes": len(checked)}):
            old = {r.prefix: _route(r) for r in ctl.store.routes_for(node, [r.prefix for r in checked])}
            entries = [route_entry(r, macs) for r in checked]
            plane.write(self.instance, entries)
            try:
                if n.kernel_slow_path:
                    plane.fib_replace([fib_route(r) for r in checked if not r.local])
            except BaseException:
                back = [route_entry(old[r.prefix], macs) for r in checked if r.prefix in old]
                plane.write(self.instance, back)
                plane.delete(self.instance, [e for e, r in zip(entries, checked) if r.prefix not in old])
                raise
            ctl.store.put_routes(RouteRow(node, r.prefix, self.instance, r.interface, r.mac, r.via, r.local)
                                 for r in checked)
        return checked

    def delete(self, node: str, prefix: str) -> bool:
        return self.delete_many(node, [prefix]) == 1

    def delete_many(self, node: str, prefixes: list[str]) -> int:
        """Delete routes from both paths, with the neighbour entries no other route uses;
        returns how many existed."""
        ctl = self.controller
        n = ctl.node(node)
        wanted = {_prefix(p)[0] for p in prefixes}
        with ctl._operation("routes-delete", node, self.instance, {"routes": len(wanted)}):
            gone = [_route(r) for r in ctl.store.routes_for(node, sorted(wanted)) if r.instance == self.instance]
            if not gone:
                return 0
            plane = ctl.plane(node)
            plane.delete(self.instance, [route_entry(r, {}) for r in gone])
            if n.kernel_slow_path:
                hops = {(r.interface, r.via or r.prefix.split("/")[0]) for r in gone if not r.local}
                staying = [fib_route(r) for r in ctl.store.routes_via(node, hops) if r.prefix not in wanted]
                plane.fib_delete([fib_route(r) for r in gone if not r.local], staying)
            ctl.store.delete_routes(node, [r.prefix for r in gone])
            return len(gone)

    def list(self, node: str) -> list[Route]:
        """Every route, desired or held by a path, with packet and byte counters, and whether
        the fast path and the kernel FIB each hold it as desired."""
        ctl = self.controller
        n = ctl.node(node)
        plane = ctl.plane(node)
        desired = {r.prefix: _route(r) for r in ctl.store.routes(node) if r.instance == self.instance}
        fast = {}
        for table in ("ipv4_routes", "ipv6_routes"):
            for c in plane.read_counters(self.instance, table):
                e = c.entry
                r = Route(e.match["dst_addr"], local=True) if e.action == "local" else \
                    Route(e.match["dst_addr"], e.params["egress_port"], e.params["dst_mac"])
                fast[r.prefix] = (r, c.packets, c.bytes)
        kernel = {r.prefix: r for r in plane.fib_routes()} if n.kernel_slow_path else None
        out = []
        for prefix in {*desired, *fast, *(kernel or {})}:
            want = desired.get(prefix)
            held, packets, nbytes = fast.get(prefix, (None, 0, 0))
            base = want or held or Route(prefix, kernel[prefix].interface, kernel[prefix].mac, kernel[prefix].via)
            in_fast = held is not None and want is not None and \
                (held.interface, held.mac, held.local) == (want.interface, want.mac, want.local)
            in_kernel = kernel_says = None
            if kernel is not None:
                k = kernel.get(prefix)
                in_kernel = (k == fib_route(want)) if want and not want.local else (k is None and want is not None)
                kernel_says = None if in_kernel else _describe_kernel(k)
            out.append(Route(base.prefix, base.interface, base.mac, base.via, base.local, packets, nbytes,
                             in_fast, in_kernel, None if in_fast else _describe_fast(held), kernel_says))
        return sorted(out, key=lambda r: (ipaddress.ip_network(r.prefix).version, ipaddress.ip_network(r.prefix)))


def _describe_fast(held: Route | None) -> str:
    if held is None:
        return "nothing"
    return "local" if held.local else f"dev {held.interface} lladdr {held.mac}"


def _describe_kernel(route: FibRoute | None) -> str:
    if route is None:
        return "nothing"
    return f"{f'via {route.via} ' if route.via else ''}dev {route.interface} lladdr {route.mac or '?'}"


def as_dict(route: Route) -> dict:
    return asdict(route)
