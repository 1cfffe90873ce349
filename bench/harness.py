"""What every benchmark script shares: printing, the opening lines, clean unwinding, and
throwaway network namespaces joined by veth pairs.

A script starts with `start` (root check, the command that reproduces the run, the machine)
and runs its body through `run`, so a SIGTERM unwinds like Ctrl-C and every namespace,
switch and testbed the body opened is torn down by its own `finally`.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
NO_IPV6 = "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def start(script: str, argv: list[str] | None, quick: bool, needs: str, detail: str = "") -> bool:
    """Set up logging; False (having said why) unless run as root; else print the command that
    reproduces this run and the machine it runs on. `script` is the caller's __file__, `needs`
    what root is for, `detail` the rest of the machine line."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = Path(script).resolve().relative_to(REPO).as_posix()
    if os.geteuid() != 0:
        say(f"{name} needs root ({needs})")
        return False
    given = sys.argv[1:] if argv is None else argv
    say(f"reproduce: cd {REPO} && sudo {' '.join(shlex.quote(a) for a in ['.venv/bin/python', name, *given])}")
    say(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {'quick' if quick else 'full'} run"
        + (f", {detail}" if detail else ""))
    return True


def run(body: Callable[[], None]) -> int:
    """Run the benchmark's body and say how long it took; the exit status. A SIGTERM unwinds
    like Ctrl-C, so the body's namespaces, switches and testbeds are still torn down."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    t0 = time.perf_counter()
    try:
        body()
    except KeyboardInterrupt:
        say("\n[bench] interrupted")
        return 130
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


# ---- throwaway namespaces ------------------------------------------------------------------

@dataclass(frozen=True)
class Veth:
    """A veth pair: `name` in the bench namespace, `peer` beside it or in the peer namespace;
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


def sh(ns: str, script: str) -> None:
    """A shell command line in namespace `ns` (nsenter: `ip netns exec` would hide bpffs pins)."""
    subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", "sh", "-c", script], check=True)


def _up(ifname: str, address: str | None) -> list[str]:
    return [f"ip link set {ifname} up"] + ([f"ip addr add {address} dev {ifname}"] if address else [])


@contextmanager
def namespace(prefix: str, veths: Sequence[Veth], peers_apart: bool = False, lo_up: bool = False,
              ipv6: bool = True) -> Iterator[Netns]:
    """A fresh namespace `<prefix>-<random>` holding the `veths`, every end up; with
    `peers_apart`, their peer ends are in a second fresh namespace `<prefix>p-<random>`.
    `lo_up` brings loopback up (a local server may listen there); `ipv6=False` turns IPv6 off
    first, so no neighbour discovery or MLD frames join the traffic. Deleted on exit."""
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
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False)
