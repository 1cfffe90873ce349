"""Heavy-hitter benchmark: Count-Min (+ candidates) and PRECISION on XDP, against exact counts.

    .venv/bin/python bench/heavy_hitters.py [--quick] [--seeds 11,12,13] [--skews 0.8,1.0,1.1,1.2]
                                            [--budgets 40,80,160] [--plot PATH]   (as root)

1. Accuracy. Seeded Zipf traces (default: skews 0.8, 1.0, 1.1, 1.2, seeds 11, 12, 13; 120k
   flows, 2.5M packets; bench/zipf.py) are replayed packet by packet through the real
   programs: each NF is deployed by the controller's XdpTarget on a veth in a fresh namespace
   with IPv6 off (so the namespace sends nothing of its own), and every packet runs once
   through the loaded program with BPF_PROG_TEST_RUN (bench/replay.py). The NF's flow table
   is then read with Controller.read_registers (cms: stats.SketchEpochs closes the epoch, as
   the controller does) and ranked with controller/stats.py (flow_counts, top_k).
   Printed per skew, seed, NF and memory: top-k recall and precision (k = 100, 300) and the
   average relative error (ARE) of the reported flows' packet estimates; then per skew, NF and
   memory the mean and the worst over the seeds, and the issue's targets met or not.
   A reported flow counts as a true top-k flow when its exact count reaches the k-th largest
   (ties do not count against the NF); recall = true ones / k, precision = true ones /
   reported. They differ only when the NF holds fewer than k flows.
   Memory: stats.state_memory of the deployed instance, every map it pinned (entries x value
   size as the kernel stores it, program array included). Each NF gets the largest
   parameters whose maps fit the budget: precision: 3 stages, the stages' slots (a power of
   two) within STAGE_SHARE of the budget, the key table (sets of 8 keys) the rest; cms
   (conservative update): the candidate table (a power of two, both banks) within
   CANDIDATE_SHARE of the budget, the sketch (2 to 4 rows, ties to more; both banks) the rest.
2. Sketch reads: Controller.read_registers of each register array (batched map reads) at
   each memory size, against one map lookup per cell (baseline, same maps, same run).
3. Cost: ns/packet of cms and precision beside NFRouter's and xdp_pass's (the rxcount NF),
   all deployed side by side, on the same Zipf packets (round-robin chunks, kernel-timed)
   and on one 64-byte frame repeated (as bench/nfrouter.py measures it).
Plot: top-300 recall and ARE against memory for both NFs, one column per skew (mean over the
seeds, the worst seed as the bar's end), the targets as lines (PNG, needs the `bench` extra).
The bench works in a scope of its own (bench-<pid>), removed at the end.

It prints figures and asserts nothing: it is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
os.environ["INNET_SCOPE"] = f"bench-{os.getpid()}"   # before the controller loads: the bench's own scope

import numpy as np  # noqa: E402

from bench.harness import run, say, start  # noqa: E402
from bench.nfrouter import udp_frame  # noqa: E402
from bench.replay import bench_node, replay  # noqa: E402
from bench.zipf import Trace, build_frames, zipf_trace  # noqa: E402
from controller import stats  # noqa: E402
from controller.bpf import libbpf  # noqa: E402
from controller.catalog import get_nf  # noqa: E402
from controller.netns import netns  # noqa: E402
from controller.routes import RouteService  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.targets.chain import PROG_PIN  # noqa: E402

SKEWS = (0.8, 1.0, 1.1, 1.2)
SEEDS = (11, 12, 13)
KS = (100, 300)
KB = 1024
FULL = dict(flows=120_000, packets=2_500_000, budgets_kb=(20, 40, 80, 160, 320), cost_packets=400_000)
QUICK = dict(flows=20_000, packets=200_000, budgets_kb=(40, 80, 160), cost_packets=60_000)
# The issue's targets: (NF, budget KB, top-300 recall), each for every seed at skews 1.0 to 1.2
TARGETS = (("precision", 40, 0.95), ("precision", 80, 0.99), ("cms", 80, 0.70), ("cms", 160, 0.90))
TARGET_SKEWS = (1.0, 1.1, 1.2)
NFS = ("cms", "precision")
NF_COLORS = {"cms": "tab:blue", "precision": "tab:red"}
PRECISION_STAGES = 3           # the paper's larger choice: with 8-byte slots, more stages beat more keys
STAGE_SHARE = 0.6              # at most this share of the budget for precision's stages, the key table the rest
CMS_ROWS = (2, 3, 4)           # a tie in bytes goes to more rows
CANDIDATE_SHARE = 0.75         # at most this share of the budget for cms's candidate table
DEFAULT_PLOT = Path(tempfile.gettempdir()) / "innet-heavy-hitters.png"   # not into the source tree
XDP_ACTIONS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}


# ---- memory: parameters that fit a budget ------------------------------------------------

class MapSizes:
    """Bytes of an NF's maps as a function of its parameters, from a deployment's
    stats.state_memory: each map's bytes per entry as the kernel stores it; the entry count of a
    map bound to a `registers` statistic follows the catalog's shape, any other map keeps its size."""

    def __init__(self, ctl, node: str, nf: str):
        self.spec = get_nf(nf)
        by_map = {s.xdp["map"]: s for s in self.spec.stats.values() if s.kind == "registers" and "map" in s.xdp}
        self.entry_bytes, self.fixed = {}, 0
        for m in stats.state_memory(ctl, node, nf).maps:
            if m.name in by_map and any(isinstance(c, str) for c in by_map[m.name].cells):
                self.entry_bytes[by_map[m.name].name] = m.entry_bytes
            else:
                self.fixed += m.bytes

    def of(self, params: dict) -> dict[str, int]:
        """Bytes per parameter-sized registers statistic (and 'other' for the rest) with these parameters."""
        full = self.spec.resolve_parameters(params)
        sizes = {stat: int(np.prod(self.spec.stats[stat].shape(full))) * b for stat, b in self.entry_bytes.items()}
        sizes["other"] = self.fixed
        return sizes

    def total(self, params: dict) -> int:
        return sum(self.of(params).values())


def pin_dir(ctl, node: str, instance: str) -> Path:
    """Where the deployed instance's program and maps are pinned (its current generation)."""
    return ctl.target("xdp").pin_dir(ctl.node(node), instance)


def powers_of_two(lo: int, hi: int) -> list[int]:
    return [1 << i for i in range(lo.bit_length() - 1, hi.bit_length()) if lo <= 1 << i <= hi]


def fit_params(nf: str, sizes: MapSizes, budget: int) -> dict | None:
    """The largest configuration whose maps fit `budget` bytes (see the module doc for the rules)."""
    p = sizes.spec.parameters
    if nf == "precision":
        base = {"stages": PRECISION_STAGES, "key_sets": p["key_sets"].min}
        slots = [s for s in powers_of_two(p["slots"].min, p["slots"].max)
                 if sizes.of({**base, "slots": s})["stages"] <= budget * STAGE_SHARE]
        if not slots:
            return None
        options = [{**base, "slots": slots[-1], "key_sets": k} for k in range(p["key_sets"].min, p["key_sets"].max + 1)]
        return max((o for o in options if sizes.total(o) <= budget), key=sizes.total, default=None)
    # cms: the candidate table first (at most its share), the sketch fills the rest
    base = {"rows": p["rows"].min, "columns": p["columns"].min, "conservative": 1}
    cands = [c for c in powers_of_two(p["candidates"].min, p["candidates"].max)
             if sizes.of({**base, "candidates": c})["candidates"] <= budget * CANDIDATE_SHARE]
    if not cands:
        return None
    options = [{"rows": r, "columns": w, "candidates": cands[-1], "conservative": 1} for r in CMS_ROWS
               for w in powers_of_two(p["columns"].min, p["columns"].max)]
    fitting = [o for o in options if sizes.total(o) <= budget]
    return max(fitting, key=lambda o: (sizes.total(o), o["rows"]), default=None)


def describe(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


# ---- accuracy -----------------------------------------------------------------------------

@dataclass
class Score:
    recall: float
    precision: float
    are: float          # average relative error of the reported flows' packet estimates
    under: int          # reported flows whose estimate is below their exact count
    held: float         # share of the true top-k the flow table holds at all, whatever their rank


def score(trace: Trace, index: dict, held: list[stats.FlowCount], k: int) -> Score:
    """The NF's top-k (ranked by controller/stats.py) against the trace's exact counts."""
    top = stats.top_k(held, k) if held else []
    exact = trace.packets[trace_flows(index, top)].astype(np.float64)
    estimate = np.array([c.packets for c in top], dtype=np.float64)
    kth = trace.packets[trace.top(k)[-1]]
    true = int((exact >= kth).sum())
    held_true = int((trace.packets[trace_flows(index, held)] >= kth).sum())
    are = float(np.mean(np.abs(estimate - exact) / exact)) if len(top) else float("nan")
    return Score(true / k, true / len(top) if top else 0.0, are, int((estimate < exact).sum()),
                 min(held_true, k) / k)


def trace_flows(index: dict, counts: list[stats.FlowCount]) -> np.ndarray:
    flows = np.array([index.get(flow_tuple(c.flow), -1) for c in counts], dtype=np.int64)
    if (flows < 0).any():   # a key the trace never sent: a mis-keyed packet, or traffic of the namespace's own
        bad = counts[int(np.argmax(flows < 0))].flow
        raise RuntimeError(f"{int((flows < 0).sum())} flows the NF holds are not in the trace, e.g. {bad}",
                           "(the bench's namespace has IPv6 off and sends nothing itself: a data-plane bug?)")
    return flows


def flow_tuple(flow: stats.Flow) -> tuple:
    return int(flow.src), int(flow.dst), flow.sport, flow.dport, flow.proto


def trace_index(trace: Trace) -> dict:
    return {t: i for i, t in enumerate(zip(trace.src.tolist(), trace.dst.tolist(), trace.sport.tolist(),
                                           trace.dport.tolist(), trace.proto.tolist()))}


@dataclass
class Row:
    skew: float
    seed: int
    nf: str
    budget_kb: int
    params: dict
    map_bytes: int
    ns_per_packet: float
    replay_s: float
    scores: dict[int, Score]


def run_one(ctl, node: str, nf: str, params: dict, trace: Trace, frames, reads: list | None) -> tuple:
    """Deploy, replay the whole trace, read the flow table; returns (map bytes, ns/packet, seconds,
    every flow the table holds). With `reads`, also times reading the filled register arrays into it."""
    ctl.deploy(node, nf, ["hb0"], params)
    try:
        map_bytes = stats.state_memory(ctl, node, nf).bytes
        epochs = stats.SketchEpochs(ctl, node, nf) if stats.has_epochs(get_nf(nf)) else None
        fd = libbpf.get_pinned(str(pin_dir(ctl, node, nf) / PROG_PIN))
        try:
            t0 = time.perf_counter()
            kernel_ns = replay(fd, frames, trace.order)
            seconds = time.perf_counter() - t0
        finally:
            os.close(fd)
        if reads is not None:
            reads += time_reads(ctl, node, nf, repeats=5)
        if epochs is not None:   # close the epoch as the controller does: flip the bank, read it
            table = epochs.close().flows
        else:
            table = ctl.read_registers(node, nf, stats.flow_table(get_nf(nf)))
        return map_bytes, kernel_ns / len(trace.order), seconds, stats.flow_counts(table)
    finally:
        ctl.remove(node, nf)


# ---- sketch reads: batched vs one lookup per cell ----------------------------------------

@dataclass
class ReadRow:
    nf: str
    map_bytes: int
    stat: str
    cells: int
    bytes: int
    batched_ms: float     # read_registers: batched map read and decoding
    raw_batch_ms: float   # the batched map read alone
    per_cell_ms: float


def time_reads(ctl, node: str, nf: str, repeats: int) -> list[ReadRow]:
    rows = []
    map_bytes = stats.state_memory(ctl, node, nf).bytes
    spec = get_nf(nf)
    sized = [s for s in spec.stats.values() if s.kind == "registers" and any(isinstance(c, str) for c in s.cells)]
    for stat in sized:   # the arrays the parameters size: not control or totals
        batched = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ctl.read_registers(node, nf, stat.name)
            batched.append(time.perf_counter() - t0)
        m = libbpf.BpfMap.from_pin(str(pin_dir(ctl, node, nf) / stat.xdp["map"]))
        try:
            raw, per_cell = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                m.lookup_all()
                raw.append(time.perf_counter() - t0)
            for _ in range(repeats):
                t0 = time.perf_counter()
                cells = [m.lookup(struct.pack("=I", i)) for i in range(m.max_entries)]
                per_cell.append(time.perf_counter() - t0)
            rows.append(ReadRow(nf, map_bytes, stat.name, len(cells), len(cells) * m.value_size,
                                *(statistics.median(t) * 1e3 for t in (batched, raw, per_cell))))
        finally:
            m.close()
    return rows


# ---- cost: ns/packet beside NFRouter and xdp_pass -----------------------------------------

COST_NFS = (("xdp_pass", "rxcount", "hb0"), ("nfrouter", "nfrouter", "hb1"),
            ("cms", "cms", "hb2"), ("precision", "precision", "hb3"))
COST_CHUNK = 10_000
HOT_CALLS, HOT_REPEAT = 100, 250


def bench_cost(trace: Trace, frames, packets: int) -> list[tuple]:
    """ns/packet of each program on the trace's first `packets` packets and on one 64-byte frame."""
    say(f"[3/3] cost: {packets} Zipf packets (skew {trace.skew}) through each program in round-robin chunks of "
        f"{COST_CHUNK}, then one 64-byte frame x {HOT_REPEAT} repetitions x {HOT_CALLS} calls; catalog defaults")
    with bench_node("hhb", len(COST_NFS), ipv6=False) as (ctl, node):
        fds = {}
        try:
            for name, nf, ifname in COST_NFS:
                ctl.deploy(node, nf, [ifname])
                fds[name] = libbpf.get_pinned(str(pin_dir(ctl, node, nf) / PROG_PIN))
            # every destination of the trace (172.16.0.0/12) takes NFRouter's forwarding path
            RouteService(ctl).add(node, "172.16.0.0/12", "hb1", "02:00:00:00:01:02", via="198.18.1.2")
            order = trace.order[:packets]
            kernel_ns = dict.fromkeys(fds, 0)
            verdicts = {name: Counter() for name in fds}
            hot_frame = udp_frame(64, v6=False, dst="172.16.0.1")   # TTL 255: forwarded on every repetition
            hot = {name: [] for name in fds}
            hot_verdicts = {name: set() for name in fds}
            # in the node's namespace, NFRouter's MTU check and redirect find hb1 by its ifindex
            with netns(ctl.node(node).netns):
                for at in range(0, len(order), COST_CHUNK):
                    for name, fd in fds.items():
                        kernel_ns[name] += replay(fd, frames, order[at:at + COST_CHUNK], verdicts[name])
                for _ in range(HOT_CALLS):
                    for name, fd in fds.items():
                        res = libbpf.test_run(fd, hot_frame, repeat=HOT_REPEAT)
                        hot[name].append(res.duration_ns)
                        hot_verdicts[name].add(res.retval)
        finally:
            for fd in fds.values():
                os.close(fd)
    return [(name, kernel_ns[name] / len(order), statistics.median(hot[name]), verdicts[name], hot_verdicts[name])
            for name in fds]


def print_cost(rows: list[tuple]) -> None:
    base = {name: (trace_ns, hot_ns) for name, trace_ns, hot_ns, *_ in rows}["xdp_pass"]
    say(f"{'program':<10} {'Zipf ns/pkt':>12} {'x xdp_pass':>11} {'64 B ns/pkt':>12} {'x xdp_pass':>11}  "
        f"verdicts (Zipf; 64 B)")
    for name, trace_ns, hot_ns, verdicts, hot_verdicts in rows:
        v = ", ".join(f"{XDP_ACTIONS.get(a, a)} {n}" for a, n in sorted(verdicts.items()))
        h = ", ".join(XDP_ACTIONS.get(a, str(a)) for a in sorted(hot_verdicts))
        say(f"{name:<10} {trace_ns:>12.1f} {trace_ns / base[0]:>10.2f}x {hot_ns:>12.1f} {hot_ns / base[1]:>10.2f}x  "
            f"{v}; {h}")
    say("(Zipf: kernel-timed single runs, cold per-flow state as on a live interface; 64 B: one frame repeated,\n"
        " state hot in cache. NFRouter forwards every trace packet (route 172.16.0.0/12): REDIRECT)")


# ---- printing and plotting -----------------------------------------------------------------

def print_header() -> None:
    say(f"{'skew':>4} {'seed':>4} {'NF':<9} {'budget':>6} {'map bytes':>10} {'parameters':<44} "
        + " ".join(f"{'rec@' + str(k):>7} {'prec@' + str(k):>8}" for k in KS)
        + f" {'held300':>7} {'ARE@100':>8} {'ARE@300':>8} {'under':>5} {'ns/pkt':>7} {'replay':>7}")


def print_row(r: Row) -> None:
    s = r.scores
    say(f"{r.skew:>4} {r.seed:>4} {r.nf:<9} {r.budget_kb:>4}KB {r.map_bytes:>10,} {describe(r.params):<44} "
        + " ".join(f"{s[k].recall:>7.1%} {s[k].precision:>8.1%}" for k in KS)
        + f" {s[300].held:>7.1%} {s[100].are:>8.3f} {s[300].are:>8.3f} {s[300].under:>5} {r.ns_per_packet:>7.0f}"
        f" {r.replay_s:>6.1f}s")


def print_reads(rows: list[ReadRow]) -> None:
    say(f"{'NF':<9} {'map bytes':>10} {'register array':<15} {'cells':>6} {'bytes':>9} "
        f"{'read_registers':>15} {'speed-up':>9} {'batch, raw':>11} {'speed-up':>9} {'per-cell, raw':>14}")
    for r in rows:
        say(f"{r.nf:<9} {r.map_bytes:>10,} {r.stat:<15} {r.cells:>6} {r.bytes:>9,} {r.batched_ms:>12.2f} ms "
            f"{r.per_cell_ms / r.batched_ms:>8.1f}x {r.raw_batch_ms:>8.2f} ms {r.per_cell_ms / r.raw_batch_ms:>8.1f}x "
            f"{r.per_cell_ms:>11.2f} ms")
    say("(read_registers: the controller's read, BPF_MAP_LOOKUP_BATCH plus decoding into one array per field;\n"
        " batch, raw: the BPF_MAP_LOOKUP_BATCH calls alone; per-cell, raw: one BPF_MAP_LOOKUP_ELEM per cell, the\n"
        " baseline; speed-ups are against it. Medians of 5 runs each)")


def by_point(rows: list[Row]) -> dict[tuple, list[Row]]:
    """(skew, NF, budget KB) -> its rows, one per seed."""
    out: dict[tuple, list[Row]] = {}
    for r in rows:
        out.setdefault((r.skew, r.nf, r.budget_kb), []).append(r)
    return out


def print_summary(rows: list[Row]) -> None:
    say(f"{'skew':>4} {'NF':<9} {'budget':>6} {'map bytes':>10} {'seeds':>5} {'rec@300 mean':>12} {'worst':>7} "
        f"{'rec@100 mean':>12} {'ARE@300 mean':>12} {'under':>5}")
    for (skew, nf, kb), rs in sorted(by_point(rows).items()):
        rec = [r.scores[300].recall for r in rs]
        rec100 = statistics.mean(r.scores[100].recall for r in rs)
        say(f"{skew:>4} {nf:<9} {kb:>4}KB {max(r.map_bytes for r in rs):>10,} {len(rs):>5} "
            f"{statistics.mean(rec):>12.1%} {min(rec):>7.1%} {rec100:>12.1%} "
            f"{statistics.mean(r.scores[300].are for r in rs):>12.3f} {sum(r.scores[300].under for r in rs):>5}")


def print_targets(rows: list[Row]) -> None:
    say(f"targets (top-300 recall of every seed, at each skew of {', '.join(map(str, TARGET_SKEWS))}):")
    points = by_point(rows)
    for nf, kb, goal in TARGETS:
        for skew in TARGET_SKEWS:
            rs = points.get((skew, nf, kb))
            if not rs:
                say(f"  {nf:<9} >= {goal:.0%} within {kb:>3} KB, skew {skew}: not run (budget or skew not chosen)")
                continue
            worst = min(r.scores[300].recall for r in rs)
            over = [r for r in rs if r.map_bytes > kb * KB]
            verdict = "met" if worst >= goal and not over else "NOT met"
            say(f"  {nf:<9} >= {goal:.0%} within {kb:>3} KB, skew {skew}: {verdict}: worst of {len(rs)} seeds "
                f"{worst:.1%}, mean {statistics.mean(r.scores[300].recall for r in rs):.1%}, "
                f"{max(r.map_bytes for r in rs):,} bytes ({describe(rs[0].params)})")


def plot(rows: list[Row], path: Path, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        say("no plot: matplotlib is missing (install the bench extra: .venv/bin/pip install -e '.[bench]')")
        return
    skews = sorted({r.skew for r in rows})
    points = by_point(rows)
    x_min, x_max = min(r.map_bytes for r in rows) / KB / 1.3, max(r.map_bytes for r in rows) / KB * 1.3
    fig, axes = plt.subplots(2, len(skews), figsize=(4.2 * len(skews), 7.5), sharex=True, squeeze=False)
    for col, skew in enumerate(skews):
        for nf in NFS:
            keys = sorted((k for k in points if k[0] == skew and k[1] == nf), key=lambda k: k[2])
            if not keys:
                continue
            kb = [max(r.map_bytes for r in points[k]) / KB for k in keys]
            for row, metric, scale in ((0, lambda r: r.scores[300].recall, 100), (1, lambda r: r.scores[300].are, 1)):
                values = [[scale * metric(r) for r in points[k]] for k in keys]
                mean = np.array([statistics.mean(v) for v in values])
                low = mean - np.array([min(v) for v in values])
                high = np.array([max(v) for v in values]) - mean
                axes[row][col].errorbar(kb, mean, yerr=[low, high], fmt="-o", ms=4, capsize=3,
                                        color=NF_COLORS[nf], label=f"{nf} top-300")
        for nf, budget, goal in TARGETS:   # a target: this recall or more, from this memory on
            axes[0][col].hlines(100 * goal, budget, x_max, colors=NF_COLORS[nf], linestyles=":", lw=1.2)
            axes[0][col].plot([budget], [100 * goal], marker="|", ms=12, color=NF_COLORS[nf])
            axes[0][col].annotate(f"{nf} {goal:.0%}", (budget, 100 * goal), fontsize=7, color=NF_COLORS[nf],
                                  xytext=(3, 2), textcoords="offset points")
        axes[0][col].set_title(f"Zipf skew {skew}" + (" (targets apply)" if skew in TARGET_SKEWS else ""))
        axes[0][col].set_ylim(0, 102)
        axes[1][col].set_yscale("log")
        axes[1][col].set_xscale("log", base=2)
        axes[1][col].set_xlim(x_min, x_max)
        axes[1][col].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        axes[1][col].set_xlabel("state memory (KB, every map of the instance)")
    axes[0][0].set_ylabel("top-300 recall (%), mean and worst seed")
    axes[1][0].set_ylabel("ARE of the reported top-300")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    say(f"plot written: {path}")


# ---- main ----------------------------------------------------------------------------------

def bench_accuracy(cfg: dict, skews: list[float], seeds: list[int], budgets: list[int]) \
        -> tuple[list[Row], list[ReadRow], tuple]:
    """Every skew, seed, NF and budget; also returns a trace and its frames for the cost part."""
    say(f"[1/3] accuracy: {len(skews)} skews x {len(seeds)} seeds x {len(NFS)} NFs x {len(budgets)} budgets, "
        f"{cfg['packets']:,} packets per replay")
    say("      rec/prec@k: top-k recall and precision; ARE@k: average relative error of the k reported flows'\n"
        "      packet estimates; held300: share of the true top-300 that the flow table holds at any rank;\n"
        "      under: reported top-300 flows counted below their exact count (a sketch estimate never is;\n"
        "      PRECISION's stages and cms's candidates count a flow from when it took its slot over);\n"
        "      ns/pkt: the program's kernel time per packet in the replay; replay: its wall time")
    rows, reads = [], []
    cost_trace = None
    with bench_node("hhb", 1, ipv6=False) as (ctl, node):
        sizes = {}
        for nf in NFS:   # a first deployment tells each map's real entry size
            ctl.deploy(node, nf, ["hb0"])
            sizes[nf] = MapSizes(ctl, node, nf)
            ctl.remove(node, nf)
        configs = {nf: {kb: fit_params(nf, sizes[nf], kb * KB) for kb in budgets} for nf in NFS}
        for skew in skews:
            for seed in seeds:
                t0 = time.perf_counter()
                trace = zipf_trace(skew, cfg["flows"], cfg["packets"], seed)
                frames = build_frames(trace)
                index = trace_index(trace)
                top1 = trace.packets.max() / trace.packets.sum()
                say(f"trace skew {skew} seed {seed}: {trace.flows:,} flows, {len(trace.order):,} packets, "
                    f"{int(trace.bytes.sum()):,} bytes; heaviest flow {top1:.1%} of packets, 100th "
                    f"{trace.packets[trace.top(100)[-1]]}, 300th {trace.packets[trace.top(300)[-1]]} packets "
                    f"(built in {time.perf_counter() - t0:.1f} s)")
                print_header()
                for nf in NFS:
                    for kb in budgets:
                        params = configs[nf][kb]
                        if params is None:
                            say(f"{skew:>4} {seed:>4} {nf:<9} {kb:>4}KB  no configuration fits")
                            continue
                        # read cost depends on the size only: timed once per size, in the first trace's runs
                        first = skew == skews[0] and seed == seeds[0]
                        map_bytes, ns, secs, held = run_one(ctl, node, nf, params, trace, frames,
                                                            reads if first else None)
                        row = Row(skew, seed, nf, kb, params, map_bytes, ns, secs,
                                  {k: score(trace, index, held, k) for k in KS})
                        rows.append(row)
                        print_row(row)
                if cost_trace is None or skew == 1.0:
                    cost_trace = (trace, frames)
    return rows, reads, cost_trace


def numbers(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: '{text}' is not a comma-separated list of numbers") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{what}: give at least one")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK['flows']:,} flows, {QUICK['packets']:,} packets, budgets {QUICK['budgets_kb']} KB, "
                         f"the first seed only unless --seeds says otherwise")
    ap.add_argument("--seeds", type=lambda t: numbers(t, int, "--seeds"),
                    help=f"trace seeds, comma-separated (default {','.join(map(str, SEEDS))})")
    ap.add_argument("--skews", type=lambda t: numbers(t, float, "--skews"), default=list(SKEWS),
                    help=f"Zipf skews, comma-separated (default {','.join(map(str, SKEWS))})")
    ap.add_argument("--budgets", type=lambda t: numbers(t, int, "--budgets"),
                    help=f"memory budgets in KB, comma-separated (default {','.join(map(str, FULL['budgets_kb']))}; "
                         f"--quick {','.join(map(str, QUICK['budgets_kb']))})")
    ap.add_argument("--flows", type=int, help="flows per trace (default 120,000; --quick 20,000)")
    ap.add_argument("--packets", type=int, help="packets per trace (default 2,500,000; --quick 200,000)")
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG to write (default {DEFAULT_PLOT})")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: v for k, v in (("flows", args.flows), ("packets", args.packets)) if v is not None})
    seeds = args.seeds or (list(SEEDS[:1]) if args.quick else list(SEEDS))
    budgets = args.budgets or list(cfg["budgets_kb"])
    if not start(__file__, argv, args.quick, "BPF programs and network namespaces",
                 f"seeds {','.join(map(str, seeds))}, skews {','.join(map(str, args.skews))}"):
        return 1

    def body() -> None:
        try:
            rows, reads, (trace, frames) = bench_accuracy(cfg, args.skews, seeds, budgets)
            say()
            say("per skew, NF and budget, over the seeds:")
            print_summary(rows)
            say()
            print_targets(rows)
            say()
            say("[2/3] sketch reads at each memory size (timed in step 1, after the first trace's replays)")
            print_reads(reads)
            say()
            print_cost(bench_cost(trace, frames, cfg["cost_packets"]))
            say()
            plot(rows, args.plot, f"innet heavy hitters on XDP: {cfg['flows']:,} flows, {cfg['packets']:,} "
                                  f"packets, seeds {','.join(map(str, seeds))}")
        finally:
            current().drop()

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
