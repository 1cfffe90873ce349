"""The closed loop: flow statistics -> elephants -> path allocator -> per-flow path overrides.

Every epoch the loop
  1. closes an interval of every heavy-hitter NF instance it monitors (Count-Min epochs, or
     PRECISION's counter growth) and takes each flow's rate, the largest any monitor saw;
  2. updates the elephant set (controller.te.elephants: threshold with hysteresis);
  3. estimates the elephants' demands and runs the allocator on the live topology, each
     elephant's candidates being its current path and its k shortest; the allocation is taken
     only if it beats the current one's objective by `min_gain` (relative), so equal-scoring
     alternatives and twin noise never move a flow;
  4. installs each moved flow's path make-before-break: the new path's flow_routes entries
     from the last router back to the ingress (the ingress entry switches the flow), then the
     old path's other entries, ingress first. A flow that stops being an elephant goes back
     to its routed path the same way.

Overrides are desired state twice over: their entries are the NFRouter instances' table
entries (so `innet reconcile` restores them), and the store's path_overrides table says which
flow each entry pins, the path, and the entries still to retire. A row is written before its
entries are and removed after they are gone, so after a kill -9 `resume()` (run by `start()`)
completes every override or takes it out: never half a path. Decisions go to the store's log
(`innet te status`, the API's /paths).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from controller.errors import InnetError
from controller.routes import ROUTER
from controller.stats import FlowMonitor, FlowRate, StatsError, flow_table
from controller.stats import Flow as FlowKey
from controller.store import PathOverrideRow
from controller.te.allocators import BEST, run
from controller.te.elephants import ElephantPolicy, ElephantTracker, estimate_demands
from controller.te.errors import TeError
from controller.te.live import LiveNetwork, PinEntry, flow_key
from controller.te.network import WIRED, Flow, Instance, Path
from controller.te.paths import SHORTEST, candidate_paths
from controller.te.twin import EFFICIENCY, Objective, Twin
from controller.topology import parse_topology

# A monitor that counts packets only (no byte counter) is turned into Mbit/s at this size.
ASSUMED_PACKET_BYTES = 1500
_EPS = 1e-9


@dataclass(frozen=True)
class Monitor:
    node: str
    instance: str

    def __str__(self) -> str:
        return f"{self.node}:{self.instance}"


@dataclass
class EpochReport:
    """What one epoch saw and did."""
    epoch: int
    at: float                                   # wall clock, end of the epoch
    duration: float                             # the measured interval, s
    rates: dict[str, float]                     # flow key -> Mbit/s, every flow the monitors listed
    elephants: dict[str, dict] = field(default_factory=dict)   # key -> {mbps, demand, path}
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    moves: list[dict] = field(default_factory=list)            # {flow, from, to, installed_at}
    before: dict | None = None                  # the twin's figures of the current allocation
    after: dict | None = None                   # and of the allocator's, when it ran
    decision_s: float | None = None
    install_s: float | None = None
    note: str = ""

    def summary(self) -> str:
        parts = [f"epoch {self.epoch}: {len(self.elephants)} elephant(s)"]
        if self.joined:
            parts.append(f"joined {', '.join(self.joined)}")
        if self.left:
            parts.append(f"left {', '.join(self.left)}")
        for m in self.moves:
            parts.append(f"moved {m['flow']} from {_shown(m['from'])} to {_shown(m['to'])}")
        if self.before and self.after:
            parts.append(f"efficiency {self.before['efficiency']:.2f} -> {self.after['efficiency']:.2f}"
                         f" (decided in {1000 * self.decision_s:.1f} ms)")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)

    def as_doc(self) -> dict:
        return asdict(self)


def _shown(path) -> str:
    return ">".join(path) if path else "routed path"


def discover_monitors(controller) -> list[Monitor]:
    """Every heavy-hitter NF instance (one with a flow table) on a router, outside service chains."""
    routers = {n.name for n in controller.store.nodes() if n.role == "router"}
    found = []
    for inst in controller.instances():
        if inst.node not in routers or inst.behind is not None:
            continue
        try:
            flow_table(controller.spec(inst.node, inst.id))
        except StatsError:
            continue
        found.append(Monitor(inst.node, inst.id))
    return found


class PathLoop:
    def __init__(self, controller, monitors: list[Monitor] | None = None, policy: ElephantPolicy | None = None,
                 allocator: str = BEST, k: int = 3, min_gain: float = 0.05, top: int = 64,
                 objective: Objective = EFFICIENCY, router_instance: str = ROUTER, act: bool = True,
                 progress: Callable[[str], None] | None = None):
        testbed = controller.store.testbed()
        if testbed is None or not testbed.get("doc"):
            raise TeError(f"no testbed runs in scope '{controller.scope.name}': the loop has no network to steer",
                          hint="bring one up first: innet up diamond")
        self.ctl = controller
        self.live = LiveNetwork(parse_topology(testbed["doc"], testbed["topology"]), controller.store, router_instance)
        self.live.network   # a testbed whose links have no bandwidth is refused here, by name
        self.monitors = monitors if monitors is not None else discover_monitors(controller)
        if not self.monitors:
            raise TeError("no heavy-hitter NF runs on a router, so the loop cannot see flows",
                          hint="deploy one at an ingress router: innet nf deploy r1 cms")
        for m in self.monitors:
            controller.instance(m.node, m.instance)   # an unknown one is named here
        self.policy = policy or ElephantPolicy()
        self.allocator, self.k, self.min_gain, self.objective = allocator, k, min_gain, objective
        self.router_instance = router_instance
        self.act = act   # False: decide and log, install nothing (a dry run)
        self.progress = progress or (lambda line: None)
        self.tracker = ElephantTracker(self.policy)
        self._flow_monitors = [FlowMonitor(controller, m.node, m.instance, k=top, by="bytes") for m in self.monitors]
        self.epoch = 0

    # ---- running ---------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Finish what an earlier loop left half done, then begin the first interval now."""
        done = self.resume()
        for m in self._flow_monitors:
            m.start()
        return done

    def run(self, interval_s: float = 0.25, stop: threading.Event | None = None, epochs: int | None = None,
            on_epoch: Callable[[EpochReport], None] | None = None) -> None:
        """Epoch after epoch until `stop` is set or `epochs` have run."""
        if not interval_s > 0:
            raise TeError(f"the loop's interval must be a positive number of seconds, got {interval_s!r}")
        stop = stop or threading.Event()
        self.start()
        deadline = time.monotonic()
        try:
            while epochs is None or self.epoch < epochs:
                deadline += interval_s
                if stop.wait(max(0.0, deadline - time.monotonic())):
                    return
                report = self.step()
                if on_epoch:
                    on_epoch(report)
        finally:
            self.close()

    def close(self) -> None:
        """Give up the monitors' epochs, for other readers (innet hh, the API) to own."""
        for monitor in self._flow_monitors:
            monitor.close()

    def step(self) -> EpochReport:
        """Close one epoch: measure, classify, allocate, install."""
        self.epoch += 1
        rates, duration = self._measure()
        self.live.refresh()
        overrides = self.ctl.store.path_overrides()
        paths = {}
        for flow in {*rates, *self.tracker.elephants}:
            key = flow_key(flow)
            path = overrides[key].path if key in overrides else self.live.default_path(flow)
            if path is not None:
                paths[flow] = path
        thresholds = {f: self.policy.threshold(self.live.bottleneck(p)) for f, p in paths.items()}
        joined, left = self.tracker.update({f: r for f, r in rates.items() if f in paths}, thresholds)
        report = EpochReport(self.epoch, time.time(), duration, {flow_key(f): round(r, 3) for f, r in rates.items()},
                             joined=sorted(map(flow_key, joined)), left=sorted(map(flow_key, left)))
        start = time.perf_counter()
        for flow in left if self.act else ():
            key = flow_key(flow)
            if key in overrides:
                self._repin(flow, None)
                report.moves.append({"flow": key, "from": list(overrides[key].path), "to": None,
                                     "installed_at": time.time()})
        active = {f: rates[f] for f in self.tracker.elephants if rates.get(f, 0.0) > 0 and f in paths}
        if active:
            self._allocate(active, paths, report)
        report.install_s = time.perf_counter() - start - (report.decision_s or 0.0)
        if report.joined or report.left or report.moves or report.note.startswith("dry run"):
            self.ctl.store.log_decision(report.summary(), report.as_doc())
            self.progress(report.summary())
        return report

    # ---- measuring ---------------------------------------------------------------------------
    def _measure(self) -> tuple[dict[FlowKey, float], float]:
        rates: dict[FlowKey, float] = {}
        duration = 0.0
        for monitor in self._flow_monitors:
            sample = monitor.sample()
            duration = max(duration, sample.duration)
            for fr in sample.flows:
                rates[fr.flow] = max(rates.get(fr.flow, 0.0), _mbps(fr))
        return rates, duration

    # ---- deciding ----------------------------------------------------------------------------
    def _allocate(self, rates: dict[FlowKey, float], paths: dict[FlowKey, tuple[str, ...]],
                  report: EpochReport) -> None:
        live = self.live
        # the longest-standing elephants first: where moving either of two flows scores the same,
        # the allocators (subset-sum's stable order, strict improvement after) move the newer one
        flows = [f for f in self.tracker.elephants if f in rates]
        arcs = {f: live.arcs(paths[f]) for f in flows}
        demands = estimate_demands(rates, arcs, live.capacity, {f: live.bottleneck(paths[f]) for f in flows})
        for f in flows:
            report.elephants[flow_key(f)] = {"mbps": round(rates[f], 3), "demand": round(demands[f], 3),
                                             "path": list(paths[f])}
        start = time.perf_counter()
        te_flows = tuple(Flow(flow_key(f), paths[f][0], (paths[f][-1],), demands[f]) for f in flows)
        candidates = candidate_paths(live.network, [(t.source, t.destinations) for t in te_flows], self.k, SHORTEST)
        options = []
        for f, found in zip(flows, candidates):
            here = Path(WIRED, paths[f])
            options.append((here, *(p for p in found if p != here)))   # staying put is option 0
        instance = Instance(live.network, te_flows, tuple(options))
        before = Twin(instance).figures(np.zeros(len(flows), dtype=np.int64))
        allocation = run(self.allocator, instance, self.objective)
        report.decision_s = time.perf_counter() - start
        report.before, report.after = _figures(before), _figures(allocation.figures)
        gain = allocation.figures.objective(self.objective) - before.objective(self.objective)
        if gain <= self.min_gain * abs(before.objective(self.objective)) + _EPS:
            report.note = "kept the current paths" if gain <= _EPS else \
                f"kept the current paths (gain {gain:.3f} below the {self.min_gain:.0%} margin)"
            return
        for f, path in zip(flows, allocation.paths):
            if path.nodes == paths[f]:
                continue
            if not self.act:
                report.note = f"dry run: would move {flow_key(f)} to {_shown(path.nodes)}"
                continue
            routed = live.default_path(f)
            self._repin(f, None if path.nodes == routed else path.nodes)
            report.moves.append({"flow": flow_key(f), "from": list(paths[f]), "to": list(path.nodes),
                                 "installed_at": time.time()})

    # ---- installing --------------------------------------------------------------------------
    def _repin(self, flow: FlowKey, new_path: tuple[str, ...] | None) -> None:
        """Move the flow from its override (if any) to `new_path` (None: its routed path),
        make-before-break."""
        key = flow_key(flow)
        store = self.ctl.store
        old = store.path_overrides().get(key)
        old_pins = [PinEntry.from_doc(d) for d in old.entries] if old else []
        new_pins = self.live.pin_entries(flow, new_path) if new_path else []
        retiring = [p for p in old_pins if not any(p.same_key(n) for n in new_pins)]
        if new_pins:
            store.put_path_override(PathOverrideRow(key, new_path, [p.as_doc() for p in new_pins],
                                                    [p.as_doc() for p in retiring], time.time()))
        self._install(new_pins, retiring)
        if new_pins:
            store.put_path_override(PathOverrideRow(key, new_path, [p.as_doc() for p in new_pins], [], time.time()))
        else:
            store.delete_path_override(key)

    def _install(self, pins: list[PinEntry], retiring: list[PinEntry]) -> None:
        for pin in reversed(pins):          # the last router first: the ingress entry switches the flow
            self.ctl.write(pin.node, self.router_instance, [pin.entry])
        for pin in retiring:                # the old path's entries, ingress first
            if self.ctl.store.instance(pin.node, self.router_instance) is not None:
                self.ctl.delete(pin.node, self.router_instance, [pin.entry])

    def resume(self) -> list[str]:
        """Complete every override a killed loop left with entries to write or to retire."""
        done = []
        for row in self.ctl.store.path_overrides().values():
            pins = [PinEntry.from_doc(d) for d in row.entries]
            retiring = [PinEntry.from_doc(d) for d in row.retiring]
            try:
                self._install(pins, retiring)
            except InnetError as exc:
                raise TeError(f"cannot restore the path override of {row.flow}: {exc}",
                              hint="innet te clear removes every override") from None
            if retiring:
                self.ctl.store.put_path_override(PathOverrideRow(row.flow, row.path, row.entries, [], row.since))
                done.append(f"completed the move of {row.flow} to {_shown(row.path)}")
        return done


def clear_overrides(controller, router_instance: str = ROUTER) -> list[str]:
    """Every path override out, ingress entries first: flows go back to their routed paths."""
    removed = []
    for row in controller.store.path_overrides().values():
        for doc in [*row.entries, *row.retiring]:
            pin = PinEntry.from_doc(doc)
            if controller.store.instance(pin.node, router_instance) is not None:
                controller.delete(pin.node, router_instance, [pin.entry])
        controller.store.delete_path_override(row.flow)
        removed.append(row.flow)
    return removed


def _mbps(rate: FlowRate) -> float:
    if rate.bytes_per_s is not None:
        return 8 * rate.bytes_per_s / 1e6
    return 8 * ASSUMED_PACKET_BYTES * rate.packets_per_s / 1e6


def _figures(f) -> dict:
    return {"throughput": round(f.throughput, 3), "demand": round(f.demand, 3),
            "efficiency": round(f.efficiency, 4), "fairness": round(f.fairness, 4)}
