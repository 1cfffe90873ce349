"""Control-plane speed: route writes and deletes, register reads, XDP beside BMv2.

    .venv/bin/python bench/tables.py [--quick]        (as root)

1. Route writes and deletes, routes/s, through the service layer (desired state in SQLite,
   the fast path's tables and, on XDP, the kernel FIB with neighbour entries: both paths):
   - Python API, batched: one RouteService.add_many / delete_many call for N routes;
   - Python API, one by one: N add calls (each its own operation: lock, intent, both paths);
   - CLI, from a fresh process: `innet routes add NODE --file F` (and `routes del --file F`),
     the process start included;
   - baseline: the kernel FIB alone, `ip -batch` adding and deleting the same N routes in the
     same namespace (XDP only: a BMv2 node has no kernel slow path).
   N = 1,000 / 10,000 / 100,000 IPv4 /32 routes via one gateway (fewer with --quick).
2. Register read time: the cms NF's whole `sketch` statistic ([2][rows][columns] cells of
   packets and bytes) read with Controller.read_registers, for a few sketch widths. On XDP
   that is a batched lookup of one array map; on BMv2 a Thrift register read per register.

Each target runs on a bare network namespace with one veth pair: XDP attaches to one end,
BMv2's simple_switch_grpc takes both ends as its ports. BMv2 figures appear where
simple_switch_grpc and p4c are found (PATH or /opt/p4/bin); otherwise the run says why.
The bench works in a scope of its own (bench-<pid>), removed at the end. Ratios are against
figures measured in the same run. It prints figures and asserts nothing beyond checking that
the work was really done (every route read back from both paths).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

from bench.harness import REPO, run, say, start  # noqa: E402
from controller.errors import InnetError  # noqa: E402
from controller.node import Node  # noqa: E402
from controller.p4 import switch  # noqa: E402
from controller.routes import Route, RouteService  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.service import Controller  # noqa: E402
from testbed.scratch import Veth, namespace  # noqa: E402

ROUTER, SKETCH = "nfrouter", "cms"
PORT, PEER = "tbva", "tbvb"        # the veth pair inside each bench namespace
PORT_ADDRESS, GATEWAY = "10.0.0.1/24", "10.0.0.2"
FIRST_DST = ipaddress.IPv4Address("10.128.0.0")
NEXT_HOP_MAC = "02:00:00:00:be:01"


# ---- bench nodes: one namespace each, per target ---------------------------------------------

def bench_namespace():
    """A fresh namespace holding the veth pair PORT <-> PEER (PORT addressed, so the gateway is
    on-link), and lo up (BMv2's Thrift server listens there); deleted on exit."""
    return namespace("tb", [Veth(PORT, PEER, PORT_ADDRESS)], lo_up=True)


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
        switch.start(current(), ns.name, [PORT, PEER], netns=ns.path, progress=lambda msg: say("      " + msg))
        try:
            yield Node(ns.name, ns.path, "router", "bmv2", kernel_slow_path=False), [PORT]
        finally:
            switch.stop(current(), ns.name)


BENCH_NODES = {"XDP": xdp_node, "BMv2": bmv2_node}


@contextmanager
def deployed(ctl: Controller, node: Node, interfaces: list[str], nf: str, params: dict):
    """`nf` deployed on `node` for the body; the node and all it runs are removed after it."""
    ctl.add_node(node)
    try:
        ctl.deploy(node.name, nf, interfaces, params)
        yield
    finally:
        ctl.forget_node(node.name)


# ---- 1. route writes and deletes ---------------------------------------------------------------

def routes(n: int) -> list[Route]:
    return [Route(f"{FIRST_DST + i}/32", PORT, NEXT_HOP_MAC, GATEWAY) for i in range(n)]


def routes_file(batch: list[Route], directory: Path) -> Path:
    path = directory / f"routes-{len(batch)}.txt"
    path.write_text("".join(f"{r.prefix} via {r.via} dev {r.interface} mac {r.mac}\n" for r in batch))
    return path


def check_held(ctl: Controller, node: str, n: int) -> None:
    listed = RouteService(ctl).list(node)
    wrong = [r.prefix for r in listed if not (r.fast_path and r.kernel is not False)]
    if len(listed) != n or wrong:
        raise RuntimeError(f"{node}: wrote {n} routes, {len(listed)} listed, {len(wrong)} not in both paths")


def innet(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO, check=True, stderr=subprocess.DEVNULL)


def rate(n: int, work) -> float:
    t0 = time.perf_counter()
    work()
    return n / (time.perf_counter() - t0)


def bench_routes(target: str, sizes: list[int], one_by_one_max: int, rounds: int, scratch: Path) -> list[tuple]:
    """(target, N, way, writes/s, deletes/s): medians over `rounds`."""
    rows = []
    ctl = Controller()
    service = RouteService(ctl)
    with BENCH_NODES[target]() as (node, ports), \
            deployed(ctl, node, ports, ROUTER, {"max_routes": max(sizes)}):
        for n in sizes:
            batch = routes(n)
            prefixes = [r.prefix for r in batch]
            path = routes_file(batch, scratch)
            ways = {
                "API batched": (lambda: service.add_many(node.name, batch),
                                lambda: service.delete_many(node.name, prefixes)),
                "CLI --file": (lambda: innet("routes", "add", node.name, "--file", str(path)),
                               lambda: innet("routes", "del", node.name, "--file", str(path))),
            }
            if n <= one_by_one_max:
                ways["API one by one"] = (lambda: [service.add(node.name, r.prefix, r.interface, r.mac, r.via)
                                                   for r in batch],
                                          lambda: [service.delete(node.name, p) for p in prefixes])
            if node.kernel_slow_path:
                ways["kernel alone (ip -batch)"] = (lambda: ip_batch(node, batch, "replace"),
                                                    lambda: ip_batch(node, batch, "del"))
            for way, (write, delete) in ways.items():
                writes, deletes = [], []
                for _ in range(rounds):
                    writes.append(rate(n, write))
                    if not way.startswith("kernel"):
                        check_held(ctl, node.name, n)
                    deletes.append(rate(n, delete))
                rows.append((target, n, way, statistics.median(writes), statistics.median(deletes)))
                say(f"      {target:<5} N={n:<7} {way:<25} writes {rows[-1][3]:>10,.0f}/s   "
                    f"deletes {rows[-1][4]:>10,.0f}/s")
    return rows


def ip_batch(node: Node, batch: list[Route], verb: str) -> None:
    lines = "".join(f"route {verb} {r.prefix} via {r.via} dev {r.interface}\n" for r in batch)
    subprocess.run(["nsenter", f"--net={node.netns}", "ip", "-batch", "-"], input=lines, text=True, check=True)


def print_routes(rows: list[tuple]) -> None:
    say("")
    say(f"{'target':<7} {'routes':>7} {'way':<25} {'writes/s':>11} {'deletes/s':>11} {'vs kernel alone':>16}")
    kernel = {(t, n): (w, d) for t, n, way, w, d in rows if way.startswith("kernel")}
    for t, n, way, w, d in rows:
        base = kernel.get(("XDP", n))
        ratio = f"{w / base[0]:.2f}x / {d / base[1]:.2f}x" if base and not way.startswith("kernel") else ""
        say(f"{t:<7} {n:>7} {way:<25} {w:>11,.0f} {d:>11,.0f} {ratio:>16}")
    say("(XDP writes and deletes go to both paths: fast-path map and kernel FIB with neighbours; BMv2 to its "
        "tables only)")
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
    sizes, one_by_one, rounds = ([1000, 10000], 1000, 1) if args.quick else ([1000, 10000, 100000], 1000, 3)
    columns, reads = ([256, 4096], 5) if args.quick else ([256, 4096, 16384], 11)

    def body() -> None:
        scratch = Path(tempfile.mkdtemp(prefix="innet-bench-"))
        try:
            say(f"[1/2] routes: {', '.join(map(str, sizes))} IPv4 routes written and deleted, batched vs one by one "
                f"(up to {one_by_one}) vs CLI from a fresh process vs the kernel alone, median of {rounds}")
            print_routes(run_section("routes", bench_routes, sizes, one_by_one, rounds, scratch))
            say(f"[2/2] register reads: cms sketch, 4 rows x {', '.join(map(str, columns))} columns, 2 banks, "
                f"median of {reads}")
            print_reads(run_section("reads", bench_reads, columns, 4, reads))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            current().drop()

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
