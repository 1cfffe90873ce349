"""Interface counters of a node: bytes and packets each interface received and sent.

Read over netlink (IFLA_STATS64) inside the node's namespace, as the kernel keeps them. On a
veth they include frames that XDP redirected in or out, so they measure a link's load
whichever path (fast or kernel) forwards its packets.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

from controller.netns import netns
from controller.node import Node


@dataclass(frozen=True)
class InterfaceCounters:
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


def interface_counters(node: Node) -> dict[str, InterfaceCounters]:
    """name -> counters for every interface in the node's namespace."""
    with netns(node.netns), IPRoute() as ipr:
        out = {}
        for link in ipr.get_links():
            stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS") or {}
            out[link.get("ifname")] = InterfaceCounters(stats.get("rx_bytes", 0), stats.get("tx_bytes", 0),
                                                        stats.get("rx_packets", 0), stats.get("tx_packets", 0))
        return out
