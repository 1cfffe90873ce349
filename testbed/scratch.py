"""Throwaway network namespaces joined by veth pairs, for tests and benchmarks that need a
real interface but not a whole Mininet topology.

    with namespace("hh", [Veth("va", "vb"), Veth("vc", "vd")], ipv6=False) as ns:
        ...   # ns.name, ns.path: a fresh namespace holding va <-> vb and vc <-> vd, all up

Each call makes namespaces under fresh random names, so parallel runs do not collide, and
deletes them on exit, also when the body raises.
"""
from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

NO_IPV6 = "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


@dataclass(frozen=True)
class Veth:
    """A veth pair: `name` in the namespace, `peer` beside it or in the peer namespace;
    addresses (CIDR) are optional."""
    name: str
    peer: str
    address: str | None = None
    peer_address: str | None = None


@dataclass(frozen=True)
class Netns:
    name: str
    path: str
    peer: str | None     # the namespace holding the peer ends, if they are apart


def sh(ns: str, script: str) -> str:
    """Run a shell command line in namespace `ns`; its standard output. nsenter, because
    `ip netns exec` remounts /sys and would hide bpffs pins."""
    return subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", "sh", "-c", script],
                          check=True, stdout=subprocess.PIPE, text=True).stdout


def _up(ifname: str, address: str | None) -> list[str]:
    return [f"ip link set {ifname} up"] + ([f"ip addr add {address} dev {ifname}"] if address else [])


@contextmanager
def namespace(prefix: str, veths: Sequence[Veth], peers_apart: bool = False, lo_up: bool = False,
              ipv6: bool = True) -> Iterator[Netns]:
    """A fresh namespace `<prefix>-<random>` holding the `veths`, every end up; with
    `peers_apart`, their peer ends are in a second fresh namespace `<prefix>p-<random>`.
    `lo_up` brings loopback up (a local server may listen there, e.g. BMv2's Thrift);
    `ipv6=False` turns IPv6 off first, so no neighbour discovery or MLD frames join the
    traffic. Both namespaces, and with them the veths, are deleted on exit."""
    tag = uuid.uuid4().hex[:6]
    ns = Netns(f"{prefix}-{tag}", f"/var/run/netns/{prefix}-{tag}", f"{prefix}p-{tag}" if peers_apart else None)
    made = []
    try:
        for name in filter(None, (ns.name, ns.peer)):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
            setup = ([] if ipv6 else [NO_IPV6]) + (["ip link set lo up"] if lo_up else [])
            if setup:
                sh(name, " && ".join(setup))
        here, there = [], []
        for v in veths:
            here += [f"ip link add {v.name} type veth peer name {v.peer}" + (f" netns {ns.peer}" if ns.peer else ""),
                     *_up(v.name, v.address)]
            (there if ns.peer else here).extend(_up(v.peer, v.peer_address))
        for name, commands in ((ns.name, here), (ns.peer, there)):
            if commands:
                sh(name, " && ".join(commands))
        yield ns
    finally:
        for name in reversed(made):   # every one, even if deleting another fails
            subprocess.run(["ip", "netns", "del", name], check=False)


@contextmanager
def controller_node(prefix: str, veths: Sequence[Veth], ipv6: bool = True):
    """A fresh namespace holding the `veths` (as `namespace` makes it) as a node of a new
    controller, in the process's scope: yields (controller, node name). On exit the node is
    forgotten (every NF instance on it removed, its desired state dropped) and the namespace
    deleted."""
    from controller.node import Node
    from controller.service import Controller

    with namespace(prefix, veths, ipv6=ipv6) as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path))
        try:
            yield ctl, ns.name
        finally:
            ctl.forget_node(ns.name)
