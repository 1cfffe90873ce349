"""Link emulators: a link's bandwidth, with a queue, where an XDP router would skip the shaper;
and a place to capture the frames XDP routers send each other.

Mininet shapes a link with an HTB qdisc on each end's egress, but a frame an XDP router
redirects into a veth never meets a qdisc: between XDP routers a 100 Mbit/s link would carry
gigabits. So a link with a bandwidth that ends at an XDP router runs through a link emulator:
a node of its own holding a Linux bridge between two ports, each port's egress shaped by
HTB to the link's rate over a short FIFO. Frames cross it unchanged (layer 2; the emulator
has no address), queue where the link is full, and are dropped at the queue's tail, as on a
real link. Its ports that face an XDP router run rxcount, so they accept redirected frames.

Nor does a frame an XDP router redirects to another XDP router meet a capture: the peer's
XDP program takes it first. A testbed with tapped links (Testbed(..., tap_links=True),
`innet up --tap-links`) puts every link between two routers through an emulator, unshaped
(a bridge only) where the link has no bandwidth. The frames cross the emulator's kernel, so
a capture on its ports (`<emulator>-a` towards the link's a end, `<emulator>-b` towards its
b end) sees both directions, as they are on the wire.

The topology does not know emulators: they are the testbed's way to build its links.
"""
from __future__ import annotations

from mininet.link import Intf, Link, TCIntf
from mininet.node import Host

from controller.errors import TopologyError
from controller.topology import TopoLink, Topology

ROLE = "link"         # the role an emulator's node has in the controller
QUEUE_PACKETS = 100   # the shaped FIFO: 12 ms at 100 Mbit/s, so a full link shows up as delay, then loss


class LinkEmulator(Host):
    """A bridge between two ports in its own namespace; no address, no IP stack in use."""

    def config(self, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        return result

    def bridge(self, ports: list[str], mtu: int, shaped: bool) -> None:
        """Join the ports in one bridge; a shaped link queues each port's egress in a short FIFO."""
        self.cmd("ip link add br0 type bridge && ip link set br0 type bridge stp_state 0 forward_delay 0")
        for port in ports:
            self.cmd(f"ip link set dev {port} mtu {mtu} master br0 up")
            if shaped:   # Mininet's HTB class 5:1 gets a FIFO of QUEUE_PACKETS instead of the device's 1000
                self.cmd(f"tc qdisc replace dev {port} parent 5:1 handle 10: pfifo limit {QUEUE_PACKETS}")
        self.cmd(f"ip link set dev br0 mtu {mtu} up")


def emulated(topology: Topology, tap_links: bool = False) -> list[TopoLink]:
    """The links that need an emulator: a bandwidth, and an XDP router at one end at least;
    with `tap_links`, also every link between two routers."""
    def xdp_router(name: str) -> bool:
        node = topology.nodes[name]
        return node.role == "router" and node.target == "xdp"

    def between_routers(link: TopoLink) -> bool:
        return topology.nodes[link.a.node].role == topology.nodes[link.b.node].role == "router"
    return [link for link in topology.links
            if (link.bw and (xdp_router(link.a.node) or xdp_router(link.b.node)))
            or (tap_links and between_routers(link))]


def emulator_name(topology: Topology, link: TopoLink) -> str:
    name = f"link{link.index}"
    if name in topology.nodes:
        raise TopologyError(f"topology {topology.name}: node name '{name}' is the testbed's name for the emulator "
                            f"of link {link.index} ({link.a.node} - {link.b.node})", hint="rename the node")
    return name


def add_emulated_link(net, topology: Topology, link: TopoLink) -> str:
    """The emulator of `link` and its two halves in the Mininet network; returns its name."""
    name = emulator_name(topology, link)
    net.addHost(name, cls=LinkEmulator, ip=None)
    shaping = {"cls2": TCIntf, "params2": {"bw": link.bw}} if link.bw else {"cls2": Intf}
    for end, port in zip((link.a, link.b), ports(name)):
        # the endpoint keeps its interface name and MAC; only the emulator's port is shaped
        net.addLink(end.node, name, intfName1=end.name, intfName2=port, addr1=end.mac,
                    cls=Link, cls1=Intf, **shaping)
    return name


def ports(name: str) -> list[str]:
    """The emulator's ports: towards the link's a end, then its b end."""
    return [f"{name}-a", f"{name}-b"]
