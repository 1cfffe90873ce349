"""Path allocation: PHaul's comparison on generated IAB instances, against brute force, and decision time.

    .venv/bin/python bench/allocator.py [--quick] [--seed N] [--jobs N] [--plot PREFIX]

Instances come from controller/te/generators.py (PHaul's IAB model: 3 donors, 1-3 children per
node, cross links, mm-wave and Sub6 capacities, one flow per active node to any donor), with
candidate paths by PHaul's least-common heuristic, computed once per topology and K.

1. Comparison. Every configuration of nodes (20, 40, 60), K (1, 3 paths per technology), demand
   range (250-500, 500-750 Mbit/s) and node activity (0.4, 0.8): 10 topologies x 50 traffic
   matrices (--quick: 1 x 2). On each instance, under both twin models (max-min, PHaul's
   water-filling): random, global-first-fit and milp (max throughput, HiGHS) once, subset-sum
   and local-search (innet's best)
   once per objective, efficiency (gamma = 1) and fairness (gamma = -1). Printed per
   configuration: the mean efficiency under the efficiency objective and the mean fairness under
   the fairness objective of each allocator, and local-search over subset-sum (ratio of the means,
   and the largest ratio on one instance).
2. Brute force, on 20-node instances where it has at most BruteForce.limit allocations to score:
   every 20-node configuration and PHaul's Figure 19 setting (K = 1, activity 1, 500-750 Mbit/s);
   10 topologies x 3 traffic matrices (--quick: 1 x 1). Local-search and subset-sum over brute
   force, per objective and model.
3. Decision time against network size (20 to 60 nodes, K = 1 and 3), each allocator run alone
   in this process (sections 1 and 2 run in --jobs worker processes beside each other).
Plots (PNG, needs the `bench` extra): efficiency and fairness against nodes per allocator, one
file per twin model, and decision time against nodes. Ratios are against baselines measured in
the same run. It prints figures and asserts nothing beyond the work having been done (every
instance rated by every allocator).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository

from bench.harness import REPO, run, say  # noqa: E402
from controller.te.allocators import (BEST, BruteForce, GlobalFirstFit, MaxThroughputMilp, RandomPaths,  # noqa: E402
                                      combinations)
from controller.te.allocators import run as allocate_once  # noqa: E402
from controller.te.generators import DEMAND_RANGES, iab_topology  # noqa: E402
from controller.te.twin import EFFICIENCY, FAIRNESS, MODELS, Twin  # noqa: E402

NODES, KS, ACTIVITIES = (20, 40, 60), (1, 3), (0.4, 0.8)
OBJECTIVES = {"efficiency": EFFICIENCY, "fairness": FAIRNESS}
ALWAYS = (RandomPaths(), GlobalFirstFit(), MaxThroughputMilp())   # blind to the objective: run once
PER_OBJECTIVE = ("subset-sum", BEST)
SHOWN = ("random", "global-first-fit", "milp", "subset-sum", BEST)
FIG19 = (20, 1, (500.0, 750.0), 1.0)                  # PHaul's brute-force comparison
TIMING_NODES = (20, 30, 40, 50, 60)
DEFAULT_PLOT = Path(tempfile.gettempdir()) / "innet-allocator"   # not into the source tree


@dataclass(frozen=True)
class Config:
    nodes: int
    k: int
    demand: tuple[float, float]
    activity: float

    def __str__(self) -> str:
        return f"{self.nodes:2d} nodes K={self.k} {self.demand[0]:.0f}-{self.demand[1]:.0f} rho={self.activity}"


@dataclass(frozen=True)
class Result:
    config: Config
    model: str
    allocator: str
    objective: str        # what it optimised: efficiency, fairness, or "-" (blind)
    efficiency: float
    fairness: float
    seconds: float


COMPARE, BRUTE, TIMING = 0, 1, 2   # seed-key tags: each section draws its own instances


def _rng(*key: int | float) -> np.random.Generator:
    """A generator keyed by the seed and what it is for (floats by their thousandths)."""
    return np.random.default_rng([int(round(x * 1000)) if isinstance(x, float) else x for x in key])


def _rate(config: Config, instance, with_brute_force: bool) -> list[Result]:
    results = []
    for model in MODELS:
        for allocator in ALWAYS:
            a = allocate_once(allocator, instance, EFFICIENCY, model)
            results.append(Result(config, model, a.allocator, "-", a.figures.efficiency, a.figures.fairness, a.seconds))
        for objective_name, objective in OBJECTIVES.items():
            for allocator in PER_OBJECTIVE + (("brute-force",) if with_brute_force else ()):
                a = allocate_once(allocator, instance, objective, model)
                results.append(Result(config, model, a.allocator, objective_name, a.figures.efficiency,
                                      a.figures.fairness, a.seconds))
    return results


def comparison_unit(job: tuple[int, int, int, int, int]) -> list[Result]:
    """One topology and K: every demand range and activity, `matrices` traffic matrices each."""
    seed, nodes, index, k, matrices = job
    topology = iab_topology(nodes, _rng(seed, nodes, index))
    candidates = topology.candidates(k)
    results = []
    for demand in DEMAND_RANGES:
        for activity in ACTIVITIES:
            config = Config(nodes, k, demand, activity)
            rng = _rng(seed, COMPARE, nodes, index, k, demand[0], activity)
            for _ in range(matrices):
                results += _rate(config, topology.instance(topology.flows(activity, demand, rng), candidates), False)
    return results


def brute_force_unit(job: tuple[int, Config, int, int]) -> tuple[Config, int, list[Result]]:
    """One topology of a 20-node configuration: its traffic matrices with at most the brute-force
    limit of allocations, rated with brute force too; and how many were too large."""
    seed, config, index, matrices = job
    topology = iab_topology(config.nodes, _rng(seed, config.nodes, index))
    candidates = topology.candidates(config.k)
    rng = _rng(seed, BRUTE, config.nodes, index, config.k, config.demand[0], config.activity)
    results, skipped = [], 0
    for _ in range(matrices):
        instance = topology.instance(topology.flows(config.activity, config.demand, rng), candidates)
        if combinations(Twin(instance)) > BruteForce().limit:
            skipped += 1
            continue
        results += _rate(config, instance, True)
    return config, skipped, results


# ---- printing ------------------------------------------------------------------------------------

def _pick(results, model, allocator, objective=None, config=None):
    return [r for r in results if r.model == model and r.allocator == allocator
            and (objective is None or r.objective in (objective, "-")) and (config is None or r.config == config)]


def _mean(results, figure: str) -> float:
    return float(np.mean([getattr(r, figure) for r in results]))


def _ratios(results, model, allocator, baseline, objective, config=None) -> np.ndarray:
    """Per instance: allocator's figure over baseline's (same instance, same order of runs)."""
    mine = _pick(results, model, allocator, objective, config)
    theirs = _pick(results, model, baseline, objective, config)
    return np.array([getattr(a, objective) / getattr(b, objective) for a, b in zip(mine, theirs)])


def print_comparison(results: list[Result], configs: list[Config]) -> dict:
    gains = {}
    for model in MODELS:
        for objective in OBJECTIVES:
            say(f"\n{objective} (objective: {objective}), twin model {model}: mean over instances")
            say(f"  {'configuration':32s}" + "".join(f"{a:>17s}" for a in SHOWN) + f"{'ls/ss':>8s}{'max':>7s}")
            for config in configs:
                means = [_mean(_pick(results, model, a, objective, config), objective) for a in SHOWN]
                ratio = means[-1] / means[-2]
                per_instance = _ratios(results, model, BEST, "subset-sum", objective, config)
                gains[(model, objective, config)] = ratio
                say(f"  {str(config):32s}" + "".join(f"{m:17.4f}" for m in means)
                    + f"{ratio:8.4f}{per_instance.max():7.3f}")
    return gains


def print_brute_force(results: list[Result], skipped: dict[Config, int]) -> list[float]:
    say("\nagainst brute force (20 nodes; instances with at most "
        f"{BruteForce().limit} allocations): ratio to the optimum, mean (min)")
    efficiency_ratios = []
    for config in skipped:
        rated = len(_pick(results, MODELS[0], "brute-force", "efficiency", config))
        label = f"{config}{' (PHaul fig. 19)' if (config.nodes, config.k, config.demand, config.activity) == FIG19 else ''}"
        if not rated:
            say(f"  {label}: no instance small enough ({skipped[config]} above the limit)")
            continue
        cells = []
        for model in MODELS:
            for objective in OBJECTIVES:
                ls = _ratios(results, model, BEST, "brute-force", objective, config)
                ss = _ratios(results, model, "subset-sum", "brute-force", objective, config)
                if objective == "efficiency":
                    efficiency_ratios += ls.tolist()
                cells.append(f"{model[:3]} {objective[:3]}: ls {ls.mean():.4f} ({ls.min():.4f}) ss {ss.mean():.4f}")
        say(f"  {label}: {rated} instances, {skipped[config]} above the limit")
        say("    " + "; ".join(cells))
    return efficiency_ratios


def decision_times(seed: int, instances: int) -> dict[tuple[int, int, str], np.ndarray]:
    """Each allocator's decision time per size and K (max-min, efficiency), serially."""
    times = {}
    for nodes in TIMING_NODES:
        for k in KS:
            for index in range(instances):
                topology = iab_topology(nodes, _rng(seed, TIMING, nodes, index))
                instance = topology.instance(topology.flows(0.8, DEMAND_RANGES[1], _rng(seed, TIMING, nodes, index, k)),
                                             topology.candidates(k))
                for allocator in SHOWN:
                    seconds = allocate_once(allocator, instance, EFFICIENCY).seconds
                    times.setdefault((nodes, k, allocator), []).append(seconds)
    return {key: np.array(v) for key, v in times.items()}


def print_times(times) -> None:
    say("\ndecision time (ms; max-min twin, efficiency objective, activity 0.8, 500-750 Mbit/s): mean / max")
    say(f"  {'nodes':>5s} {'K':>2s}" + "".join(f"{a:>22s}" for a in SHOWN))
    for nodes in TIMING_NODES:
        for k in KS:
            say(f"  {nodes:5d} {k:2d}" + "".join(f"{1e3 * times[(nodes, k, a)].mean():13.2f} / {1e3 * times[(nodes, k, a)].max():6.1f}"
                                                 for a in SHOWN))


# ---- plots ---------------------------------------------------------------------------------------

def plot(results: list[Result], times, prefix: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no plot: matplotlib is missing (install the bench extra: .venv/bin/pip install -e '.[bench]')")
        return
    written = []
    for model in MODELS:
        fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
        for row, objective in enumerate(OBJECTIVES):
            for col, (k, demand) in enumerate((k, d) for k in KS for d in DEMAND_RANGES):
                ax = axes[row][col]
                for colour, allocator in enumerate(SHOWN):
                    for activity, style in zip(ACTIVITIES, ("-", "--")):
                        ys = [_mean(_pick(results, model, allocator, objective, Config(n, k, demand, activity)), objective)
                              for n in NODES]
                        ax.plot(NODES, ys, style, color=f"C{colour}", marker="o", label=f"{allocator} rho={activity}")
                ax.set_title(f"K={k}, {demand[0]:.0f}-{demand[1]:.0f} Mbit/s", fontsize=9)
                ax.set_ylabel(objective if col == 0 else "")
                ax.grid(alpha=0.3)
                if row == 1:
                    ax.set_xlabel("IAB nodes")
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"IAB path allocation, twin model {model} (efficiency under gamma=1, fairness under gamma=-1)")
        fig.tight_layout()
        path = Path(f"{prefix}-{model}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, len(KS), figsize=(10, 4), sharey=True)
    for ax, k in zip(axes, KS):
        for allocator in SHOWN:
            ax.plot(TIMING_NODES, [1e3 * times[(n, k, allocator)].mean() for n in TIMING_NODES], marker="o", label=allocator)
        ax.axhline(100, color="grey", linestyle=":", label="100 ms target")
        ax.set_yscale("log")
        ax.set_title(f"K={k}")
        ax.set_xlabel("IAB nodes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("decision time (ms)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(f"{prefix}-time.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    say("plots: " + ", ".join(str(p) for p in written))


# ---- main ----------------------------------------------------------------------------------------

def opening(argv: list[str], quick: bool, jobs: int) -> None:
    """harness.start's lines without its root check: this bench touches no network namespace."""
    name = Path(__file__).resolve().relative_to(REPO).as_posix()
    say(f"reproduce: cd {REPO} && {' '.join(shlex.quote(a) for a in ['.venv/bin/python', name, *argv])}")
    say(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {'quick' if quick else 'full'} run, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {jobs} worker processes")


def body(args) -> None:
    topologies, matrices = (1, 2) if args.quick else (10, 50)
    bf_topologies, bf_matrices = (1, 1) if args.quick else (10, 3)
    configs = [Config(n, k, d, a) for n in NODES for k in KS for d in DEMAND_RANGES for a in ACTIVITIES]
    small = [c for c in configs if c.nodes == 20] + [Config(*FIG19)]
    jobs = [(args.seed, n, i, k, matrices) for n in NODES for i in range(topologies) for k in KS]
    bf_jobs = [(args.seed, c, i, bf_matrices) for c in small for i in range(bf_topologies)]
    t0 = time.perf_counter()
    with Pool(args.jobs) as pool:
        results = [r for unit in pool.imap_unordered(comparison_unit, jobs) for r in unit]
        bf = list(pool.imap_unordered(brute_force_unit, bf_jobs))
    say(f"\n{len(configs)} configurations x {topologies} topologies x {matrices} traffic matrices, "
        f"rated in {time.perf_counter() - t0:.0f} s")
    expected = len(configs) * topologies * matrices * len(MODELS) * (len(ALWAYS) + len(OBJECTIVES) * len(PER_OBJECTIVE))
    if len(results) != expected:
        raise SystemExit(f"rated {len(results)} allocations, expected {expected}")
    gains = print_comparison(results, configs)

    skipped: dict[Config, int] = {c: 0 for c in small}
    bf_results = []
    for config, count, rated in sorted(bf, key=lambda u: (u[0].k, u[0].demand, u[0].activity)):
        skipped[config] += count
        bf_results += rated
    efficiency_ratios = print_brute_force(bf_results, skipped)

    times = decision_times(args.seed, 2 if args.quick else 10)
    print_times(times)

    say("\nagainst the targets")
    if efficiency_ratios:
        say(f"  efficiency vs brute force (20 nodes, {len(efficiency_ratios)} instance-model pairs): "
            f"mean {np.mean(efficiency_ratios):.4f}, min {np.min(efficiency_ratios):.4f} (target >= 0.99)")
    above = sum(g > 1 for g in gains.values())
    say(f"  local-search above subset-sum (mean over instances): {above} of {len(gains)} configuration-model-objective cells; "
        f"never below: {all(g >= 1 - 1e-12 for g in gains.values())}")
    for objective, phaul in (("efficiency", 17), ("fairness", 13)):
        (model, _, config), gain = max(((key, g) for key, g in gains.items() if key[1] == objective), key=lambda kg: kg[1])
        say(f"  largest {objective} gain over subset-sum: {100 * (gain - 1):+.1f}% ({config}, {model}); "
            f"PHaul reports up to {phaul:+d}% over its subset-sum")
    slow = times[(60, 3, BEST)]
    say(f"  decision time at 60 nodes, K=3: mean {1e3 * slow.mean():.1f} ms, max {1e3 * slow.max():.1f} ms (target < 100 ms)")
    plot(results, times, args.plot)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 topology x 2 traffic matrices per configuration (CI)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every topology and traffic matrix (default 1)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes (default: one per CPU)")
    ap.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG path prefix (default {DEFAULT_PLOT})")
    given = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(given)
    opening(given, args.quick, args.jobs)
    return run(lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
