"""The controller: nodes, their targets, and NF deployment and tables over them."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from controller.catalog import NFSpec, get_nf
from controller.errors import TopologyError
from controller.node import Node
from controller.queues import QueueLevel, QueueStats
from controller.tables import EntryCounters, TableEntry
from controller.targets import Deployment, Target, make_target

log = logging.getLogger("innet")
NODES_FILE = Path(os.environ.get("INNET_STATE", "/run/innet")) / "nodes.json"


class Controller:
    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self._targets: dict[str, Target] = {}

    def add_node(self, node: Node) -> Node:
        self.nodes[node.name] = node
        return node

    def save_nodes(self) -> None:
        """Publish the nodes so `innet` commands in other processes can reach them."""
        NODES_FILE.parent.mkdir(parents=True, exist_ok=True)
        NODES_FILE.write_text(json.dumps({n.name: vars(n) for n in self.nodes.values()}, indent=1))

    @classmethod
    def from_saved(cls) -> "Controller":
        ctl = cls()
        if NODES_FILE.exists():
            for spec in json.loads(NODES_FILE.read_text()).values():
                ctl.add_node(Node(**spec))
        return ctl

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            raise TopologyError(f"unknown node '{name}'", hint=f"nodes: {', '.join(sorted(self.nodes)) or 'none'}")
        return self.nodes[name]

    def target(self, node: Node) -> Target:
        if node.target not in self._targets:
            self._targets[node.target] = make_target(node.target)
        return self._targets[node.target]

    def _resolve(self, node: str, nf: str) -> tuple[Node, NFSpec, Target]:
        n = self.node(node)
        return n, get_nf(nf), self.target(n)

    def deploy(self, node: str, nf: str, interfaces: list[str] | None = None, params: dict | None = None) -> Deployment:
        n, spec, target = self._resolve(node, nf)
        if interfaces is None:
            interfaces = sorted(i for i in n.interfaces() if i != "lo")
        return target.deploy(n, spec, interfaces, params)

    def remove(self, node: str, nf: str) -> bool:
        n, spec, target = self._resolve(node, nf)
        return target.remove(n, spec)

    def deployment(self, node: str, nf: str) -> Deployment | None:
        n, spec, target = self._resolve(node, nf)
        return target.deployment(n, spec)

    def write(self, node: str, nf: str, entries: list[TableEntry]) -> None:
        n, spec, target = self._resolve(node, nf)
        target.write(n, spec, entries)

    def delete(self, node: str, nf: str, entries: list[TableEntry]) -> int:
        n, spec, target = self._resolve(node, nf)
        return target.delete(n, spec, entries)

    def read(self, node: str, nf: str, table: str) -> list[TableEntry]:
        n, spec, target = self._resolve(node, nf)
        return target.read(n, spec, table)

    def read_counters(self, node: str, nf: str, table: str) -> list[EntryCounters]:
        n, spec, target = self._resolve(node, nf)
        return target.read_counters(n, spec, table)

    def read_stat(self, node: str, nf: str, stat: str) -> dict[str, int]:
        n, spec, target = self._resolve(node, nf)
        return target.read_stat(n, spec, stat)

    def read_registers(self, node: str, nf: str, stat: str) -> dict:
        n, spec, target = self._resolve(node, nf)
        return target.read_registers(n, spec, stat)

    def write_registers(self, node: str, nf: str, stat: str, index: int, values: dict[str, int]) -> None:
        n, spec, target = self._resolve(node, nf)
        target.write_registers(n, spec, stat, index, values)

    def reset_registers(self, node: str, nf: str, stat: str, start: int = 0, count: int | None = None) -> None:
        n, spec, target = self._resolve(node, nf)
        target.reset_registers(n, spec, stat, start, count)

    def configure_queues(self, node: str, nf: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        n, spec, target = self._resolve(node, nf)
        return target.configure_queues(n, spec, interface, link_rate_bps, levels)

    def queue_stats(self, node: str, nf: str, interface: str) -> list[QueueStats]:
        n, spec, target = self._resolve(node, nf)
        return target.queue_stats(n, spec, interface)
