"""The node kernel's own FIB: the slow path that must agree with the fast path.

Each route goes in with a permanent neighbour entry for its next hop, carrying the same
MAC the fast path writes, so packets the fast path hands up leave the same way.
"""
from __future__ import annotations

import errno
import ipaddress

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller.errors import TargetError
from controller.netns import netns
from controller.node import Node

NUD_PERMANENT = 0x80


def _family(net) -> int:
    return 2 if net.version == 4 else 10


def install(node: Node, prefix: str, ifindex: int, gateway: str | None, mac: str) -> None:
    net = ipaddress.ip_network(prefix)
    neighbour = gateway or str(net.network_address)
    try:
        with netns(node.netns), IPRoute() as ipr:
            ipr.neigh("replace", dst=neighbour, lladdr=mac, ifindex=ifindex, state=NUD_PERMANENT,
                      family=_family(net))
            kw = {"gateway": gateway} if gateway else {}
            ipr.route("replace", dst=str(net), oif=ifindex, family=_family(net), **kw)
    except NetlinkError as exc:
        raise TargetError(f"{node.name}: the kernel refused route {prefix}: {exc}",
                          hint="check that the gateway is on the egress interface's subnet") from exc


def remove(node: Node, prefix: str, ifindex: int, gateway: str | None, drop_neighbour: bool) -> None:
    net = ipaddress.ip_network(prefix)
    calls = [("route", {"dst": str(net), "oif": ifindex})]
    if drop_neighbour:
        calls.append(("neigh", {"dst": gateway or str(net.network_address), "ifindex": ifindex}))
    with netns(node.netns), IPRoute() as ipr:
        for call, kw in calls:
            try:
                getattr(ipr, call)("del", family=_family(net), **kw)
            except NetlinkError as exc:
                if exc.code not in (errno.ESRCH, errno.ENOENT):
                    raise
