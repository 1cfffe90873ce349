"""The service layer: the one writer of desired state, and what brings the data plane to it.

Every change is an operation: the writer lock of the scope is taken (one writer at a time
across processes), the intent is logged in the store, the desired state is updated, the
nodes are changed through their data-plane interface (controller.dataplane), and the
operation is marked done. An operation that fails undoes its desired-state change; one
that was interrupted (kill -9) is found by the next writer, which reconciles the nodes it
touched: the data plane is brought to the desired state (roll forward) or, where that
fails, the desired state before the operation is put back and applied (roll back).

NF instances are addressed by (node, instance id); the id defaults to the NF's name, so
`deploy("r1", "cms")` makes instance "cms" on r1 and `read_stat("r1", "cms", ...)` reads it.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict
from typing import Callable, Iterator

import numpy as np

from controller.catalog import CATALOG_DIR, NFSpec, get_nf
from controller.dataplane import InstanceSpec, LocalNode, NodeDataPlane, nf_spec
from controller.errors import InnetError, TargetError, TopologyError
from controller.node import Node
from controller.queues import QueueLevel, QueueStats
from controller.routes import fib_route, kernel_routes, route_entries
from controller.scope import Scope, current
from controller.store import DONE, FAILED, PENDING, RECOVERED, DataplaneRecords, InstanceRow, NodeRow, Store
from controller.tables import EntryCounters, TableEntry, normalize
from controller.targets import Deployment, Target, make_target
from controller.targets.base import check_instance_id

log = logging.getLogger("innet")
TARGET_KINDS = ("xdp", "bmv2")


class Controller:
    def __init__(self, scope: Scope | None = None, progress: Callable[[str], None] | None = None):
        self.scope = scope or current()
        self.store = Store(self.scope.db_path)
        self.records = DataplaneRecords(self.store)
        self.progress = progress or log.info
        self._targets: dict[str, Target] = {}
        self._lock = threading.RLock()
        self._depth = 0
        self._held = None
        self.recovered: list[str] = []   # what the last recovery did

    # ---- nodes ------------------------------------------------------------------------
    @property
    def nodes(self) -> dict[str, Node]:
        return {r.name: Node(r.name, r.netns, r.role, r.target, r.kernel_slow_path) for r in self.store.nodes()}

    def node(self, name: str) -> Node:
        nodes = self.nodes
        if name not in nodes:
            raise TopologyError(f"unknown node '{name}'", hint=f"nodes: {', '.join(sorted(nodes)) or 'none'}")
        return nodes[name]

    def add_node(self, node: Node) -> Node:
        self.store.put_node(NodeRow(node.name, node.netns, node.role, node.target, node.kernel_slow_path))
        return node

    def forget_node(self, name: str) -> list[str]:
        """Remove everything innet runs on the node, then the node and its desired state."""
        with self._operation("forget-node", name, name):
            if name not in self.nodes:   # the recovery this operation began with dropped it
                return []
            removed = self._prune(name, set())
            self.store.delete_node(name)
            return removed

    def target(self, kind: str) -> Target:
        if kind not in self._targets:
            self._targets[kind] = make_target(kind, self.scope, self.records)
        return self._targets[kind]

    def plane(self, name: str) -> NodeDataPlane:
        """The node's data-plane interface (in this process today; a per-node agent later)."""
        return LocalNode(self.node(name), {k: self.target(k) for k in TARGET_KINDS})

    # ---- operations ----------------------------------------------------------------------
    @contextmanager
    def _writer(self) -> Iterator[None]:
        """The scope's writer lock, re-entrant within this controller; the first taker
        recovers operations that a killed process left pending."""
        with self._lock:
            if self._depth == 0:
                self._held = self.scope.writer_lock()
                self._held.__enter__()
            self._depth += 1
            try:
                if self._depth == 1:
                    self.recovered = self._recover()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    held, self._held = self._held, None
                    held.__exit__(None, None, None)

    @contextmanager
    def _operation(self, kind: str, node: str | None, subject: str | None, detail: dict | None = None):
        with self._writer():
            op = self.store.begin(kind, node, subject, detail)
            try:
                yield op
            except BaseException as exc:
                self.store.finish(op, FAILED, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise
            self.store.finish(op, DONE)

    def recover(self) -> list[str]:
        """Finish or roll back operations that killed processes left pending; says what it did."""
        if not self.store.operations(PENDING, limit=1):
            return []
        with self._writer():
            return self.recovered

    def _recover(self) -> list[str]:
        """Finish or roll back what killed processes left pending (called with the writer lock)."""
        report = []
        for op in self.store.operations(PENDING, limit=1000):   # newest first: an operation inside another
            # (a service deploy's deploy of a forwarder, say) is whole again before the outer one goes on
            what = f"interrupted {op.kind} {op.subject or ''} on {op.node or 'the testbed'} (pid {op.pid})"
            self.progress(f"[innet] recovering: {what}")
            nodes = [op.node] if op.node and op.node in self.nodes else None
            try:
                report += self._recover_one(op, nodes, what)
            except InnetError as exc:   # left failed, not pending: the next command must not trip over it
                self.store.finish(op.id, FAILED, f"recovery: {exc.message}")
                report.append(f"{what}: could not be recovered: {exc.message} (fix that, then run innet reconcile)")
                continue
            self.store.finish(op.id, RECOVERED)
            report.append(f"{what}: recovered")
        for line in report:
            self.progress(f"[innet] {line}")
        return report

    def _recover_one(self, op, nodes: list[str] | None, what: str) -> list[str]:
        """Roll an interrupted operation forward (the desired state already holds its intent); a
        deploy that cannot be finished is rolled back to the instance it replaced, or none."""
        if op.kind in ("service-deploy", "service-delete"):
            from controller.sfc import ChainService   # chains sit above this layer
            return ChainService(self).recover(op.kind, op.subject, op.detail)
        if op.kind == "forget-node" and nodes:   # the node was on its way out: finish that
            report = self._prune(op.node, set())
            self.store.delete_node(op.node)
            return report
        try:
            return self._reconcile(nodes)
        except InnetError as exc:
            if op.kind != "deploy" or op.node not in self.nodes:
                raise
            before = op.detail.get("before")
            if before:
                self.store.put_instance(_instance_row(before))
            else:
                self.store.delete_instance(op.node, op.subject)
            return [f"{what}: cannot finish ({exc.message}); rolled back"] + self._reconcile([op.node])

    def reconcile(self, nodes: list[str] | None = None) -> list[str]:
        """Bring the data plane of `nodes` (default: all) to the desired state; says what it changed."""
        with self._operation("reconcile", nodes[0] if nodes and len(nodes) == 1 else None, None):
            return self._reconcile(nodes)

    def _reconcile(self, nodes: list[str] | None) -> list[str]:
        report = []
        for name in nodes or list(self.nodes):
            node = self.node(name)
            if node.netns and not os.path.exists(node.netns):
                report += [f"{name}: {line}" for line in self._prune(name, set())]
                self.store.delete_node(name)
                report.append(f"{name}: its namespace is gone; dropped the node and its state")
                continue
            report += [f"{name}: {line}" for line in self._reconcile_node(name)]
        return report

    def _reconcile_node(self, name: str) -> list[str]:
        plane = self.plane(name)
        desired = self.store.instances(name)
        report = plane.prune({i.id for i in desired})
        actual = {d.instance: d for d in plane.deployments()}
        for inst in desired:
            d = actual.get(inst.id)
            why = _differs(inst, d)
            if why:
                if d is not None and _behind(d) != inst.behind:
                    plane.remove(inst.id)   # between a hook and a forwarder slot, or slots: no move in place
                d = plane.apply(_instance_spec(inst))
                report.append(f"redeployed {inst.id} ({inst.nf}): {why}")
            changed = self._sync_entries(plane, inst)
            if changed:
                report.append(f"{inst.id}: {changed} table entries brought to the desired state")
        changed = self._sync_fib(plane)
        if changed:
            report.append(f"kernel FIB: {changed} routes brought to the desired state")
        return report

    def _prune(self, name: str, keep: set[str]) -> list[str]:
        return self.plane(name).prune(keep)

    # ---- desired table entries ----------------------------------------------------------
    def desired_entries(self, node: str, instance: str) -> dict[tuple, TableEntry]:
        """Every entry the controller owns in the instance's tables, by (table, match) key."""
        entries = {}
        for table, match, action, params in self.store.entries(node, instance):
            e = TableEntry(table, match, action, params)
            entries[e.key()] = e
        for e in route_entries(self, node, instance):
            entries[e.key()] = e
        return entries

    def _sync_entries(self, plane: NodeDataPlane, inst: InstanceRow) -> int:
        desired = self.desired_entries(plane.name, inst.id)
        spec = nf_spec(inst.nf, inst.source)
        changed = 0
        for table in spec.tables:
            actual = {e.key(): e for e in plane.read(inst.id, table)}
            wanted = {k: e for k, e in desired.items() if e.table == table}
            extra = [e for k, e in actual.items() if k not in wanted]
            missing = [e for k, e in wanted.items() if actual.get(k) != e]
            if extra:
                plane.delete(inst.id, extra)
            if missing:
                plane.write(inst.id, missing)
            changed += len(extra) + len(missing)
        return changed

    def _sync_fib(self, plane: NodeDataPlane) -> int:
        if not self.node(plane.name).kernel_slow_path:
            return 0
        desired = {r.prefix: r for r in kernel_routes(self, plane.name)}
        actual = {r.prefix: r for r in plane.fib_routes()}
        extra = [r for p, r in actual.items() if p not in desired]
        missing = [r for p, r in desired.items() if actual.get(p) != r]
        plane.fib_delete(extra, list(desired.values()))
        plane.fib_replace(missing)
        return len(extra) + len(missing)

    # ---- NF instances -------------------------------------------------------------------
    def instances(self, node: str | None = None) -> list[InstanceRow]:
        return self.store.instances(node)

    def instance(self, node: str, instance: str) -> InstanceRow:
        row = self.store.instance(node, instance)
        if row is None:
            known = ", ".join(i.id for i in self.store.instances(node)) or "none"
            raise TargetError(f"no NF instance '{instance}' on {node}",
                              hint=f"instances on {node}: {known}; deploy one with innet nf deploy {node} NF")
        return row

    def spec(self, node: str, instance: str) -> NFSpec:
        row = self.instance(node, instance)
        return nf_spec(row.nf, row.source)

    def deploy(self, node: str, nf: str | NFSpec, interfaces: list[str] | None = None, params: dict | None = None,
               instance: str | None = None, target: str | None = None,
               behind: tuple[str, int] | None = None) -> Deployment:
        """Run an NF instance (id: `instance`, default the NF's name) on `interfaces` of `node`
        (default: all but lo), or `behind` a forwarder instance of the node, in one of its slots
        (a service chain's NF: no interfaces of its own). A redeploy with other parameters keeps
        the instance's entries and routes: they are written again into the new maps or pipeline."""
        n = self.node(node)
        spec = nf if isinstance(nf, NFSpec) else get_nf(nf)
        source = None if spec.source.parent == CATALOG_DIR else str(spec.source)
        values = spec.resolve_parameters(params)
        inst_id = check_instance_id(instance or spec.name)
        if behind is not None:
            interfaces = []
        elif interfaces is None:
            interfaces = sorted(i.name for i in self.plane(node).interfaces() if i.name != "lo")
        row = InstanceRow(node, inst_id, spec.name, target or n.target, tuple(interfaces), values, source,
                          tuple(behind) if behind else None)
        before = self.store.instance(node, inst_id)
        with self._operation("deploy", node, inst_id, {"before": asdict(before) if before else None}):
            self.store.put_instance(row)
            plane = self.plane(node)
            try:
                d = plane.apply(_instance_spec(row))
            except BaseException:
                if before:
                    self.store.put_instance(before)
                else:
                    self.store.delete_instance(node, inst_id)
                raise
            for cleared in d.cleared:   # maps or a pipeline were recreated: refill from desired state
                self._sync_entries(plane, self.instance(node, cleared))
            return d

    def remove(self, node: str, instance: str) -> bool:
        """Remove the instance and its desired state: entries, and routes from the kernel FIB too."""
        n = self.node(node)
        with self._operation("remove", node, instance):
            plane = self.plane(node)
            if n.kernel_slow_path:
                routes = [r for r in self.store.routes(node) if not r.local]
                plane.fib_delete([fib_route(r) for r in routes if r.instance == instance],
                                 [fib_route(r) for r in routes if r.instance != instance])
            desired = self.store.instance(node, instance) is not None
            self.store.delete_instance(node, instance)
            return plane.remove(instance) or desired

    def deployment(self, node: str, instance: str) -> Deployment | None:
        return next((d for d in self.plane(node).deployments() if d.instance == instance), None)

    def deployments(self, node: str) -> list[Deployment]:
        return self.plane(node).deployments()

    # ---- tables and statistics ----------------------------------------------------------
    def _canonical(self, node: str, instance: str, entries: list[TableEntry], with_action: bool) -> list[TableEntry]:
        row = self.instance(node, instance)
        spec = nf_spec(row.nf, row.source)
        return [normalize(spec.table(e.table), e, with_action=with_action, nf_params=row.params) for e in entries]

    def write(self, node: str, instance: str, entries: list[TableEntry]) -> None:
        """Insert or modify entries, all or none; they become desired state."""
        canonical = self._canonical(node, instance, entries, True)
        with self._operation("write", node, instance, {"entries": len(entries)}):
            self.plane(node).write(instance, canonical)
            self.store.put_entries(node, instance, ((e.table, e.match, e.action, e.params) for e in canonical))

    def delete(self, node: str, instance: str, entries: list[TableEntry]) -> int:
        canonical = self._canonical(node, instance, entries, False)
        with self._operation("delete", node, instance, {"entries": len(entries)}):
            n = self.plane(node).delete(instance, canonical)
            self.store.delete_entries(node, instance, ((e.table, e.match) for e in canonical))
            return n

    def read(self, node: str, instance: str, table: str) -> list[TableEntry]:
        return self.plane(node).read(instance, table)

    def read_counters(self, node: str, instance: str, table: str) -> list[EntryCounters]:
        return self.plane(node).read_counters(instance, table)

    def read_stat(self, node: str, instance: str, stat: str) -> dict[str, int]:
        return self.plane(node).read_stat(instance, stat)

    def read_registers(self, node: str, instance: str, stat: str) -> dict[str, np.ndarray]:
        return {name: f.array() for name, f in self.plane(node).read_registers(instance, stat).items()}

    def write_registers(self, node: str, instance: str, stat: str, index: int, values: dict[str, int]) -> None:
        self.plane(node).write_registers(instance, stat, index, values)

    def reset_registers(self, node: str, instance: str, stat: str, start: int = 0, count: int | None = None) -> None:
        self.plane(node).reset_registers(instance, stat, start, count)

    def configure_queues(self, node: str, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        spec = self.spec(node, instance)
        if "queues" not in spec.capabilities:
            raise TargetError(f"{spec.name} (instance {instance} on {node}) has no priority queues",
                              hint="queues are a capability of NFs such as prio")
        with self._operation("queues", node, instance, {"interface": interface}):
            return self.plane(node).configure_queues(instance, interface, link_rate_bps, levels)

    def queue_stats(self, node: str, instance: str, interface: str) -> list[QueueStats]:
        return self.plane(node).queue_stats(instance, interface)

    # ---- status -------------------------------------------------------------------------
    def status(self) -> dict:
        """The testbed, its nodes and their NF instances, desired beside actual."""
        nodes = []
        for name, node in self.nodes.items():
            try:
                actual = {d.instance: d for d in self.plane(name).deployments()}
                problem = None
            except InnetError as exc:
                actual, problem = {}, exc.message
            instances = []
            for inst in self.store.instances(name):
                d = actual.pop(inst.id, None)
                why = _differs(inst, d) if problem is None else problem
                instances.append({"id": inst.id, "nf": inst.nf, "target": inst.target,
                                  "interfaces": list(inst.interfaces), "params": inst.params,
                                  "modes": d.modes if d else {}, "health": "ok" if not why else why})
            for d in actual.values():
                instances.append({"id": d.instance, "nf": d.nf, "target": d.target, "interfaces": list(d.interfaces),
                                  "params": d.params, "modes": d.modes, "health": "not desired (innet reconcile removes it)"})
            nodes.append({"name": name, "role": node.role, "target": node.target, "problem": problem,
                          "routes": len(self.store.routes(name)), "instances": instances})
        pending = self.store.operations(PENDING)
        return {"scope": self.scope.name, "database": str(self.scope.db_path), "testbed": self.store.testbed(),
                "testbed_running": self.scope.testbed_held(), "nodes": nodes,
                "pending_operations": [asdict(op) for op in pending]}


def _instance_spec(row: InstanceRow) -> InstanceSpec:
    return InstanceSpec(row.id, row.nf, row.target, row.interfaces, row.params, row.source, row.behind)


def _instance_row(d: dict) -> InstanceRow:
    return InstanceRow(**{**d, "interfaces": tuple(d["interfaces"]), "behind": tuple(d["behind"]) if d.get("behind")
                          else None})


def _differs(inst: InstanceRow, d: Deployment | None) -> str | None:
    """Why the deployed instance `d` is not the desired `inst`, or None."""
    if d is None:
        return "not deployed"
    if d.problem:
        return d.problem
    if d.nf != inst.nf or d.target != inst.target:
        return f"runs {d.nf} on {d.target}, desired {inst.nf} on {inst.target}"
    if tuple(d.interfaces) != tuple(inst.interfaces):
        return f"runs on {', '.join(d.interfaces)}, desired {', '.join(inst.interfaces)}"
    if d.params != inst.params:
        return f"runs with {d.params}, desired {inst.params}"
    if _behind(d) != inst.behind:
        return f"runs behind {d.behind}, desired behind {inst.behind}"
    return None


def _behind(d: Deployment) -> tuple[str, int] | None:
    return tuple(d.behind) if d.behind else None
