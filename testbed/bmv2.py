"""A BMv2 router as a Mininet node: simple_switch_grpc running in the node's own namespace.

The switch (controller.p4.switch) takes the node's interfaces as its ports, in topology
order (port 1, 2, ...); Bmv2Target finds it by node name and pushes the pipeline. The
node's kernel takes no part in forwarding: its interfaces carry no addresses, IPv6 and
forwarding are off, GRO is off (the switch must see frames as they were sent), so every
frame is the switch's alone. Neighbours that send to it need permanent neighbour entries
for its addresses, since nothing answers ARP or neighbour solicitations there.
"""
from __future__ import annotations

from mininet.node import Host

from controller.p4 import switch
from controller.scope import Scope


class Bmv2Router(Host):
    kernel_stack = False   # the node's kernel neither addresses, answers nor forwards

    def config(self, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 "
                 "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        return result

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def start_switch(self, scope: Scope, interfaces: list[str], progress=print) -> switch.SwitchInfo:
        """Start the node's switch in `scope` on `interfaces` (ports 1, 2, ... in this order)."""
        for name in interfaces:
            self.cmd(f"ethtool -K {name} gro off >/dev/null 2>&1")
        self.scope = scope
        return switch.start(scope, self.name, interfaces, netns=self.netns, progress=progress)

    def stop_switch(self) -> None:
        if getattr(self, "scope", None) is not None:
            switch.stop(self.scope, self.name)

    def terminate(self):
        # before the shell goes: the switch holds the namespace and its interfaces otherwise
        self.stop_switch()
        super().terminate()
