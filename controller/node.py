"""A node of the data plane: a name, its network namespace and its interfaces."""
from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

from controller.errors import TopologyError
from controller.netns import netns


@dataclass(frozen=True)
class Node:
    name: str
    netns: str | None = None     # path of the namespace file; None: the controller's own
    role: str = "router"
    target: str = "xdp"
    # the node's kernel holds the routes too and takes what the fast path hands up (XDP_PASS);
    # a switch (BMv2) has no such slow path: its routes live in its tables only
    kernel_slow_path: bool = True

    def interfaces(self) -> dict[str, dict]:
        """name -> {ifindex, mac, mtu} for every link in the node's namespace."""
        with netns(self.netns), IPRoute() as ipr:
            return {link.get("ifname"): {"ifindex": link["index"], "mac": link.get("address"),
                                         "mtu": link.get("mtu")}
                    for link in ipr.get_links()}

    def interface(self, name: str) -> dict:
        links = self.interfaces()
        if name not in links:
            raise TopologyError(f"node {self.name} has no interface '{name}'",
                                hint=f"its interfaces: {', '.join(sorted(links))}")
        return links[name]
