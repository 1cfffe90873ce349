"""The target interface: what every data plane (XDP, BMv2) offers the controller.

Code above this layer never asks which target it has; it deploys NFs from the catalog
and reads and writes their logical tables and statistics.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from controller.catalog import NFSpec
from controller.node import Node
from controller.queues import QueueLevel, QueueStats
from controller.tables import EntryCounters, TableEntry


@dataclass(frozen=True)
class Deployment:
    node: str
    nf: str
    target: str
    interfaces: tuple[str, ...]
    params: dict = field(hash=False)
    modes: dict = field(default_factory=dict, hash=False)   # interface -> how it runs there


class Target(ABC):
    kind: str

    @abstractmethod
    def deploy(self, node: Node, nf: NFSpec, interfaces: list[str], params: dict | None = None) -> Deployment:
        """Load the NF on `interfaces` of `node`; a repeat with the same arguments is a no-op."""

    @abstractmethod
    def remove(self, node: Node, nf: NFSpec) -> bool:
        """Detach the NF and drop its state; False if it was not deployed."""

    @abstractmethod
    def deployment(self, node: Node, nf: NFSpec) -> Deployment | None:
        """The NF's deployment on `node`, read back from the data plane, or None."""

    @abstractmethod
    def write(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> None:
        """Insert or modify entries, all or none."""

    @abstractmethod
    def delete(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> int:
        """Delete entries by their match fields; returns how many existed."""

    @abstractmethod
    def read(self, node: Node, nf: NFSpec, table: str) -> list[TableEntry]:
        """Every entry of a logical table."""

    @abstractmethod
    def read_counters(self, node: Node, nf: NFSpec, table: str) -> list[EntryCounters]:
        """Per-entry packet and byte counters of a table."""

    @abstractmethod
    def read_stat(self, node: Node, nf: NFSpec, stat: str) -> dict[str, int]:
        """A `counters` statistic of the NF, by index name."""

    @abstractmethod
    def read_registers(self, node: Node, nf: NFSpec, stat: str) -> dict[str, np.ndarray]:
        """Every cell of a `registers` statistic, read in batches: one array per field, shaped as
        the catalog's `cells`. Fields of up to 64 bits come as uint64; wider ones (ipv6) as
        object arrays of Python ints; address fields hold the address as an integer."""

    @abstractmethod
    def write_registers(self, node: Node, nf: NFSpec, stat: str, index: int, values: dict[str, int]) -> None:
        """Set fields of one cell (flat, row-major index) of a `registers` statistic."""

    @abstractmethod
    def reset_registers(self, node: Node, nf: NFSpec, stat: str, start: int = 0, count: int | None = None) -> None:
        """Zero `count` cells (default: all) of a `registers` statistic from flat index `start`."""

    @abstractmethod
    def configure_queues(self, node: Node, nf: NFSpec, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        """Serve the levels of the NF deployed on `node` in strict priority on `interface`'s egress
        (level 0 first), each level guaranteed `rate_bps` and borrowing up to `ceil_bps` (None: the
        link rate), the link at `link_rate_bps`. One QueueLevel per level of the NF's `levels`
        parameter, checked with queues.check_levels (QueueError). Replaces an earlier
        configuration; all or nothing. Returns the levels as configured. Removing the NF removes
        its queues."""

    @abstractmethod
    def queue_stats(self, node: Node, nf: NFSpec, interface: str) -> list[QueueStats]:
        """Per-level queue statistics on `interface` (sent packets/bytes, drops, backlog), level order."""
