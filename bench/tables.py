"""Control-plane speed: table writes and register reads, XDP beside BMv2, same controller calls.

    .venv/bin/python bench/tables.py [--quick]        (as root)

1. Table-write rate, entries/s: N NFRouter routes (IPv4 /32s) written one by one (one
   Controller.write per entry) and in one batched call. On XDP a write opens the NF's pinned
   maps and BTF once per call, then updates one map entry per route; on BMv2 each call is one
   P4Runtime WriteRequest (one update per request, or all N in one request).
2. Register read time: the cms NF's whole `sketch` statistic ([2][rows][columns] cells of
   packets and bytes) read with Controller.read_registers, for a few sketch widths. On XDP
   that is a batched lookup of one array map; on BMv2 a Thrift register read per register.

Each target runs on a bare network namespace with one veth pair: XDP attaches to one end,
BMv2's simple_switch_grpc takes both ends as its ports. BMv2 figures appear where
simple_switch_grpc and p4c are found (PATH or /opt/p4/bin); otherwise the run says why.
Ratios are against figures measured in the same run. It prints figures and asserts nothing
beyond checking that the work was really done (every entry read back, every cell read).
"""
from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository

from bench.harness import run, say, start  # noqa: E402
from controller.core import Controller  # noqa: E402
from controller.errors import InnetError  # noqa: E402
from controller.node import Node  # noqa: E402
from controller.p4 import switch  # noqa: E402
from controller.tables import TableEntry  # noqa: E402
from testbed.scratch import Veth, namespace  # noqa: E402

ROUTER, SKETCH = "nfrouter", "cms"
PORT, PEER = "tbva", "tbvb"        # the veth pair inside each bench namespace
FIRST_DST = ipaddress.IPv4Address("10.128.0.0")
NEXT_HOP_MAC, OWN_MAC = "02:00:00:00:be:01", "02:00:00:00:be:02"


# ---- bench nodes: one namespace each, per target ---------------------------------------------

def bench_namespace():
    """A fresh namespace holding the veth pair PORT <-> PEER, and lo up (BMv2's Thrift server
    listens there); deleted on exit."""
    return namespace("tb", [Veth(PORT, PEER)], lo_up=True)


@contextmanager
def xdp_node():
    with bench_namespace() as ns:
        yield Node(ns.name, ns.path, "router", "xdp"), [PORT]


@contextmanager
def bmv2_node():
    why = switch.unavailable()
    if why:
        raise InnetError(why)
    with bench_namespace() as ns:
        switch.start(ns.name, [PORT, PEER], netns=ns.path, progress=lambda msg: say("      " + msg))
        try:
            yield Node(ns.name, ns.path, "router", "bmv2", kernel_slow_path=False), [PORT]
        finally:
            switch.stop(ns.name)


BENCH_NODES = {"XDP": xdp_node, "BMv2": bmv2_node}


@contextmanager
def deployed(ctl: Controller, node: Node, interfaces: list[str], nf: str, params: dict):
    """`nf` deployed on `node` for the body, removed after it whatever happens."""
    ctl.add_node(node)
    ctl.deploy(node.name, nf, interfaces, params)
    try:
        yield
    finally:
        ctl.remove(node.name, nf)


# ---- 1. table-write rate -------------------------------------------------------------------

def routes(n: int) -> list[TableEntry]:
    return [TableEntry("ipv4_routes", {"dst_addr": f"{FIRST_DST + i}/32"}, "forward",
                       {"egress_port": PORT, "dst_mac": NEXT_HOP_MAC, "src_mac": OWN_MAC}) for i in range(n)]


def timed_write(ctl: Controller, node: str, entries: list[TableEntry], batched: bool) -> float:
    """entries/s of one write pass; the entries are read back, then deleted."""
    t0 = time.perf_counter()
    if batched:
        ctl.write(node, ROUTER, entries)
    else:
        for e in entries:
            ctl.write(node, ROUTER, [e])
    seconds = time.perf_counter() - t0
    held = len(ctl.read(node, ROUTER, "ipv4_routes"))
    if held != len(entries):
        raise RuntimeError(f"{node}: wrote {len(entries)} routes, the table holds {held}")
    ctl.delete(node, ROUTER, entries)
    return len(entries) / seconds


def bench_writes(target: str, sizes: list[int], rounds: int) -> list[tuple]:
    """(target, N, one-by-one entries/s, batched entries/s), medians over `rounds`."""
    rows = []
    ctl = Controller()
    with BENCH_NODES[target]() as (node, ports), \
            deployed(ctl, node, ports, ROUTER, {"max_routes": max(sizes)}):
        for n in sizes:
            entries = routes(n)
            single, batch = [], []
            for r in range(rounds):   # alternate, so a burst of load elsewhere hits both
                single.append(timed_write(ctl, node.name, entries, batched=False))
                batch.append(timed_write(ctl, node.name, entries, batched=True))
            rows.append((target, n, statistics.median(single), statistics.median(batch)))
            say(f"      {target:<5} N={n:<6} one by one {rows[-1][2]:>10,.0f}/s   batched {rows[-1][3]:>10,.0f}/s")
    return rows


def print_writes(rows: list[tuple]) -> None:
    say("")
    say(f"{'target':<7} {'routes':>7} {'one by one /s':>14} {'batched /s':>12} {'batch gain':>11}")
    for target, n, single, batch in rows:
        say(f"{target:<7} {n:>7} {single:>14,.0f} {batch:>12,.0f} {batch / single:>10.1f}x")
    by = {(t, n): (s, b) for t, n, s, b in rows}
    for t, n, s, b in rows:
        if t != "XDP" and ("XDP", n) in by:
            xs, xb = by["XDP", n]
            say(f"{t}/XDP at N={n}: one by one {s / xs:.2f}x, batched {b / xb:.2f}x")
    say("")


# ---- 2. register read time -----------------------------------------------------------------

def bench_reads(target: str, columns: list[int], rows_: int, reads: int) -> list[tuple]:
    """(target, cells, median seconds to read the whole sketch) per sketch width."""
    out = []
    ctl = Controller()
    for width in columns:
        with BENCH_NODES[target]() as (node, ports), \
                deployed(ctl, node, ports, SKETCH, {"rows": rows_, "columns": width}):
            times = []
            for _ in range(reads + 1):   # the first read warms caches and is not counted
                t0 = time.perf_counter()
                sketch = ctl.read_registers(node.name, SKETCH, "sketch")
                times.append(time.perf_counter() - t0)
            shape = sketch["packets"].shape
            if shape != (2, rows_, width):
                raise RuntimeError(f"{target}: the sketch came back shaped {shape}, not {(2, rows_, width)}")
            cells = 2 * rows_ * width
            out.append((target, cells, statistics.median(times[1:])))
            say(f"      {target:<5} {cells:>7} cells x 2 fields: {out[-1][2] * 1e3:9.2f} ms")
    return out


def print_reads(rows: list[tuple]) -> None:
    say("")
    say(f"{'target':<7} {'cells':>8} {'read ms':>9} {'ns/cell':>8}")
    for target, cells, seconds in rows:
        say(f"{target:<7} {cells:>8} {seconds * 1e3:>9.2f} {seconds / cells * 1e9:>8.0f}")
    by = {(t, c): s for t, c, s in rows}
    for t, c, s in rows:
        if t != "XDP" and ("XDP", c) in by:
            say(f"{t}/XDP read time at {c} cells: {s / by['XDP', c]:.1f}x")
    say("")


def run_section(title: str, fn, *args) -> list[tuple]:
    """Run one section per target; a target that cannot run it says why and is skipped."""
    rows = []
    for target in BENCH_NODES:
        try:
            rows += fn(target, *args)
        except InnetError as exc:
            say(f"      {target}: not measured: {exc}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a shorter run (fewer entries and rounds)")
    args = ap.parse_args(argv)
    if not start(__file__, argv, args.quick, "BPF, namespaces, BMv2 ports", f"targets: {', '.join(BENCH_NODES)}"):
        return 1
    sizes, rounds = ([100, 1000], 3) if args.quick else ([100, 1000, 4000], 3)
    columns, reads = ([256, 4096], 5) if args.quick else ([256, 4096, 16384], 11)

    def body() -> None:
        say(f"[1/2] table writes: {', '.join(map(str, sizes))} IPv4 routes, one by one vs one batched call, "
            f"median of {rounds}")
        print_writes(run_section("writes", bench_writes, sizes, rounds))
        say(f"[2/2] register reads: cms sketch, 4 rows x {', '.join(map(str, columns))} columns, 2 banks, "
            f"median of {reads}")
        print_reads(run_section("reads", bench_reads, columns, 4, reads))

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
