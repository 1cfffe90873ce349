"""The target interface: what every data plane (XDP, BMv2) offers for the NF instances of a node.

Everything is keyed by NF *instance* id (unique on its node; several instances of one NF type
may share a node). A target keeps its own bookkeeping (deployment records, counter slots) in
`DataplaneRecords`, the scope's database, and its kernel or switch state under the scope's
pin root and run directory, so two scopes never see each other. Code above this layer never
asks which target it has: it goes through controller.dataplane.NodeDataPlane.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from controller.catalog import NFSpec
from controller.errors import TargetError
from controller.node import Node
from controller.queues import QueueLevel, QueueStats
from controller.scope import Scope
from controller.store import DataplaneRecords
from controller.tables import EntryCounters, TableEntry


# An instance id names pin directories (bpffs refuses '.' in a name), records and switch state:
# letters, digits, '_' and '-' only (so no '/', and no '@', which comes before a pin's generation)
INSTANCE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def check_instance_id(instance: str) -> str:
    if not isinstance(instance, str) or not re.match(INSTANCE_ID, instance):
        raise TargetError(f"instance id {instance!r} is not valid",
                          hint="use letters, digits, '_' or '-' (up to 64 characters, a letter or digit first)")
    return instance


@dataclass(frozen=True)
class Deployment:
    node: str
    instance: str
    nf: str
    target: str
    interfaces: tuple[str, ...]
    params: dict = field(hash=False)
    modes: dict = field(default_factory=dict, hash=False)   # interface -> how it runs there
    problem: str | None = None   # None: runs as recorded; else what is wrong (not attached, switch gone...)
    cleared: tuple[str, ...] = ()   # instances whose table/register state this deploy emptied
    behind: tuple[str, int] | None = None   # (forwarder instance, slot) of an instance behind a forwarder

    @property
    def healthy(self) -> bool:
        return self.problem is None


class Target(ABC):
    kind: str

    def __init__(self, scope: Scope, records: DataplaneRecords):
        self.scope, self.records = scope, records

    @abstractmethod
    def deploy(self, node: Node, instance: str, nf: NFSpec, interfaces: list[str],
               params: dict | None = None, behind: tuple[str, int] | None = None) -> Deployment:
        """Run instance `instance` of `nf` on `interfaces`; a repeat with the same arguments on a
        healthy instance is a no-op. A redeploy with other parameters or interfaces replaces the
        program and recreates state whose definition changed (the caller refills entries); on
        failure everything is as before.

        `behind` = (forwarder, slot): run the instance behind the service function forwarder
        instance `forwarder` on the same node, in slot `slot` of its NF program array, with no
        interfaces of its own (`interfaces` empty); the forwarder must be deployed first. A target
        that cannot do this raises TargetError."""

    @abstractmethod
    def remove(self, node: Node, instance: str) -> bool:
        """Detach the instance and drop its state; works from whatever is left after a crash
        (records without pins, pins without records). False if nothing of it was there."""

    @abstractmethod
    def deployments(self, node: Node) -> list[Deployment]:
        """Every instance this target holds on `node`, read back from the data plane and checked
        (Deployment.problem says what is wrong with a broken one)."""

    def deployment(self, node: Node, instance: str) -> Deployment | None:
        return next((d for d in self.deployments(node) if d.instance == instance), None)

    @abstractmethod
    def prune(self, node: Node, keep: set[str]) -> list[str]:
        """Remove everything innet owns on `node` that belongs to no instance in `keep`: records,
        pins, programs left attached by an interrupted deploy. Returns what it removed, as text."""

    @abstractmethod
    def write(self, node: Node, instance: str, entries: list[TableEntry]) -> None:
        """Insert or modify entries, all or none."""

    @abstractmethod
    def delete(self, node: Node, instance: str, entries: list[TableEntry]) -> int:
        """Delete entries by their match fields; returns how many existed."""

    @abstractmethod
    def read(self, node: Node, instance: str, table: str) -> list[TableEntry]:
        """Every entry of a logical table."""

    @abstractmethod
    def read_counters(self, node: Node, instance: str, table: str) -> list[EntryCounters]:
        """Per-entry packet and byte counters of a table."""

    @abstractmethod
    def read_stat(self, node: Node, instance: str, stat: str) -> dict[str, int]:
        """A `counters` statistic of the instance, by index name."""

    @abstractmethod
    def read_registers(self, node: Node, instance: str, stat: str) -> dict[str, np.ndarray]:
        """Every cell of a `registers` statistic, read in batches: one array per field, shaped as
        the catalog's `cells`. Fields of up to 64 bits come as uint64; wider ones (ipv6) as
        object arrays of Python ints; address fields hold the address as an integer."""

    @abstractmethod
    def write_registers(self, node: Node, instance: str, stat: str, index: int, values: dict[str, int]) -> None:
        """Set fields of one cell (flat, row-major index) of a `registers` statistic."""

    @abstractmethod
    def reset_registers(self, node: Node, instance: str, stat: str, start: int = 0, count: int | None = None) -> None:
        """Zero `count` cells (default: all) of a `registers` statistic from flat index `start`."""


class QueueingTarget(ABC):
    """Priority queues, for targets whose NFs can have them (catalog `capabilities: [queues]`)."""

    @abstractmethod
    def configure_queues(self, node: Node, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        """Serve the instance's levels in strict priority on `interface`'s egress (level 0 first),
        each level guaranteed `rate_bps` and borrowing up to `ceil_bps` (None: the link rate), the
        link at `link_rate_bps`. One QueueLevel per level of the NF's `levels` parameter, checked
        with queues.check_levels (QueueError). Replaces an earlier configuration; all or nothing.
        Returns the levels as configured. Removing the instance removes its queues."""

    @abstractmethod
    def queue_stats(self, node: Node, instance: str, interface: str) -> list[QueueStats]:
        """Per-level queue statistics on `interface` (sent packets/bytes, drops, backlog), level order."""
