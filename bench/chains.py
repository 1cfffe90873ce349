"""Service chains on XDP and BMv2: deploy to first packet, per-packet cost of the forwarder, many services.

    .venv/bin/python bench/chains.py [--quick] [--target xdp|bmv2|both] [--parts 123]   (as root)

1. Deploy -> first packet, on each target asked for (--target, default both): `line3` in
   Mininet, its routers XDP, then the same line with every router a BMv2 switch
   (`load_topology("line3").retarget("bmv2")`, simple_switch_grpc running the composed pipeline
   p4/innet.p4 with sff.p4 first; an NF behind the forwarder runs on a recirculation). A probe in
   h1's namespace sends a TCP SYN to h2:5201 every millisecond (raw socket, TTL 64), a probe in
   h2's namespace timestamps each one as it arrives (CLOCK_MONOTONIC, one clock for every
   namespace). Routed plainly a probe arrives with TTL 61 (three routers); through the chain with
   TTL 63 (the inner packet is routed once, at the egress, after decapsulation): the same on both
   targets. Each run deploys nsds/heavy-hitters-sol006.yaml (cms -> precision -> cms over r1 r2
   r3, classifying TCP to port 5201) in process with ChainService.deploy, takes the time until
   the first TTL-63 probe, then deletes the service and waits for plainly routed probes again.
   Twice: cold (no other service, so the deploy puts the forwarder on r1, r2, r3 and the delete
   takes it away) and warm (another service keeps the forwarders; its cms holds a slot on r1, so
   placement, which balances (and on BMv2 runs one cms per switch), runs the chain's first cms
   on r2 and the rest on r3). Where a deploy spends its time is taken from the controller calls
   it makes.
   Then the one-way latency of the probes (each carries its send time), routed plainly and
   through the chain, the share of probes lost (by sequence number), and from it the per-hop
   processing figure placement counts against delay budgets (controller.chains.HOP_MS[target]:
   the chained p50 over the 3 routers). BMv2 sends through libpcap, whose ring holds ~32 frames:
   at one probe a millisecond none should be lost, and the loss printed says whether any was.
2. Per-packet cost, XDP only (BMv2 has no BPF_PROG_TEST_RUN): BPF_PROG_TEST_RUN (one run per
   call: classify and decap change the frame) on the deployed programs, in each router's
   namespace, median ns/packet, round-robin: r1's nfrouter routing a plain 64-byte frame (the
   reference), sff missing then nfrouter routing, and the chain's steps on real frames, each one
   the previous step's output: classify + encap + forward at r1, forward at r2, decap + route at
   r3 (a chain without NFs, nsds/ping-demo.json), and the same through cms, precision, cms (the
   heavy-hitters chain).
3. Many services on one testbed, XDP only (a BMv2 switch runs one instance per NF type, so
   services of one cms each fit one per switch): generated SOL006 descriptors, h1 <-> h2, TCP,
   each to its own destination port, each with its own cms (both directions through it), naming
   no router: placement spreads the instances over the path's routers. A forwarder has 8 NF slots (sff
   max_nfs), so the testbed is a line of ceil(services / 8) routers. Deploy them one by one
   (time per service), count the rules and NF instances per node (desired and in the data
   plane), delete them one by one (time per delete), and check that no rule, NF instance or
   forwarder is left.

Parts 2 and 3 run when XDP is among the targets; --parts picks parts (e.g. --parts 1 for part 1
alone). At the end, part 1's figures per target side by side.
Part 1, full run, 2 CPUs, kernel 6.18 (first packet p50/p95, ms): XDP cold 151.9/184.9, warm
54.0/60.9, per hop 0.009 ms (chained p50 27 us, plainly routed 21 us); BMv2 cold 104.0/143.4,
warm 101.9/123.8, per hop 0.467 ms (chained p50 1402 us, p95 4218 us; plainly routed 339 us),
0.467-0.524 ms over five runs (HOP_MS["bmv2"] holds their median, 0.49); no probe lost on
either target.
The bench works in a scope of its own (bench-<pid>), removed at the end. It prints figures and
asserts nothing but that the work was done: it is a benchmark, not a test.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import time


# ---- probes (run inside a host's namespace; they import nothing of innet) -----------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def probe_send(dst: str, port: int, interval_s: float) -> int:
    """A TCP SYN to dst:port every interval_s, each from its own source port, sequence number =
    probe number, acknowledgement number = its send time (CLOCK_MONOTONIC, microseconds, low 32
    bits: a SYN's acknowledgement field is otherwise unused); until killed or standard input closes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, port))
        src = s.getsockname()[0]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    print("READY", flush=True)
    seq, due = 0, time.monotonic()
    while True:
        sport = 20000 + seq % 40000
        sent_us = time.monotonic_ns() // 1000 & 0xFFFFFFFF
        header = struct.pack("!HHIIBBHHH", sport, port, seq, sent_us, 5 << 4, 0x02, 65535, 0, 0)
        header = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
        raw.sendto(header, (dst, 0))
        seq += 1
        due += interval_s
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            due = time.monotonic()   # late: do not burst to catch up


def probe_receive(iface: str, port: int) -> int:
    """For every TCP SYN to `port` arriving at `iface`: "<monotonic ns> <IP TTL> <sequence number>
    <one-way latency in µs>" (the sender's clock is this one: namespaces share CLOCK_MONOTONIC)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    print("READY", flush=True)
    while True:
        frame, addr = sock.recvfrom(2048)
        now = time.monotonic_ns()
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 54:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != socket.IPPROTO_TCP or len(frame) < 14 + ihl + 20:
            continue
        tcp = 14 + ihl
        dport = struct.unpack_from("!H", frame, tcp + 2)[0]
        seq, sent_us = struct.unpack_from("!II", frame, tcp + 4)
        if dport == port and frame[tcp + 13] & 0x12 == 0x02:
            print(f"{now} {frame[22]} {seq} {(now // 1000 - sent_us) & 0xFFFFFFFF}", flush=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--probe":
    try:
        if sys.argv[2] == "send":
            sys.exit(probe_send(sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
        sys.exit(probe_receive(sys.argv[3], int(sys.argv[4])))
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)


# ---- the bench ------------------------------------------------------------------------------------
import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

import yaml  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from bench.harness import REPO, run, say, start  # noqa: E402
from controller.bpf import libbpf  # noqa: E402
from controller.chains import FORWARDER, HOP_MS  # noqa: E402
from controller.netns import netns  # noqa: E402
from controller.p4 import switch  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.sfc import ChainService, service_key  # noqa: E402
from controller.targets import bmv2, chain, xdp  # noqa: E402
from controller.topology import load_topology, parse_topology  # noqa: E402
from testbed import processes  # noqa: E402

HH_NSD = REPO / "nsds" / "heavy-hitters-sol006.yaml"
PING_NSD = REPO / "nsds" / "ping-demo.json"
PORT = 5201            # what the heavy-hitters descriptor classifies
PROBE_INTERVAL_S = 0.001
LATENCY_WINDOW_S = 1.0   # probes gathered for the latency figures: ~1000 at PROBE_INTERVAL_S
SENT_TTL = 64
CHAINED_TTL = SENT_TTL - 1   # routed once, at the egress router after decapsulation
SLOTS = 8                    # sff max_nfs, the catalog default: NF instances behind one forwarder
XDP_REDIRECT = 4
XDP_ACTIONS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(ns: float) -> str:
    return f"{ns / 1e6:7.1f}"


# ---- 1. deploy -> first packet ----------------------------------------------------------------------
class Probes:
    """The SYN sender in h1's namespace and the receiver in h2's; arrivals gathered by a thread."""

    def __init__(self, tb, src: str, dst: str):
        self.arrivals: list[tuple[int, int, int, int]] = []   # (monotonic ns, TTL, sequence number, latency µs)
        self.cond = threading.Condition()
        dst_addr = str(tb.topo.node(dst).interfaces[0].ipv4.ip)
        script = str(Path(__file__).resolve())
        self.procs = []
        self.receiver = self._start(tb, dst, [script, "--probe", "receive", tb.topo.node(dst).interfaces[0].name,
                                              str(PORT)])
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sender = self._start(tb, src, [script, "--probe", "send", dst_addr, str(PORT), str(PROBE_INTERVAL_S)])

    def _start(self, tb, node: str, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(["nsenter", f"--net={tb.node(node).netns}", sys.executable, *argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        if proc.stdout.readline().strip() != "READY":
            raise SystemExit(f"the probe in {node} did not start: {proc.stderr.read()[-800:]}")
        return proc

    def _read(self) -> None:
        for line in self.receiver.stdout:
            arrival = tuple(int(x) for x in line.split())
            with self.cond:
                self.arrivals.append(arrival)
                self.cond.notify_all()

    def first(self, after_ns: int, ttl: int, timeout_s: float = 5.0) -> tuple[int, int, int, int] | None:
        """The first probe to arrive after `after_ns` with this TTL (None: none within the timeout)."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            k = 0
            while True:
                while k < len(self.arrivals):
                    a = self.arrivals[k]
                    k += 1
                    if a[0] >= after_ns and a[1] == ttl:
                        return a
                left = deadline - time.monotonic()
                if left <= 0 or not self.cond.wait(left):
                    return None

    def latencies_us(self, after_ns: int, ttl: int, before_ns: int | None = None) -> tuple[list[int], int]:
        """The one-way latency of every probe that arrived after `after_ns` (and before
        `before_ns`) with this TTL; and how many of the probes sent between the first and the last
        of them did not arrive (by sequence number)."""
        with self.cond:
            got = [a for a in self.arrivals if a[0] >= after_ns and a[1] == ttl
                   and (before_ns is None or a[0] < before_ns)]
        seqs = {a[2] for a in got}
        lost = max(seqs) - min(seqs) + 1 - len(seqs) if seqs else 0
        return [a[3] for a in got], lost

    def trim(self) -> None:
        with self.cond:
            del self.arrivals[:-1]

    def stop(self) -> None:
        for proc in self.procs:   # only the probes this bench started, by their own process
            processes.end(proc)


class CallTimes:
    """Wall time of the controller calls a chain deploy makes, by kind (the controller's methods
    wrapped on this instance; the library is unchanged)."""

    KINDS = ("forwarders", "NF instances", "rule writes", "rule deletes", "removals", "compile cache")
    # inside the deploys: finding the compiled program (cache hits here; on XDP `clang --version`
    # each time, on BMv2 the composed pipeline's build for the switch's parameters)
    COMPILERS = {"xdp": (xdp, "compile_program"), "bmv2": (bmv2, "compile_p4")}

    def __init__(self, ctl, target: str):
        self.ns = dict.fromkeys(self.KINDS, 0)
        self.ctl, self.methods = ctl, {}
        for name, kind in (("deploy", None), ("write", "rule writes"), ("delete", "rule deletes"),
                           ("remove", "removals")):
            self.methods[name] = getattr(ctl, name)
            setattr(ctl, name, self._timed(self.methods[name], kind))
        self.module, self.name = self.COMPILERS[target]
        self.compiler = getattr(self.module, self.name)
        setattr(self.module, self.name, self._timed(self.compiler, "compile cache"))

    def close(self) -> None:
        """Unwrap: the module's compiler and the controller's methods as they were."""
        setattr(self.module, self.name, self.compiler)
        for name, method in self.methods.items():
            setattr(self.ctl, name, method)

    def _timed(self, method, kind):
        def call(*args, **kwargs):
            t0 = time.perf_counter_ns()
            try:
                return method(*args, **kwargs)
            finally:
                k = kind or ("forwarders" if args[1] == FORWARDER else "NF instances")
                self.ns[k] += time.perf_counter_ns() - t0
        return call

    def take(self) -> dict[str, int]:
        taken, self.ns = self.ns, dict.fromkeys(self.KINDS, 0)
        return taken


def keeper_descriptor(topo) -> dict:
    """A one-NF service on other traffic (UDP to port 5999), whose path crosses every router of
    the line: it keeps the forwarders in place for the warm runs."""
    src, dst = (h.interfaces[0].ipv4.ip for h in topo.hosts)
    return sol006_descriptor("keeper", str(src), str(dst), 5999, proto=17, reverse=False)


def bench_first_packet(tb, chains: ChainService, runs: int, target: str) -> dict:
    """Part 1 on a testbed whose routers all run `target`; its figures, for the summary."""
    say(f"[1/3] {target}: deploy -> first packet: {HH_NSD.relative_to(REPO)} on line3 (routers {target}), "
        f"{runs} runs cold and {runs} warm; probes: TCP SYN h1 -> h2:{PORT} every {PROBE_INTERVAL_S * 1e3:g} ms")
    document = HH_NSD.read_text()
    key = service_key(yaml.safe_load(document)["nsd"]["nsd"][0]["name"])
    plain_ttl = SENT_TTL - len(tb.topo.routers)
    timer = CallTimes(tb.controller, target)
    probes = Probes(tb, "h1", "h2")
    try:
        if probes.first(0, plain_ttl) is None:
            raise SystemExit(f"no probe reached h2 routed plainly (TTL {plain_ttl}) before any deploy")
        results = {}
        for mode in ("cold", "warm"):
            if mode == "warm":
                chains.deploy(keeper_descriptor(tb.topo), bind={"a": "h1", "b": "h2"}, source="keeper")
            rows = results[mode] = []
            for i in range(runs):
                probes.trim()
                timer.take()
                t0 = time.monotonic_ns()
                chains.deploy(document, source=str(HH_NSD))
                returned = time.monotonic_ns()
                calls = timer.take()
                got = probes.first(t0, CHAINED_TTL)
                if got is None:
                    raise SystemExit(f"run {i + 1} ({mode}): no probe came through the chain within 5 s of the deploy")
                if i == runs - 1:
                    shown = chains.show(key)
                    say(f"      last {mode} run: packets per hop " + ", ".join(
                        f"{h['node']}/{h['si']}:{h['action']}={h['packets']}"
                        for h in shown["hops"] if h["spi"] == shown["paths"][0]["spi"]))
                d0 = time.monotonic_ns()
                chains.delete(key)
                deleted = time.monotonic_ns()
                timer.take()
                if probes.first(deleted, plain_ttl) is None:
                    raise SystemExit(f"run {i + 1} ({mode}): probes were not routed plainly within 5 s of the delete")
                rows.append({"first": got[0] - t0, "deploy": returned - t0, "delete": deleted - d0, **calls})
            if mode == "warm":
                chains.delete("keeper")
        latency, figures = per_hop_latency(probes, chains, document, key, plain_ttl, len(tb.topo.routers), target)
    finally:
        probes.stop()
        timer.close()
    say("")
    say(f"{'':<6} {'first packet (ms)':>19} {'deploy() (ms)':>15} {'delete() (ms)':>15}   "
        f"{'median ms in: forwarders':>25} {'NF instances':>13} {'rule writes':>12} {'the rest':>9}"
        f"   {'(compile cache)':>15}")
    say(f"{'':<6} {'p50':>9} {'p95':>9} {'p50':>7} {'p95':>7} {'p50':>7} {'p95':>7}")
    for mode, rows in results.items():
        first = [r["first"] for r in rows]
        deploy = [r["deploy"] for r in rows]
        delete = [r["delete"] for r in rows]
        parts = {k: statistics.median(r[k] for r in rows)
                 for k in ("forwarders", "NF instances", "rule writes", "compile cache")}
        rest = statistics.median(r["deploy"] - r["forwarders"] - r["NF instances"] - r["rule writes"] for r in rows)
        say(f"{mode:<6} {ms(pct(first, 50)):>9} {ms(pct(first, 95)):>9} {ms(pct(deploy, 50)):>7} "
            f"{ms(pct(deploy, 95)):>7} {ms(pct(delete, 50)):>7} {ms(pct(delete, 95)):>7}   "
            f"{ms(parts['forwarders']):>25} {ms(parts['NF instances']):>13} {ms(parts['rule writes']):>12} "
            f"{ms(rest):>9}   {ms(parts['compile cache']):>15}")
    say("(first packet: from the call of ChainService.deploy to the first probe h2 receives through the\n"
        " chain, TTL 63, up to one probe interval late; target < 200 ms on XDP. cold: the deploy also puts\n"
        " the forwarder on r1, r2, r3 and the delete removes it; warm: another service keeps them there.\n"
        " forwarders: the deploy's calls for the forwarder on each router (a no-op where it runs already);\n"
        " the rest: parsing, binding, placement, the store and the operation log; compile cache: part of\n"
        " forwarders and NF instances, the lookups of the compiled programs, all cache hits)")
    say("")
    say(latency)
    say("")
    return {**{mode: (pct([r["first"] for r in rows], 50), pct([r["first"] for r in rows], 95))
               for mode, rows in results.items()}, **figures}


def per_hop_latency(probes: Probes, chains: ChainService, document: str, key: str, plain_ttl: int,
                    routers: int, target: str) -> tuple[str, dict]:
    """The one-way latency of the probes routed plainly and through the chain (one NF on each
    router), the probes lost, and from the latency the per-router figure placement counts against
    delay budgets (controller.chains.HOP_MS[target]): what this says, for the caller to print, and
    the figures."""
    t0 = time.monotonic_ns()
    time.sleep(LATENCY_WINDOW_S)
    plain, plain_lost = probes.latencies_us(t0, plain_ttl)
    chains.deploy(document, source=str(HH_NSD))
    first = probes.first(time.monotonic_ns(), CHAINED_TTL)
    if first is None:
        raise SystemExit("no probe came through the chain within 5 s of the deploy")
    time.sleep(LATENCY_WINDOW_S)
    chained, chained_lost = probes.latencies_us(first[0] + 1, CHAINED_TTL, time.monotonic_ns())
    chains.delete(key)
    if not plain or not chained:
        raise SystemExit(f"too few probes to measure latency: {len(plain)} routed plainly, {len(chained)} chained")
    per_router_ms = pct(chained, 50) / routers / 1000
    figures = {"plain_p50_us": pct(plain, 50), "chained_p50_us": pct(chained, 50), "chained_p95_us": pct(chained, 95),
               "per_hop_ms": per_router_ms, "lost": (plain_lost, len(plain), chained_lost, len(chained))}
    return (f"one-way latency h1 -> h2 over {LATENCY_WINDOW_S:g} s of probes each: routed plainly p50 "
            f"{pct(plain, 50)} us, p95 {pct(plain, 95)} us ({len(plain)} probes, {plain_lost} lost); through the "
            f"chain p50 {pct(chained, 50)} us, p95 {pct(chained, 95)} us ({len(chained)} probes, {chained_lost} "
            f"lost; lost: missing sequence numbers between the first and the last that arrived)\n"
            f"per-hop processing figure, {target}: {per_router_ms:.3f} ms per router (chained p50 / {routers} routers; "
            f"the hosts' send and receive paths counted into the routers, the veth links declare no delay); "
            f"placement counts HOP_MS[{target!r}] = {HOP_MS[target]} ms (controller.chains)"), figures


# ---- 2. per-packet cost ---------------------------------------------------------------------------------
def bench_per_packet(tb, chains: ChainService, calls: int) -> None:
    say(f"[2/3] per-packet cost: BPF_PROG_TEST_RUN on line3's deployed programs, {calls} runs per case, "
        f"round-robin, 64-byte frames")
    ctl, topo = tb.controller, tb.topo
    chains.deploy(PING_NSD.read_text(), bind={"src": "h1", "dst": "h2"}, source=str(PING_NSD))
    chains.deploy(HH_NSD.read_text(), source=str(HH_NSD))
    h1, h2 = topo.node("h1").interfaces[0], topo.node("h2").interfaces[0]
    r1, r2, r3 = (r.name for r in topo.routers)
    far = next(i for i in topo.node(r3).interfaces if topo.nodes[i.peer.node].role == "router")

    def frame(dst: str, l4) -> bytes:
        ip = IP(src=str(h1.ipv4.ip), dst=dst, ttl=SENT_TTL)
        return bytes(Ether(src=h1.mac, dst=h1.peer.mac) / ip / l4 / (b"x" * (50 - len(ip / l4))))

    plain = frame(str(h2.ipv4.ip), UDP(sport=4000, dport=9))               # the ping-demo chain classifies it
    missed = frame(str(far.ipv4.ip), UDP(sport=4000, dport=9))             # no chain: routed towards r3
    hh = frame(str(h2.ipv4.ip), TCP(sport=40000, dport=PORT, flags="S"))   # the heavy-hitters chain
    fds = {}
    target = ctl.target("xdp")
    for node, inst in ((r1, "nfrouter"), (r1, FORWARDER), (r2, FORWARDER), (r3, FORWARDER)):
        fds[node, inst] = libbpf.get_pinned(str(target.pin_dir(ctl.node(node), inst) / chain.PROG_PIN))
    try:
        runners = {k: libbpf.TestRunner(fd) for k, fd in fds.items()}

        def once(node: str, inst: str, data: bytes) -> bytes:
            with netns(ctl.node(node).netns):   # egress ports and MTUs are the node's own
                res = runners[node, inst].run(data)
            if res.retval != XDP_REDIRECT:
                raise SystemExit(f"{inst} on {node}: {XDP_ACTIONS.get(res.retval, res.retval)}, expected XDP_REDIRECT")
            return res.data_out

        # each step's input: the frame as the previous router sends it
        nsh_r2 = once(r1, FORWARDER, plain)
        nsh_r3 = once(r2, FORWARDER, nsh_r2)
        hh_r2 = once(r1, FORWARDER, hh)
        hh_r3 = once(r2, FORWARDER, hh_r2)
        cases = [  # (label, node, instance, frame)
            ("nfrouter: route (reference)", r1, "nfrouter", plain),
            ("sff miss, then nfrouter: route", r1, FORWARDER, missed),
            ("r1 sff: classify + encap + forward", r1, FORWARDER, plain),
            ("r2 sff: forward (NSH)", r2, FORWARDER, nsh_r2),
            ("r3 sff: decap, then nfrouter: route", r3, FORWARDER, nsh_r3),
            ("r1 sff: classify + encap + cms + forward", r1, FORWARDER, hh),
            ("r2 sff: precision + forward", r2, FORWARDER, hh_r2),
            ("r3 sff: cms + decap, then nfrouter: route", r3, FORWARDER, hh_r3),
        ]
        before = {n: ctl.read_stat(n, FORWARDER, "verdicts") for n in (r1, r2, r3)}
        times = {label: [] for label, *_ in cases}
        by_node = {}
        for label, node, inst, data in cases:
            by_node.setdefault(node, []).append((label, runners[node, inst], data))
        for _ in range(calls + 1):   # the first round warms up and is not counted
            for node, group in by_node.items():
                with netns(ctl.node(node).netns):
                    for label, runner, data in group:
                        res = runner.run(data)
                        if res.retval != XDP_REDIRECT:
                            raise SystemExit(f"{label}: {XDP_ACTIONS.get(res.retval, res.retval)}, expected XDP_REDIRECT")
                        times[label].append(res.duration_ns)
    finally:
        for fd in fds.values():
            os.close(fd)
    grew = {}
    for n in (r1, r2, r3):
        after = ctl.read_stat(n, FORWARDER, "verdicts")
        grew[n] = {k: after[k] - before[n][k] for k in after if after[k] != before[n][k]}
    med = {label: statistics.median(v[1:]) for label, v in times.items()}
    ref = med[cases[0][0]]
    say("")
    say(f"{'case':<44} {'ns/packet':>10} {'x routing':>10}")
    for label, *_ in cases:
        say(f"{label:<44} {med[label]:>10.0f} {med[label] / ref:>9.2f}x")
    classify = med[cases[2][0]] - med[cases[3][0]]
    decap = med[cases[4][0]] - ref
    miss = med[cases[1][0]] - ref
    say(f"derived: classify + encap ~ {classify:.0f} ns (r1's classify + encap + forward - r2's forward); "
        f"decap ~ {decap:.0f} ns (r3's decap + route - routing); a classifier miss ~ {miss:.0f} ns "
        f"(sff miss + route - routing)")
    say("forwarder verdicts during the runs: " + "; ".join(
        f"{n}: " + ", ".join(f"{k}={v}" for k, v in g.items()) for n, g in grew.items()))
    say("(one run per BPF_PROG_TEST_RUN call, so each figure holds the test run's fixed cost once; the ratio\n"
        " is against nfrouter routing a plain frame on r1, measured in the same rounds)")
    for key in ("ping-demo", "heavy-hitters-ns"):
        chains.delete(key)
    say("")


# ---- 3. many services ----------------------------------------------------------------------------------
def sol006_descriptor(name: str, src: str, dst: str, port: int, proto: int = 6, nf: str = "cms",
                      reverse: bool = True) -> dict:
    """An ETSI SOL006 NSD: endpoints a (src) and b (dst), one NF `fn`; the path a -> fn -> b
    classifies `proto` to `port`, and (reverse) b -> fn -> a its replies from that port."""
    def profile(pid: str, vnfd: str, address: str | None = None) -> dict:
        cpd = {"constituent-base-element-id": pid, "constituent-cpd-id": "cp0"}
        if address:
            cpd["ip-address"] = address
        return {"id": pid, "vnfd-id": vnfd,
                "virtual-link-connectivity": [{"virtual-link-profile-id": "net", "constituent-cpd-id": [cpd]}]}

    def path(pid: str, s: str, d: str, sport: int, dport: int) -> dict:
        element = {"id": "fn-element", "order": 0, "constituent-base-element-id": "fn",
                   "ingress-constituent-cpd-id": "cp0", "egress-constituent-cpd-id": "cp0"}
        return {"id": pid, "position-desc-id": [{
            "id": "position1", "nfp-position-element-id": ["chain"],
            "cp-profile-id": [{"id": "cpprofile1", "constituent-profile-elements": [element]}],
            "match-attributes": [{"id": f"{pid}-match", "ip-proto": proto, "source-ip-address": s,
                                  "destination-ip-address": d, "source-port": sport, "destination-port": dport}]}]}

    fn = profile("fn", nf)
    paths = [path("a-to-b", src, dst, 0, port)] + ([path("b-to-a", dst, src, port, 0)] if reverse else [])
    return {"nsd": {"nsd": [{
        "id": name, "name": name, "designer": "innet bench", "version": "1.0",
        "vnfd-id": ["client", "server", nf],
        "virtual-link-desc": [{"id": "net", "mgmt-network": False}],
        "df": [{"id": "default-df", "vnf-profile": [profile("a", "client", src), profile("b", "server", dst), fn]}],
        "vnffgd": [{"id": "vnffg1", "vnf-profile-id": ["fn"], "nfp-position-element": [{"id": "chain"}],
                    "nfpd": paths}]}]}}


def line_topology(routers: int) -> dict:
    """h1 - r1 - ... - rN - h2, as topologies/line3.yaml is for N = 3."""
    nodes = {"h1": {"role": "host"}, **{f"r{i}": {"role": "router", "target": "xdp"} for i in range(1, routers + 1)},
             "h2": {"role": "host"}}
    links = [{"a": "r1", "b": "h1"}, *({"a": f"r{i}", "b": f"r{i + 1}"} for i in range(1, routers)),
             {"a": f"r{routers}", "b": "h2"}]
    return {"name": f"line{routers}", "nodes": nodes, "links": links}


def chain_state(ctl, routers: list[str]) -> dict:
    """What chains hold on each router: sff tables (desired, and read from the data plane), NF
    instances behind the forwarder, the forwarder itself, and pins other than nfrouter's."""
    state = {}
    pins = ctl.target("xdp")
    for r in routers:
        s = {"classify": 0, "hops": 0, "classify_dp": 0, "hops_dp": 0, "forwarder": False}
        if ctl.store.instance(r, FORWARDER) is not None:
            s["forwarder"] = True
            for table, *_ in ctl.store.entries(r, FORWARDER):
                s["classify" if table == "sfc_classify" else "hops"] += 1
            plane = ctl.plane(r)
            s["classify_dp"] = len(plane.read(FORWARDER, "sfc_classify"))
            s["hops_dp"] = len(plane.read(FORWARDER, "sfc_hops"))
        s["instances"] = sorted(i.id for i in ctl.instances(r) if i.id not in ("nfrouter", FORWARDER))
        s["deployed"] = sorted(d.instance for d in ctl.deployments(r) if d.instance != "nfrouter")
        root = pins.node_pins(r)
        s["pins"] = sorted(p.name for p in root.iterdir() if not p.name.startswith("nfrouter@")) if root.exists() else []
        state[r] = s
    return state


def bench_many(tb, count: int) -> None:
    ctl, topo = tb.controller, tb.topo
    routers = [r.name for r in topo.routers]
    src, dst = (str(h.interfaces[0].ipv4.ip) for h in topo.hosts)
    chains = ChainService(ctl)
    say(f"[3/3] {count} services on {topo.name} ({len(routers)} routers: {SLOTS} NF slots per forwarder), "
        f"each SOL006, h1 <-> h2, TCP to its own port, through its own cms")
    docs = [sol006_descriptor(f"svc{i:03d}", src, dst, 6000 + i) for i in range(count)]
    deploy_ns, rules = [], 0
    for i, doc in enumerate(docs):
        t0 = time.perf_counter_ns()
        p = chains.deploy(doc, bind={"a": "h1", "b": "h2"}, source=f"svc{i:03d}")
        deploy_ns.append(time.perf_counter_ns() - t0)
        rules += len(p.rules)
        if (i + 1) % max(1, count // 5) == 0:
            say(f"      {i + 1}/{count} deployed (last: {deploy_ns[-1] / 1e6:.0f} ms)")
    state = chain_state(ctl, routers)
    say("")
    say(f"deploy, ms per service: p50 {ms(pct(deploy_ns, 50)).strip()}, p95 {ms(pct(deploy_ns, 95)).strip()}, "
        f"max {ms(max(deploy_ns)).strip()}; first 10 mean {ms(statistics.mean(deploy_ns[:10])).strip()}, "
        f"last 10 mean {ms(statistics.mean(deploy_ns[-10:])).strip()}; {rules} rules in all")
    say(f"{'node':<6} {'sfc_classify':>13} {'sfc_hops':>9} {'in the data plane':>18} {'NF instances':>13}")
    for r, s in state.items():
        say(f"{r:<6} {s['classify']:>13} {s['hops']:>9} {s['classify_dp']:>8} + {s['hops_dp']:<7} "
            f"{len(s['instances']):>13}")
    mismatched = [r for r, s in state.items() if (s["classify"], s["hops"]) != (s["classify_dp"], s["hops_dp"])]
    if mismatched:
        say(f"WARNING: the data plane's tables differ from the desired state on {', '.join(mismatched)}")
    delete_ns = []
    for i in range(count):
        t0 = time.perf_counter_ns()
        if not chains.delete(f"svc{i:03d}"):
            raise SystemExit(f"service svc{i:03d} was not there to delete")
        delete_ns.append(time.perf_counter_ns() - t0)
    say(f"delete, ms per service: p50 {ms(pct(delete_ns, 50)).strip()}, p95 {ms(pct(delete_ns, 95)).strip()}, "
        f"max {ms(max(delete_ns)).strip()}")
    left = {r: s for r, s in chain_state(ctl, routers).items()
            if s["forwarder"] or s["instances"] or s["deployed"] or s["pins"] or s["classify_dp"] or s["hops_dp"]}
    services = ctl.store.services()
    if left or services:
        say(f"LEFT BEHIND after deleting every service: services {sorted(services)}; {left}")
        raise SystemExit(1)
    say("after the deletes: no service, rule, NF instance, forwarder or pin of a chain is left on any router")
    say("")


# ---- part 1 per target ------------------------------------------------------------------------------------
def summary(figures: dict[str, dict]) -> None:
    say("part 1 per target (first packet: deploy() called -> first probe through the chain at h2; per hop:\n"
        " the chained p50 one-way latency over the 3 routers, what controller.chains.HOP_MS holds)")
    say(f"{'target':<7} {'cold p50':>9} {'cold p95':>9} {'warm p50':>9} {'warm p95':>9} {'per hop (ms)':>13} "
        f"{'plain p50 (us)':>15} {'chained p50 (us)':>17} {'probes lost, plain / chained':>29}")
    for target, f in figures.items():
        pl, pn, cl, cn = f["lost"]
        say(f"{target:<7} {ms(f['cold'][0]):>9} {ms(f['cold'][1]):>9} {ms(f['warm'][0]):>9} {ms(f['warm'][1]):>9} "
            f"{f['per_hop_ms']:>13.3f} {f['plain_p50_us']:>15} {f['chained_p50_us']:>17} "
            f"{f'{pl}/{pl + pn}, {cl}/{cl + cn}':>29}")
    say("(first packet in ms; target < 200 ms on XDP)")
    say("")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="5 runs instead of 20, 300 test runs per case instead of 2000, 24 services on line3 "
                         "instead of 100 on a line of 13 routers")
    ap.add_argument("--target", choices=("xdp", "bmv2", "both"), default="both",
                    help="the routers' target for part 1 (default both, XDP first); parts 2 and 3 are XDP's "
                         "and run only when XDP is among them")
    ap.add_argument("--parts", default="123", help="the parts to run, e.g. 1 or 13 (default 123)")
    args = ap.parse_args(argv)
    if not args.parts or set(args.parts) - set("123"):
        ap.error("--parts takes digits 1, 2 and 3")
    targets = ("xdp", "bmv2") if args.target == "both" else (args.target,)
    runs, calls, services = (5, 300, 24) if args.quick else (20, 2000, 100)
    if not start(__file__, argv, args.quick, "BPF and Mininet",
                 f"{runs} deploy runs each cold and warm, {calls} test runs per case, {services} services"):
        return 1

    def body() -> None:
        from testbed.net import Testbed   # Mininet only when the bench runs

        def line3(target: str):
            tb = Testbed(load_topology("line3").retarget(target), progress=lambda m: say("      " + m))
            tb.start()
            return tb

        figures = {}
        try:
            if "xdp" in targets:
                routers = math.ceil(services / SLOTS)
                many_here = "3" in args.parts and routers == 3
                if {"1", "2"} & set(args.parts) or many_here:
                    tb = line3("xdp")
                    try:
                        chains = ChainService(tb.controller)
                        if "1" in args.parts:
                            figures["xdp"] = bench_first_packet(tb, chains, runs, "xdp")
                        if "2" in args.parts:
                            bench_per_packet(tb, chains, calls)
                        if many_here:
                            bench_many(tb, services)
                    finally:
                        tb.stop()
                if "3" in args.parts and not many_here:
                    tb = Testbed(parse_topology(line_topology(routers), f"line{routers}"),
                                 progress=lambda m: say("      " + m))
                    try:
                        tb.start()
                        bench_many(tb, services)
                    finally:
                        tb.stop()
            if "bmv2" in targets:
                xdp_only = sorted({"2", "3"} & set(args.parts))
                if xdp_only:
                    say(f"BMv2: part {' and '.join(xdp_only)} measure XDP only (BMv2 has no BPF_PROG_TEST_RUN; a "
                        f"switch runs one instance per NF type, so one-cms services fit one per switch)"
                        + ("" if "xdp" in targets else ": not run"))
                if "1" in args.parts:
                    why = switch.unavailable()
                    if why:
                        say(f"BMv2: not measured: {why}")
                    else:
                        tb = line3("bmv2")
                        try:
                            figures["bmv2"] = bench_first_packet(tb, ChainService(tb.controller), runs, "bmv2")
                        finally:
                            tb.stop()
            if figures:
                summary(figures)
        finally:
            current().drop()

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
