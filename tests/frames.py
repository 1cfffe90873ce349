"""Frames for the packet tests, addressed as the `linear` topology's addressing plan says,
and what routers make of them; where a service chain's NSH frames cross a testbed's links."""
from scapy.contrib.nsh import NSH
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

H1_MAC, R1_IN_MAC = "02:00:00:01:01:02", "02:00:00:02:01:01"     # h1-eth0, r1-eth0
R1_OUT_MAC, H2_MAC = "02:00:00:02:02:01", "02:00:00:03:02:02"    # r1-eth1, h2-eth0
H1, H2, R1_IN = "10.0.1.2", "10.0.2.2", "10.0.1.1"
H1_6, H2_6, R1_IN_6 = "2001:db8:0:1::2", "2001:db8:0:2::2", "2001:db8:0:1::1"
PORT = 9999
NSH_INITIAL_TTL = 63   # RFC 8300's default, which the classifier writes
NSH_NEXT_IPV4 = 1


def udp4(dst=H2, ttl=64, payload=b"innet", **ip):
    return Ether(src=H1_MAC, dst=R1_IN_MAC) / IP(src=H1, dst=dst, ttl=ttl, **ip) / UDP(sport=1234, dport=PORT) / payload


def udp6(dst=H2_6, hlim=64, payload=b"innet"):
    return Ether(src=H1_MAC, dst=R1_IN_MAC) / IPv6(src=H1_6, dst=dst, hlim=hlim) / UDP(sport=1234, dport=PORT) / payload


def routed(frame: Ether | bytes, src_mac: str = R1_OUT_MAC, dst_mac: str = H2_MAC, hops: int = 1) -> bytes:
    """An IPv4 or IPv6 `frame` as it leaves the last of `hops` routers: the MACs of that hop
    (`src_mac` its egress interface, `dst_mac` the receiver; by default r1 -> h2), TTL or hop
    limit down by one per router, IPv4 checksum redone."""
    out = Ether(bytes(frame))
    out.src, out.dst = src_mac, dst_mac
    if IP in out:
        out[IP].ttl -= hops
        del out[IP].chksum
    else:
        out[IPv6].hlim -= hops
    return bytes(out)


def _fix_scapy_nsh() -> None:
    """scapy up to 2.5 cannot dissect an MD type 2 NSH: its context headers are counted with the
    string 'length' (TypeError), fixed upstream in secdev/scapy#5096. Read them by the NSH's
    length in words instead, as the fix does; a fixed scapy is left alone."""
    field = next(f for f in NSH.fields_desc if f.name == "vlch").fld
    if isinstance(field.count_from, str):
        field.count_from = None
        field.length_from = lambda pkt: 4 * (pkt.length - 2)


_fix_scapy_nsh()


def on_the_wire(path) -> list[tuple[str, str, int, int]]:
    """(sender, receiver, SI, NSH TTL) of the NSH frames on each router-to-router link of a
    chain's path (controller.chains.PathPlan): the SI falls by one at each NF the sender or a
    router before it ran, the TTL by one per router left (the first one encapsulates at
    NSH_INITIAL_TTL)."""
    return [(sender, receiver, 255 - sum(1 for at in path.positions if at <= i), NSH_INITIAL_TTL - 1 - i)
            for i, (sender, receiver) in enumerate(zip(path.routers, path.routers[1:]))]


def tap(tb, sender: str, receiver: str) -> tuple[str, str]:
    """The link emulator between two routers of a running testbed, and its port facing the sender."""
    from testbed import linkemu

    name, link = next((n, lk) for n, lk in tb.emulators.items() if {lk.a.node, lk.b.node} == {sender, receiver})
    return name, linkemu.ports(name)[0 if link.a.node == sender else 1]
