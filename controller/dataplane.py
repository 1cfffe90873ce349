"""The node data-plane interface: what one node offers the controller, keyed by NF instance.

Typed dataclasses in and out, nothing process-local across it (no numpy arrays, file
descriptors or namespace paths), so a per-node agent can serve it over the network
unchanged. `LocalNode` implements it in-process over the node's targets (XdpTarget,
Bmv2Target) and its kernel FIB. Nothing above this layer touches netlink, bpffs or a
switch socket, or asks which target an instance runs on.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyroute2 import IPRoute

from controller import fib
from controller.catalog import NFSpec, get_nf, load_nf_cached
from controller.errors import QueueError, TargetError, TopologyError
from controller.netns import netns
from controller.node import Node
from controller.queues import QueueLevel, QueueStats
from controller.tables import EntryCounters, TableEntry
from controller.targets.base import Deployment, QueueingTarget, Target


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    ifindex: int
    mac: str | None
    mtu: int | None
    addresses: tuple[str, ...] = ()   # the node's own addresses on it, without prefix length


@dataclass(frozen=True)
class InstanceSpec:
    """What should run: an NF instance as the desired state names it."""
    id: str
    nf: str
    target: str
    interfaces: tuple[str, ...]
    params: dict = field(hash=False)
    source: str | None = None   # the catalog file when the NF is not from innet's own catalog
    # (forwarder instance, slot): run behind a service function forwarder on the same node, in
    # that slot of its NF program array, with no interfaces of its own (XDP only)
    behind: tuple[str, int] | None = None

    def spec(self) -> NFSpec:
        return nf_spec(self.nf, self.source)


@dataclass(frozen=True)
class RegisterField:
    """One field of a `registers` statistic: its cells in row-major order. Values of up to 64
    bits travel as little-endian uint64 bytes; wider ones (IPv6 addresses) as integers."""
    shape: tuple[int, ...]
    packed: bytes | None = None
    wide: tuple[int, ...] | None = None

    @classmethod
    def of(cls, array: np.ndarray) -> "RegisterField":
        if array.dtype == object:
            return cls(tuple(array.shape), wide=tuple(int(v) for v in array.reshape(-1)))
        return cls(tuple(array.shape), packed=np.ascontiguousarray(array, dtype="<u8").tobytes())

    def array(self) -> np.ndarray:
        if self.packed is not None:
            return np.frombuffer(self.packed, dtype="<u8").astype(np.uint64).reshape(self.shape)
        return np.array(self.wide, dtype=object).reshape(self.shape)


@dataclass(frozen=True)
class FibRoute:
    """A route of the node's kernel FIB, with the permanent neighbour entry of its next hop."""
    prefix: str
    interface: str
    via: str | None
    mac: str | None


def nf_spec(name: str, source: str | None = None) -> NFSpec:
    """An NF from innet's catalog, or from the catalog file `source`."""
    return load_nf_cached(Path(source)) if source else get_nf(name)


class NodeDataPlane(ABC):
    """One node's data plane. Every method is one request a per-node agent would serve."""
    name: str

    @abstractmethod
    def interfaces(self) -> list[InterfaceInfo]: ...

    @abstractmethod
    def apply(self, spec: InstanceSpec) -> Deployment:
        """Bring the instance to `spec` (deploy, or redeploy with changes); all or nothing."""

    @abstractmethod
    def remove(self, instance: str) -> bool: ...

    @abstractmethod
    def deployments(self) -> list[Deployment]: ...

    @abstractmethod
    def prune(self, keep: set[str]) -> list[str]:
        """Remove what innet owns on the node beyond the instances in `keep`; says what it removed."""

    @abstractmethod
    def write(self, instance: str, entries: list[TableEntry]) -> None: ...

    @abstractmethod
    def delete(self, instance: str, entries: list[TableEntry]) -> int: ...

    @abstractmethod
    def read(self, instance: str, table: str) -> list[TableEntry]: ...

    @abstractmethod
    def read_counters(self, instance: str, table: str) -> list[EntryCounters]: ...

    @abstractmethod
    def read_stat(self, instance: str, stat: str) -> dict[str, int]: ...

    @abstractmethod
    def read_registers(self, instance: str, stat: str) -> dict[str, RegisterField]: ...

    @abstractmethod
    def write_registers(self, instance: str, stat: str, index: int, values: dict[str, int]) -> None: ...

    @abstractmethod
    def reset_registers(self, instance: str, stat: str, start: int = 0, count: int | None = None) -> None: ...

    @abstractmethod
    def configure_queues(self, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]: ...

    @abstractmethod
    def queue_stats(self, instance: str, interface: str) -> list[QueueStats]: ...

    @abstractmethod
    def fib_replace(self, routes: list[FibRoute]) -> None:
        """Install or replace kernel routes with their neighbour entries; all or none."""

    @abstractmethod
    def fib_delete(self, routes: list[FibRoute], keep_neighbours: list[FibRoute]) -> int:
        """Delete kernel routes and their next hops' neighbour entries, but those of the routes in
        `keep_neighbours` (the routes that stay); returns how many routes existed."""

    @abstractmethod
    def fib_routes(self) -> list[FibRoute]:
        """The kernel routes innet installed on the node."""


class LocalNode(NodeDataPlane):
    """The node data-plane interface served in this process, over the node's targets."""

    def __init__(self, node: Node, targets: dict[str, Target]):
        self.node, self.targets, self.name = node, targets, node.name

    def _target_of(self, instance: str) -> Target:
        for kind, target in self.targets.items():
            if target.records.get(self.name, f"{kind}/{instance}") is not None:
                return target
        raise TargetError(f"no NF instance '{instance}' runs on {self.name}",
                          hint=f"deploy it first: innet nf deploy {self.name} NF --id {instance}")

    def _target(self, kind: str) -> Target:
        if kind not in self.targets:
            raise TargetError(f"{self.name} has no {kind} target", hint=f"its targets: {', '.join(self.targets)}")
        return self.targets[kind]

    def interfaces(self) -> list[InterfaceInfo]:
        with netns(self.node.netns), IPRoute() as ipr:
            addresses: dict[int, list[str]] = {}
            for a in ipr.get_addr():
                addresses.setdefault(a["index"], []).append(a.get("IFA_ADDRESS"))
            return [InterfaceInfo(link.get("ifname"), link["index"], link.get("address"), link.get("mtu"),
                                  tuple(addresses.get(link["index"], ())))
                    for link in ipr.get_links()]

    def apply(self, spec: InstanceSpec) -> Deployment:
        for kind, target in self.targets.items():   # an instance moving between targets leaves the old one
            if kind != spec.target and target.records.get(self.name, f"{kind}/{spec.id}") is not None:
                target.remove(self.node, spec.id)
        target = self._target(spec.target)
        if spec.behind is None:   # a target that knows no forwarders runs every other instance
            return target.deploy(self.node, spec.id, spec.spec(), list(spec.interfaces), spec.params)
        return target.deploy(self.node, spec.id, spec.spec(), list(spec.interfaces), spec.params,
                             behind=tuple(spec.behind))

    def remove(self, instance: str) -> bool:
        return any([t.remove(self.node, instance) for t in self.targets.values()])

    def deployments(self) -> list[Deployment]:
        return [d for t in self.targets.values() for d in t.deployments(self.node)]

    def prune(self, keep: set[str]) -> list[str]:
        return [what for t in self.targets.values() for what in t.prune(self.node, keep)]

    def write(self, instance: str, entries: list[TableEntry]) -> None:
        self._target_of(instance).write(self.node, instance, entries)

    def delete(self, instance: str, entries: list[TableEntry]) -> int:
        return self._target_of(instance).delete(self.node, instance, entries)

    def read(self, instance: str, table: str) -> list[TableEntry]:
        return self._target_of(instance).read(self.node, instance, table)

    def read_counters(self, instance: str, table: str) -> list[EntryCounters]:
        return self._target_of(instance).read_counters(self.node, instance, table)

    def read_stat(self, instance: str, stat: str) -> dict[str, int]:
        return self._target_of(instance).read_stat(self.node, instance, stat)

    def read_registers(self, instance: str, stat: str) -> dict[str, RegisterField]:
        arrays = self._target_of(instance).read_registers(self.node, instance, stat)
        return {name: RegisterField.of(a) for name, a in arrays.items()}

    def write_registers(self, instance: str, stat: str, index: int, values: dict[str, int]) -> None:
        self._target_of(instance).write_registers(self.node, instance, stat, index, values)

    def reset_registers(self, instance: str, stat: str, start: int = 0, count: int | None = None) -> None:
        self._target_of(instance).reset_registers(self.node, instance, stat, start, count)

    def _queueing(self, instance: str) -> QueueingTarget:
        target = self._target_of(instance)
        if not isinstance(target, QueueingTarget):
            raise QueueError(f"{self.name}'s {target.kind} target serves no priority queues")
        return target

    def configure_queues(self, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        return self._queueing(instance).configure_queues(self.node, instance, interface, link_rate_bps, levels)

    def queue_stats(self, instance: str, interface: str) -> list[QueueStats]:
        return self._queueing(instance).queue_stats(self.node, instance, interface)

    # ---- the kernel FIB (the slow path of an XDP router) ----------------------------------
    def _kernel_routes(self, routes: list[FibRoute]) -> list[fib.KernelRoute]:
        if not self.node.kernel_slow_path:
            raise TargetError(f"{self.name} has no kernel slow path (its kernel takes no part in forwarding)")
        index = {i.name: i.ifindex for i in self.interfaces()}
        out = []
        for r in routes:
            if r.interface not in index:
                raise TopologyError(f"node {self.name} has no interface '{r.interface}'",
                                    hint=f"its interfaces: {', '.join(sorted(index))}")
            out.append(fib.KernelRoute(r.prefix, index[r.interface], r.via, r.mac))
        return out

    def fib_replace(self, routes: list[FibRoute]) -> None:
        if routes:
            fib.replace(self.node.netns, self._kernel_routes(routes), self.name)

    def fib_delete(self, routes: list[FibRoute], keep_neighbours: list[FibRoute]) -> int:
        if not routes:
            return 0
        keep = {(r.ifindex, _neighbour(r)) for r in self._kernel_routes(keep_neighbours)}
        return fib.delete(self.node.netns, self._kernel_routes(routes), self.name, keep)

    def fib_routes(self) -> list[FibRoute]:
        if not self.node.kernel_slow_path:
            return []
        names = {i.ifindex: i.name for i in self.interfaces()}
        return [FibRoute(r.prefix, names.get(r.ifindex, f"ifindex{r.ifindex}"), r.via, r.mac)
                for r in fib.routes(self.node.netns, self.name)]


def _neighbour(route: fib.KernelRoute) -> str:
    return route.via or route.prefix.split("/")[0]
