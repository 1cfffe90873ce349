"""Priority queueing benchmark: a high-priority probe's latency on a saturated link, against the idle link.

    .venv/bin/python bench/priority.py [--rate 10mbit] [--probes 400] [--targets xdp,bmv2] [--plot PATH]
                                       [--quick]   (as root)

A probe flow (ping every 10 ms with TOS 0xb8 = DSCP EF) measures the round trip over one
rate-limited link, three times in the same run on each target:

1. idle: the rate-limited link with no NF and no load: the floor;
2. loaded, without prio: iperf3 UDP (DSCP 0, 1400-byte datagrams, twice the link rate)
   saturates the link; the probe waits behind the load's backlog;
3. loaded, with prio: the controller deploys prio, maps DSCP 46 to level 0 and sets up the
   level queues (level 0 first); the load lands in the lowest level.

XDP/tc: namespaces A and B joined by a veth pair; the link is A's egress, shaped by HTB (one
class at the link rate without prio, prio's HTB tree with it; prio's classifier runs at tc
egress). Probe and load are A's own packets, so both cross the qdisc: no XDP redirect is on
the path, so no link emulator is needed (testbed.linkemu is for routers' redirects).
BMv2: A - switch - B, simple_switch_grpc (--priority-queues 8) running nfrouter, and prio in
case 3; the link is the switch's port towards B, its queues rate-limited in packets/s
(through Thrift without prio, by configure_queues with it). The replies come back over the
unshaped direction, so the round trip is the queueing delay of the shaped egress plus a
constant. The idle round trip includes waking CPUs that sleep between probes (an idle
machine's, on a VM a halted vCPU's); under load they are awake, so the loaded round trip
with prio can come out below idle.

It prints p50/p99 per case, the probe loss, the rate B received during the probes (so a
link carrying more than its rate would show), the with-prio figures over idle (goal: p99
within 2x) and without over with prio, and plots the three round-trip distributions per
target (CDFs; a PNG outside the source tree unless --plot says otherwise). BMv2 runs where
simple_switch_grpc and p4c are found, otherwise the run says why. Ratios are against figures
of the same run; the bench asserts nothing beyond the work having been done. It works in a
scope of its own (bench-<pid>), removed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

from pyroute2 import IPRoute  # noqa: E402

from bench.harness import run, say, start  # noqa: E402
from controller import qos  # noqa: E402
from controller.netns import netns  # noqa: E402
from controller.node import Node  # noqa: E402
from controller.p4 import switch  # noqa: E402
from controller.p4.thrift import ThriftClient  # noqa: E402
from controller.queues import QueueLevel, parse_rate  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.service import Controller  # noqa: E402
from controller.tables import TableEntry  # noqa: E402
from controller.targets.bmv2 import QUEUE_PACKET_BYTES, UNLIMITED_RATE  # noqa: E402
from testbed.scratch import Veth, namespace, sh  # noqa: E402

EF_DSCP = 46
IPERF_PORT = 5299
LOAD_DATAGRAM = 1400
WARMUP_S = 1.5          # the load fills the queue before the probe starts
DEFAULT_PLOT = Path(tempfile.gettempdir()) / "innet-priority.png"   # not into the source tree
CASES = ("idle", "loaded, without prio", "loaded, with prio")
GOAL_P99_OVER_IDLE = 2.0
_RTT = re.compile(r"time=([\d.]+) ms")

# XDP/tc: A's pba <-> B's pbb
TC_A, TC_B = "10.78.0.1", "10.78.0.2"
# BMv2: A's pwa <-> the switch's pwsa, the switch's pwsb <-> B's pwb
SW_A, SW_B = "10.79.1.1", "10.79.2.2"
NET_A, NET_B = "10.79.1.0/24", "10.79.2.0/24"
SW_GW_A, SW_GW_B = "10.79.1.254", "10.79.2.254"   # the switch's side of each subnet: no address, a MAC
MAC = {"pwa": "02:79:00:00:01:01", "pwsa": "02:79:00:00:01:fe", "pwsb": "02:79:00:00:02:fe", "pwb": "02:79:00:00:02:02"}


@dataclass
class Probe:
    rtts: list[float]
    lost: int
    received_bps: float        # at B, while the probes ran


@dataclass
class TargetRun:
    name: str
    cases: dict[str, Probe] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what the target's data plane counted


def in_ns(ns: str, cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{ns}", *cmd], **kw)


def rx_bytes(ns: str, ifname: str) -> int:
    return json.loads(sh(ns, f"ip -j -s link show dev {ifname}"))[0]["stats64"]["rx"]["bytes"]


def measure(sender: str, receiver: str, rx_ifname: str, dst: str, link_bps: int, probes: int,
            loaded: bool) -> Probe:
    """Round trips (ms) of `probes` EF pings from `sender` to `dst` in `receiver`, with iperf3 UDP
    saturating the link at twice its rate if `loaded`; the rate `rx_ifname` received meanwhile."""
    procs = []
    try:
        if loaded:
            procs.append(in_ns(receiver, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.3)
            duration = WARMUP_S + probes * 0.01 + 2
            procs.append(in_ns(sender, ["iperf3", "-c", dst, "-p", str(IPERF_PORT), "-u", "-b", str(2 * link_bps),
                                        "-l", str(LOAD_DATAGRAM), "-t", str(math.ceil(duration))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(WARMUP_S)
        before, began = rx_bytes(receiver, rx_ifname), time.monotonic()
        ping = in_ns(sender, ["ping", "-n", "-c", str(probes), "-i", "0.01", "-W", "3", "-Q", hex(EF_DSCP << 2), dst],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(probes * 0.01)   # while the probes go out, not while ping waits for late replies
        received_bps = 8 * (rx_bytes(receiver, rx_ifname) - before) / (time.monotonic() - began)
        out, _ = ping.communicate(timeout=30)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
    rtts = [float(m) for m in _RTT.findall(out)]
    return Probe(rtts, probes - len(rtts), received_bps)


def three_cases(run_: TargetRun, measure_case, plain_link, prio_link) -> None:
    """Idle and loaded on the plain link (the `plain_link` context), then loaded with prio."""
    say(f"[priority] {run_.name}: 1/3 idle, 2/3 loaded without prio: the plain rate-limited link")
    with plain_link():
        run_.cases[CASES[0]] = measure_case(loaded=False)
        run_.cases[CASES[1]] = measure_case(loaded=True)
    say(f"[priority] {run_.name}: 3/3 loaded with prio: DSCP {EF_DSCP} -> level 0, everything else -> level 2")
    with prio_link():
        run_.cases[CASES[2]] = measure_case(loaded=True)


def prio_levels(link_bps: int) -> list[QueueLevel]:
    return [QueueLevel(0, link_bps // 10), QueueLevel(1, link_bps // 10), QueueLevel(2, link_bps * 8 // 10)]


# ---- XDP/tc: prio's tc classifier and HTB on a veth pair ----------------------------------------

def bench_tc(link_bps: int, probes: int) -> TargetRun:
    result = TargetRun("XDP/tc")
    with namespace("pb", [Veth("pba", "pbb", f"{TC_A}/24", f"{TC_B}/24")], peers_apart=True, ipv6=False) as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path))

        @contextmanager
        def plain_link() -> Iterator[None]:
            with netns(ns.path), IPRoute() as ipr:
                ifindex = ipr.link_lookup(ifname="pba")[0]
                qos.install(ipr, ifindex, link_bps, [QueueLevel(0, link_bps, link_bps)])
            try:
                yield
            finally:
                with netns(ns.path), IPRoute() as ipr:
                    qos.remove(ipr, ifindex)

        @contextmanager
        def prio_link() -> Iterator[None]:
            ctl.deploy(ns.name, "prio", ["pba"], {"levels": 3})
            ctl.configure_queues(ns.name, "prio", "pba", link_bps, prio_levels(link_bps))
            ctl.write(ns.name, "prio", [TableEntry("dscp_levels", {"dscp": EF_DSCP}, "set_level", {"level": 0})])
            yield
            stats = ctl.queue_stats(ns.name, "prio", "pba")
            regs = ctl.read_registers(ns.name, "prio", "levels")
            result.notes.append(f"{'level':>7} {'rate Mbit/s':>11} {'sent pkts':>10} {'sent MB':>9} {'drops':>8} "
                                f"{'classified':>11}   (HTB classes, prio's registers)")
            result.notes += [f"{q.level:>7} {q.rate_bps / 1e6:>11g} {q.packets:>10} {q.bytes / 1e6:>9.2f} "
                             f"{q.drops:>8} {int(regs['packets'][q.level]):>11}" for q in stats]

        try:
            three_cases(result, lambda loaded: measure(ns.name, ns.peer, "pbb", TC_B, link_bps, probes, loaded),
                        plain_link, prio_link)
        finally:
            ctl.forget_node(ns.name)
    return result


# ---- BMv2: nfrouter (and prio) on simple_switch_grpc between A and B -----------------------------

@contextmanager
def switch_between_hosts() -> Iterator[tuple[str, str, str]]:
    """(switch namespace, A, B): A's pwa <-> pwsa and pwsb <-> B's pwb, the switch's BMv2 running
    on pwsa (port 1) and pwsb (port 2); each host routes the other's subnet through the switch."""
    with namespace("pw", [Veth("pwsa", "pwa", None, f"{SW_A}/24")], peers_apart=True, lo_up=True,
                   ipv6=False) as sw, namespace("pwb", [], ipv6=False) as b:
        a = sw.peer
        sh(sw.name, f"ip link add pwsb type veth peer name pwb netns {b.name} && ip link set pwsb up")
        sh(b.name, f"ip link set pwb up && ip addr add {SW_B}/24 dev pwb")
        ends = ((a, "pwa", "pwsa", SW_GW_A, NET_B), (b.name, "pwb", "pwsb", SW_GW_B, NET_A))
        for ns, host_if, switch_if, gateway, far_net in ends:
            # checksums complete in the frame: BMv2 takes it from the wire as it is
            sh(ns, f"ip link set {host_if} address {MAC[host_if]} && ethtool -K {host_if} tx off >/dev/null && "
                   f"ip neigh add {gateway} lladdr {MAC[switch_if]} dev {host_if} nud permanent && "
                   f"ip route add {far_net} via {gateway}")
            sh(sw.name, f"ip link set {switch_if} address {MAC[switch_if]} && "
                        f"ethtool -K {switch_if} gro off >/dev/null")
        switch.start(current(), sw.name, ["pwsa", "pwsb"], netns=sw.path, progress=lambda msg: say("      " + msg))
        try:
            yield sw.name, a, b.name
        finally:
            switch.stop(current(), sw.name)


def bench_bmv2(link_bps: int, probes: int) -> TargetRun:
    result = TargetRun("BMv2")
    with switch_between_hosts() as (sw, a, b):
        ctl = Controller()
        ctl.add_node(Node(sw, f"/var/run/netns/{sw}", "router", "bmv2", kernel_slow_path=False))
        info = switch.info(current(), sw)
        egress = info.ports["pwsb"]
        link_pps = max(1, link_bps // (8 * QUEUE_PACKET_BYTES))   # as configure_queues converts a rate

        def set_rates(pps: int) -> None:
            thrift = ThriftClient(info.netns, info.thrift_port, f"BMv2 switch of {sw}")
            try:
                for priority in range(info.priority_queues):
                    thrift.set_queue_rate(egress, priority, pps)
            finally:
                thrift.close()

        @contextmanager
        def plain_link() -> Iterator[None]:
            set_rates(link_pps)
            try:
                yield
            finally:
                set_rates(UNLIMITED_RATE)

        @contextmanager
        def prio_link() -> Iterator[None]:
            ctl.deploy(sw, "prio", ["pwsa", "pwsb"], {"levels": 3})
            ctl.configure_queues(sw, "prio", "pwsb", link_bps, prio_levels(link_bps))
            ctl.write(sw, "prio", [TableEntry("dscp_levels", {"dscp": EF_DSCP}, "set_level", {"level": 0})])
            before = ctl.read_registers(sw, "prio", "levels")["packets"]
            yield
            classified = ctl.read_registers(sw, "prio", "levels")["packets"] - before
            result.notes += [f"packets classified per level (prio's registers, both directions): "
                             f"{', '.join(f'{lv}: {int(n)}' for lv, n in enumerate(classified))}",
                             f"each level's queue limited to {link_pps} packets/s on its own (BMv2 has no "
                             f"port-wide rate, and keeps no queue statistics)"]

        try:
            ctl.deploy(sw, "nfrouter", ["pwsa", "pwsb"])
            ctl.write(sw, "nfrouter", [
                TableEntry("ipv4_routes", {"dst_addr": net}, "forward",
                           {"egress_port": port, "dst_mac": MAC[host_if], "src_mac": MAC[port]})
                for net, port, host_if in ((NET_B, "pwsb", "pwb"), (NET_A, "pwsa", "pwa"))])
            three_cases(result, lambda loaded: measure(a, b, "pwb", SW_B, link_bps, probes, loaded),
                        plain_link, prio_link)
        finally:
            ctl.forget_node(sw)
    return result


# ---- printing and plotting -------------------------------------------------------------------------

def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def p50_p99(probe: Probe) -> tuple[float, float]:
    if not probe.rtts:
        return float("inf"), float("inf")
    return percentile(probe.rtts, 50), percentile(probe.rtts, 99)


def report(runs: list[TargetRun], link_bps: int, probes: int) -> None:
    say(f"\nprobe round trip (ms), same run; link {link_bps / 1e6:g} Mbit/s; {probes} probes per case")
    say(f"  {'target':<7} {'case':<21} {'p50':>9} {'p99':>9} {'lost':>8} {'B received':>12}")
    for r in runs:
        for case, probe in r.cases.items():
            p50, p99 = p50_p99(probe)
            say(f"  {r.name:<7} {case:<21} {p50:9.3f} {p99:9.3f} {f'{probe.lost}/{probes}':>8} "
                f"{probe.received_bps / 1e6:>7.2f} Mbit/s")
    say(f"\nratios (same run): with prio / idle (goal: p99 within {GOAL_P99_OVER_IDLE:g}x), without / with prio")
    for r in runs:
        (idle50, idle99), (base50, base99), (prio50, prio99) = (p50_p99(r.cases[c]) for c in CASES)
        met = "met" if prio99 <= GOAL_P99_OVER_IDLE * idle99 else "not met"
        say(f"  {r.name:<7} with prio / idle: p50 {prio50 / idle50:.2f}x, p99 {prio99 / idle99:.2f}x ({met});  "
            f"without / with prio: p50 {base50 / prio50:.0f}x, p99 {base99 / prio99:.0f}x")
    for r in runs:
        if r.notes:
            say(f"\n{r.name}, with prio:")
            for line in r.notes:
                say(f"  {line}")


def plot(runs: list[TargetRun], path: Path, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no plot: matplotlib is missing (install the bench extra: .venv/bin/pip install -e '.[bench]')")
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    for ax, r in zip(axes[0], runs):
        for colour, (case, probe) in enumerate(r.cases.items()):
            if probe.rtts:
                xs = sorted(probe.rtts)
                ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", color=f"C{colour}",
                        label=f"{case} (p99 {p50_p99(probe)[1]:.3g} ms, {probe.lost} lost)")
        idle99 = p50_p99(r.cases[CASES[0]])[1]
        ax.axvline(GOAL_P99_OVER_IDLE * idle99, color="grey", linestyle=":",
                   label=f"goal: {GOAL_P99_OVER_IDLE:g}x idle p99")
        ax.set_xscale("log")
        ax.set_xlabel("probe round trip (ms, log)")
        ax.set_ylabel("fraction of probes")
        ax.set_title(r.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    say(f"plot written: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="10mbit", help="link rate, e.g. 10mbit")
    parser.add_argument("--probes", type=int, default=400, help="probe pings per case (every 10 ms)")
    parser.add_argument("--targets", default="xdp,bmv2", help="comma-separated: xdp (tc), bmv2")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG to write (default {DEFAULT_PLOT})")
    parser.add_argument("--quick", action="store_true", help="100 probes per case")
    args = parser.parse_args(argv)
    probes = 100 if args.quick else args.probes
    link = parse_rate(args.rate, "--rate")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(targets) - {"xdp", "bmv2"}:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if not start(__file__, argv, args.quick, "tc, BPF programs, network namespaces and BMv2"):
        return 1
    for tool in ("iperf3", "ping", "nsenter", "ethtool"):
        if not shutil.which(tool):
            say(f"bench/priority.py needs {tool}: run `make setup`")
            return 2

    def body() -> None:
        say(f"[priority] link {link / 1e6:g} Mbit/s, loaded by iperf3 UDP at {2 * link / 1e6:g} Mbit/s (DSCP 0, "
            f"{LOAD_DATAGRAM}-byte datagrams); probe: {probes} pings with DSCP {EF_DSCP}, every 10 ms")
        runs = []
        try:
            if "xdp" in targets:
                runs.append(bench_tc(link, probes))
            if "bmv2" in targets:
                why = switch.unavailable()
                if why:
                    say(f"[priority] BMv2 skipped: {why}")
                else:
                    runs.append(bench_bmv2(link, probes))
        finally:
            current().drop()
        report(runs, link, probes)
        if runs:
            plot(runs, args.plot, f"innet prio: probe round trips on a {link / 1e6:g} Mbit/s link, {probes} per case")

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
