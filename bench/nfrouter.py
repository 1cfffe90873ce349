"""NFRouter benchmark: per-packet cost in XDP, and forwarded packets/s, XDP vs kernel.

    .venv/bin/python bench/nfrouter.py [--quick]        (as root)

1. Per-packet cost of the NFRouter program with BPF_PROG_TEST_RUN (unattached, in a
   throwaway namespace, no redirect actually performed; every check of the fast path runs,
   the ingress MAC's too), for IPv4/IPv6 frames of 64 and 1500 bytes, next to a trivial
   XDP program (xdp_pass) that shows the fixed cost of running any program. The router's
   own_ipv4 holds r1's addresses, as the XDP target writes them.
2. Forwarded packets per second over h1 - r1 - h2 (topology `linear`): a kernel-side
   generator (ebpf/trafficgen.bpf.c, BPF_PROG_TEST_RUN in live-frames mode) pushes UDP
   frames out of h1-eth0 as fast as one CPU can, with NFRouter on r1 (XDP fast path) and
   with r1 forwarding in its kernel. Each path is measured twice: into h2's stack (rxcount
   on h2-eth0 counts and passes), and into an XDP sink on h2-eth0 that counts and drops,
   so the figure is the router path's without h2's receive work.

The bench works in a scope of its own (bench-<pid>), removed at the end.
It prints figures and asserts nothing: it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

from pyroute2 import IPRoute  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from bench.harness import run, say, start  # noqa: E402
from controller.bpf import libbpf  # noqa: E402
from controller.bpf.build import compile_program  # noqa: E402
from controller.netns import netns  # noqa: E402
from controller.node import Node  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.targets.xdp import write_own_ipv4, write_port_macs  # noqa: E402
from controller.topology import load_topology  # noqa: E402
from testbed.scratch import Veth, namespace  # noqa: E402

XDP_REDIRECT = 4
XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
ROUTE_ACTION_FORWARD = 0
LO_IFINDEX = 1   # a test run's ingress: its namespace's loopback
ETH_HLEN = 14

SRC_V4, DST_V4 = "10.0.1.2", "10.0.2.2"
SRC_V6, DST_V6 = "2001:db8:0:1::2", "2001:db8:0:2::2"
# topology `linear`'s addressing plan: h1-eth0 -> r1-eth0, then r1-eth1 -> h2-eth0
SRC_MAC, DST_MAC = "02:00:00:01:01:02", "02:00:00:02:01:01"
EGRESS_MAC = "02:00:00:02:02:01"
ROUTER_V4 = ("10.0.1.1", "10.0.2.1")   # r1's own addresses, which the sources are checked against


def udp_frame(size: int, v6: bool, ttl: int = 255, src_mac: str = SRC_MAC, dst_mac: str = DST_MAC,
              src: str | None = None, dst: str | None = None) -> bytes:
    """An Ethernet/IP/UDP frame of exactly `size` bytes (no FCS), all of it IP: no Ethernet padding."""
    if v6:
        ip = IPv6(src=src or SRC_V6, dst=dst or DST_V6, hlim=ttl)
        overhead = ETH_HLEN + 40 + 8
    else:
        ip = IP(src=src or SRC_V4, dst=dst or DST_V4, ttl=ttl)
        overhead = ETH_HLEN + 20 + 8
    if size < overhead:
        raise ValueError(f"a {size}-byte frame cannot hold the headers ({overhead} bytes)")
    frame = bytes(Ether(src=src_mac, dst=dst_mac) / ip / UDP(sport=4000, dport=9) / Raw(b"\x00" * (size - overhead)))
    assert len(frame) == size, (len(frame), size)
    return frame


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


# ---- 1. per-packet cost with BPF_PROG_TEST_RUN ----------------------------------------------

CASES = [("IPv4  64 B", False, 64), ("IPv4 1500 B", False, 1500),
         ("IPv6  64 B", True, 64), ("IPv6 1500 B", True, 1500)]
REPEAT = 250   # TTL 255 -> 5 within one call: every repetition takes the forward path


def bench_prog_run(calls: int) -> list[tuple]:
    """Median over `calls` test runs of the kernel's ns per repetition, per case and program.

    The runs go round-robin over every case and program, so a burst of load elsewhere on
    the machine spreads over all of them instead of skewing one. They run in a throwaway
    namespace: a test run's frames arrive on its loopback (the ingress, given the frames'
    destination MAC in port_macs) and are routed out of a veth there (the egress: a route
    back out of the ingress would go to the kernel as a hairpin)."""
    say(f"[1/2] per-packet cost: BPF_PROG_TEST_RUN, {calls} calls x {REPEAT} repetitions per case, "
        f"round-robin over {len(CASES)} cases x 2 programs")
    with namespace("bench", [Veth("bva", "bvb")]) as ns, netns(ns.path):
        return _prog_run_rounds(calls, Node(ns.name, ns.path).interface("bva")["ifindex"])


def _prog_run_rounds(calls: int, egress: int) -> list[tuple]:
    router = libbpf.BpfObject(str(compile_program("ebpf/nfrouter.bpf.c"))).load()
    baseline = libbpf.BpfObject(str(compile_program("ebpf/xdp_pass.bpf.c"))).load()
    try:
        # the repetitions of a run share one buffer: the route writes the ingress's own MAC as
        # the next hop's, so each repetition arrives addressed to the router again
        entry = struct.pack("=III6s6s", ROUTE_ACTION_FORWARD, egress, 0, mac(DST_MAC), mac(EGRESS_MAC))
        router.maps["ipv4_routes"].update(struct.pack("=I4s", 32, ipaddress.ip_address(DST_V4).packed), entry)
        router.maps["ipv6_routes"].update(struct.pack("=I16s", 128, ipaddress.ip_address(DST_V6).packed), entry)
        port = struct.pack("=I", egress)
        router.maps["tx_ports"].update(port, port)
        write_port_macs(router.maps["port_macs"], {LO_IFINDEX: mac(DST_MAC)}, "bench")
        write_own_ipv4(router.maps["own_ipv4"], [ipaddress.ip_address(a).packed for a in ROUTER_V4], "bench")
        progs = {"nfrouter": router.programs["nfrouter"], "xdp_pass": baseline.programs["xdp_pass"]}
        frames = {name: udp_frame(size, v6) for name, v6, size in CASES}
        durations = {(c, p): [] for c in frames for p in progs}
        verdicts = {c: set() for c in frames}
        for i in range(calls + 1):   # the first round warms up and is not counted
            if i % max(1, calls // 4) == 0 and i:
                say(f"      {i}/{calls} rounds")
            for case, frame in frames.items():
                for prog, fd in progs.items():
                    res = libbpf.test_run(fd, frame, repeat=REPEAT)
                    if i:
                        durations[case, prog].append(res.duration_ns)
                    if prog == "nfrouter":
                        verdicts[case].add(res.retval)
        counts = router.maps["verdicts"].lookup_per_cpu(struct.pack("=I", 0))
        forwarded = sum(struct.unpack_from("=Q", c)[0] for c in counts)
        others = len(counts[0]) // 8 - 1
        refused = sum(sum(struct.unpack_from(f"={others}Q", c, 8)) for c in counts)
        say(f"      nfrouter verdict counters: forwarded={forwarded} other verdicts={refused}")
        return [(c, statistics.median(durations[c, "nfrouter"]), statistics.median(durations[c, "xdp_pass"]),
                 verdicts[c]) for c in frames]
    finally:
        router.close()
        baseline.close()


def print_prog_run(rows: list[tuple]) -> None:
    say("")
    say(f"{'case':<12} {'nfrouter ns/pkt':>16} {'xdp_pass ns/pkt':>16} {'difference':>11}  verdict")
    for name, ns, base, verdicts in rows:
        verdict = ", ".join(XDP_ACTIONS.get(v, str(v)) for v in sorted(verdicts))
        warn = "" if verdicts == {XDP_REDIRECT} else "   <- NOT the fast path"
        say(f"{name:<12} {ns:>16.1f} {base:>16.1f} {ns - base:>11.1f}  {verdict}{warn}")
    say("")


# ---- 2. forwarded packets/s, XDP vs kernel -------------------------------------------------

TRAFFICGEN_HEAD = 64   # HEAD_LEN in ebpf/trafficgen.bpf.c: bytes restored on every run
XDP_FLAGS_DRV_MODE = 4
SINKS = {"stack": "h2's stack (rxcount: XDP_PASS)", "xdp-drop": "h2 drops in XDP (sink)"}


class TrafficGen:
    """ebpf/trafficgen.bpf.c: `trafficgen` redirects its test frame out of one interface in
    live-frames mode; `sink` counts and drops what an interface receives."""

    def __init__(self):
        self.obj = libbpf.BpfObject(str(compile_program("ebpf/trafficgen.bpf.c"))).load()
        self.fd = self.obj.programs["trafficgen"]
        self.sink_fd = self.obj.programs["sink"]

    def run(self, node, ifindex: int, frame: bytes, packets: int, batch: int = 64) -> float:
        """Send `packets` copies of `frame` out of `ifindex` in `node`'s namespace; the wall time."""
        if len(frame) < TRAFFICGEN_HEAD:
            raise ValueError(f"trafficgen sends frames of {TRAFFICGEN_HEAD} bytes or more")
        config = struct.pack(f"=II{TRAFFICGEN_HEAD}s", ifindex, 0, frame[:TRAFFICGEN_HEAD])
        self.obj.maps["config"].update(struct.pack("=I", 0), config)
        # data_end: the frame's length, as the kernel's context checks expect
        ctx = libbpf.XdpMd(data=0, data_end=len(frame), ingress_ifindex=ifindex)
        with netns(node.netns):
            t0 = time.perf_counter()
            libbpf.test_run(self.fd, frame, repeat=packets, ctx=ctx,
                            flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch)
            elapsed = time.perf_counter() - t0
        # live mode reports no retval (the kernel leaves it 0): the counters at r1 and h2 tell
        return elapsed

    def sunk(self) -> int:
        return sum(struct.unpack_from("=Q", v)[0]
                   for v in self.obj.maps["sink_packets"].lookup_per_cpu(struct.pack("=I", 0)))

    def set_sink(self, node, ifindex: int, on: bool) -> None:
        """Attach `sink` to (or detach it from) `ifindex` in `node`'s namespace, native mode."""
        with netns(node.netns), IPRoute() as ipr:
            ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", self.sink_fd if on else -1),
                                                          ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})

    def close(self) -> None:
        self.obj.close()


def one_path(tb, gen: TrafficGen, path: str, sink: str, frame: bytes, packets: int, warmup: int,
             ifindex: int) -> tuple:
    if sink == "stack":
        rx = lambda: tb.controller.read_stat("h2", "rxcount", "rx")["packets"]   # noqa: E731
    else:
        rx = gen.sunk
    h1 = tb.node("h1")
    gen.run(h1, ifindex, frame, warmup)
    time.sleep(0.2)
    verdicts0 = tb.controller.read_stat("r1", "nfrouter", "verdicts") if path == "XDP" else None
    before = rx()
    seconds = gen.run(h1, ifindex, frame, packets)
    time.sleep(0.3)   # let the last frames drain through r1 and h2
    delivered = rx() - before
    pps = delivered / seconds
    say(f"      {path:<6} -> {SINKS[sink]}: {packets} sent in {seconds:.3f} s "
        f"({packets / seconds / 1e6:.3f} Mpps offered), {delivered} delivered ({pps / 1e6:.3f} Mpps)")
    if verdicts0 is not None:
        v1 = tb.controller.read_stat("r1", "nfrouter", "verdicts")
        grew = {k: v1[k] - verdicts0[k] for k in v1 if v1[k] != verdicts0[k]}
        say(f"             r1 NFRouter verdicts during the run: {grew or 'none'}")
        if grew.get("forwarded", 0) <= 0:
            say("             WARNING: NFRouter's forwarded counter did not grow: this is not the fast path")
    return path, sink, packets, delivered, seconds, pps


def bench_forwarding(packets: int, warmup: int) -> list[tuple]:
    from testbed.net import Testbed   # Mininet only for this part

    topo = load_topology("linear")
    h1_if, h2_if = topo.node("h1").interfaces[0], topo.node("h2").interfaces[0]
    frame = udp_frame(64, v6=False, ttl=64, src_mac=h1_if.mac, dst_mac=topo.gateway("h1").mac,
                      src=str(h1_if.ipv4.ip), dst=str(h2_if.ipv4.ip))
    say(f"[2/2] forwarding: {packets} x 64 B UDP {h1_if.ipv4.ip} -> {h2_if.ipv4.ip} per run over "
        f"h1 - r1 - h2, generator (trafficgen, live frames) in h1")
    tb = Testbed(topo, progress=lambda m: say("      " + m))
    gen, sink_on, h2_ifindex = None, False, None
    rows = []
    try:
        tb.start()
        gen = TrafficGen()
        ifindex = tb.node("h1").interface(h1_if.name)["ifindex"]
        h2_ifindex = tb.node("h2").interface(h2_if.name)["ifindex"]

        def use_sink(on: bool) -> None:
            nonlocal sink_on
            if on:
                tb.controller.remove("h2", "rxcount")
                gen.set_sink(tb.node("h2"), h2_ifindex, True)
                sink_on = True
            else:
                gen.set_sink(tb.node("h2"), h2_ifindex, False)
                sink_on = False
                tb.controller.deploy("h2", "rxcount", [h2_if.name])

        say("      XDP fast path: NFRouter on r1")
        rows.append(one_path(tb, gen, "XDP", "stack", frame, packets, warmup, ifindex))
        use_sink(True)
        rows.append(one_path(tb, gen, "XDP", "xdp-drop", frame, packets, warmup, ifindex))

        say("      kernel forwarding: NFRouter removed from r1 (its kernel routes put back), rxcount (XDP_PASS) "
            "on r1-eth0")
        r1 = tb.controller.plane("r1")
        kernel = r1.fib_routes()
        tb.controller.remove("r1", "nfrouter")   # takes its routes out of the kernel FIB too
        r1.fib_replace(kernel)                   # the same routes and neighbours: Linux forwards alone
        tb.controller.deploy("r1", "rxcount", ["r1-eth0"])
        rows.append(one_path(tb, gen, "kernel", "xdp-drop", frame, packets, warmup, ifindex))
        use_sink(False)
        rows.append(one_path(tb, gen, "kernel", "stack", frame, packets, warmup, ifindex))
    finally:
        if sink_on:
            try:
                gen.set_sink(tb.node("h2"), h2_ifindex, False)
            except Exception as exc:  # noqa: BLE001 - tear down whatever happens
                say(f"      detaching the sink from h2: {exc}")
        if gen is not None:
            gen.close()
        tb.stop()   # removes nfrouter and rxcount from every node, whichever are there
    return rows


def print_forwarding(rows: list[tuple]) -> None:
    say("")
    say(f"{'path':<7} {'receiver':<33} {'sent':>9} {'delivered':>10} {'seconds':>8} {'pps':>11}")
    for path, sink, sent, delivered, seconds, pps in rows:
        say(f"{path:<7} {SINKS[sink]:<33} {sent:>9} {delivered:>10} {seconds:>8.3f} {pps:>11,.0f}")
    pps = {(path, sink): p for path, sink, *_, p in rows}

    def ratio(sink: str) -> str:
        x, k = pps.get(("XDP", sink)), pps.get(("kernel", sink))
        return f"{x / k:.2f}x" if x and k else "n/a"

    say(f"XDP/kernel pps ratio: {ratio('xdp-drop')} (target >= 2x)  router path: h2 drops in XDP")
    say(f"XDP/kernel pps ratio: {ratio('stack')}                 end to end: into h2's IP/UDP stack")
    say("(the generator, r1 and h2 all run in softirq on the generator's CPU, so pps = 1 / the CPU cost\n"
        " of the whole path per packet; the end-to-end figure adds h2's stack, the same work for both\n"
        " paths. `delivered` counts every frame h2-eth0 receives, a few IPv6 ND/MLD frames among them)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a shorter run (fewer calls, fewer packets)")
    args = ap.parse_args(argv)
    if not start(__file__, argv, args.quick, "BPF and Mininet"):
        return 1
    calls = 40 if args.quick else 200
    packets, warmup = (1_000_000, 100_000) if args.quick else (5_000_000, 500_000)

    def body() -> None:
        try:
            print_prog_run(bench_prog_run(calls))
            print_forwarding(bench_forwarding(packets, warmup))
        finally:
            current().drop()

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
