"""Priority queueing benchmark: latency of a high-priority probe on a saturated link.

    .venv/bin/python bench/priority.py [--rate 10mbit] [--probes 400] [--quick]   (as root)

Two fresh namespaces joined by a veth pair; the egress of A's interface is rate-limited
with HTB and saturated from A to B by iperf3 UDP (DSCP 0, at twice the link rate). A probe
flow (ping every 10 ms with TOS 0xb8 = DSCP EF) measures the round trip, in the same run:

1. without the NF: the link is one HTB class at the link rate (a plain rate-limited link);
   the probe waits behind the load's backlog;
2. with prio: the controller deploys the prio classifier (tc egress) and its HTB tree
   (level 0 first), and maps DSCP 46 to level 0; the load lands in the default level.

The replies come back over the unshaped direction, so the round trip is the queueing
delay of the shaped egress plus a small constant. It prints p50/p99 per case, the probe
loss, per-level queue statistics, and the p99 ratio (target: at least 10x lower with prio).
The bench works in a scope of its own (bench-<pid>), removed at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

from pyroute2 import IPRoute  # noqa: E402

from bench.harness import run, say, start  # noqa: E402
from controller import qos  # noqa: E402
from controller.netns import netns  # noqa: E402
from controller.node import Node  # noqa: E402
from controller.queues import QueueLevel, parse_rate  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.service import Controller  # noqa: E402
from controller.tables import TableEntry  # noqa: E402
from testbed.scratch import Netns, Veth, namespace  # noqa: E402

A_ADDR, B_ADDR = "10.78.0.1", "10.78.0.2"
EF_DSCP = 46
IPERF_PORT = 5299
WARMUP_S = 1.5          # the load fills the queue before the probe starts
_RTT = re.compile(r"time=([\d.]+) ms")


def in_ns(ns: str, cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{ns}", *cmd], **kw)


def pair():
    """Namespaces A and B joined by veth pba (in A) <-> pbb (in B), IPv6 off; deleted on exit."""
    return namespace("pb", [Veth("pba", "pbb", f"{A_ADDR}/24", f"{B_ADDR}/24")], peers_apart=True, ipv6=False)


def measure(ns: Netns, link_bps: int, probes: int) -> tuple[list[float], int]:
    """Round trips (ms) of `probes` EF pings sent while iperf3 UDP saturates A -> B; and how many were lost."""
    duration = WARMUP_S + probes * 0.01 + 2
    server = in_ns(ns.peer, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    load = in_ns(ns.name, ["iperf3", "-c", B_ADDR, "-p", str(IPERF_PORT), "-u", "-b", str(2 * link_bps),
                          "-l", "1400", "-t", f"{duration:.0f}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(WARMUP_S)
        ping = in_ns(ns.name, ["ping", "-n", "-c", str(probes), "-i", "0.01", "-W", "3", "-Q", hex(EF_DSCP << 2),
                              B_ADDR], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, _ = ping.communicate(timeout=probes * 0.01 + 30)
    finally:
        for proc in (load, server):
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
    rtts = [float(m) for m in _RTT.findall(out)]
    return rtts, probes - len(rtts)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(name: str, rtts: list[float], lost: int, probes: int) -> tuple[float, float]:
    if not rtts:
        say(f"  {name:<28} every probe was lost")
        return float("inf"), float("inf")
    p50, p99 = percentile(rtts, 50), percentile(rtts, 99)
    say(f"  {name:<28} p50 {p50:9.3f} ms   p99 {p99:9.3f} ms   lost {lost}/{probes}")
    return p50, p99


def bench(link: int, probes: int) -> None:
    say(f"[priority] link {link / 1e6:g} Mbit/s, saturated by iperf3 UDP at {2 * link / 1e6:g} Mbit/s (DSCP 0); "
        f"probe: {probes} pings with DSCP {EF_DSCP}, every 10 ms")
    with pair() as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path))
        try:
            say("[priority] 1/2 without the NF: one HTB class at the link rate")
            with netns(ns.path), IPRoute() as ipr:
                ifindex = ipr.link_lookup(ifname="pba")[0]
                qos.install(ipr, ifindex, link, [QueueLevel(0, link, link)])
            base = measure(ns, link, probes)
            with netns(ns.path), IPRoute() as ipr:
                qos.remove(ipr, ifindex)

            say("[priority] 2/2 with prio: DSCP 46 -> level 0, everything else -> level 2 (default)")
            ctl.deploy(ns.name, "prio", ["pba"], {"levels": 3})
            levels = [QueueLevel(0, link // 10), QueueLevel(1, link // 10), QueueLevel(2, link * 8 // 10)]
            ctl.configure_queues(ns.name, "prio", "pba", link, levels)
            ctl.write(ns.name, "prio", [TableEntry("dscp_levels", {"dscp": EF_DSCP}, "set_level", {"level": 0})])
            with_prio = measure(ns, link, probes)
            stats = ctl.queue_stats(ns.name, "prio", "pba")
            regs = ctl.read_registers(ns.name, "prio", "levels")
        finally:
            ctl.forget_node(ns.name)

    say("\nprobe round trip (ms), same run:")
    _, base_p99 = report("rate-limited link, no NF", *base, probes)
    _, prio_p99 = report("with prio (probe at level 0)", *with_prio, probes)
    say("\nper-level queues with prio (HTB class statistics) and classifier registers:")
    say(f"  {'level':>5} {'rate Mbit/s':>11} {'sent pkts':>10} {'sent MB':>9} {'drops':>8} {'classified':>11}")
    for q in stats:
        say(f"  {q.level:>5} {q.rate_bps / 1e6:>11g} {q.packets:>10} {q.bytes / 1e6:>9.2f} {q.drops:>8} "
            f"{int(regs['packets'][q.level]):>11}")
    ratio = base_p99 / prio_p99 if prio_p99 else float("inf")
    say(f"\np99 without / with prio: {ratio:.1f}x  (target: at least 10x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="10mbit", help="link rate (HTB parent), e.g. 10mbit")
    parser.add_argument("--probes", type=int, default=400, help="probe pings per case (every 10 ms)")
    parser.add_argument("--quick", action="store_true", help="100 probes per case")
    args = parser.parse_args(argv)
    probes = 100 if args.quick else args.probes
    link = parse_rate(args.rate, "--rate")
    if not start(__file__, argv, args.quick, "tc, BPF programs and network namespaces"):
        return 1
    for tool in ("iperf3", "ping", "nsenter"):
        if not shutil.which(tool):
            say(f"bench/priority.py needs {tool}: run `make setup`")
            return 2

    def body() -> None:
        try:
            bench(link, probes)
        finally:
            current().drop()

    return run(body)



if __name__ == "__main__":
    sys.exit(main())
