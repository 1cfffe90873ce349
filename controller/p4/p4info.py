"""A compiled program's p4info, looked up by the catalog's names.

p4c names objects by their control path ("MyIngress.router.ipv4_routes") and gives each a
shortest unique alias ("ipv4_routes"). A catalog name matches an object whose full name or
alias is that name, or whose full name ends with ".<name>"; a `bmv2: {table: ...}` binding
gives the exact name when that is ambiguous.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from p4.config.v1 import p4info_pb2

from controller.errors import CatalogError


def load(path: Path) -> p4info_pb2.P4Info:
    info = p4info_pb2.P4Info()
    text_format.Parse(Path(path).read_text(), info)
    return info


def _matches(preamble, name: str) -> bool:
    return name in (preamble.name, preamble.alias) or preamble.name.endswith("." + name)


def find(objects, name: str, what: str, where: str):
    """The one object of `objects` (tables, counters, ...) called `name`."""
    found = [o for o in objects if _matches(o.preamble, name)]
    exact = [o for o in found if o.preamble.name == name]
    if len(exact) == 1 or len(found) == 1:
        return (exact or found)[0]
    names = sorted(o.preamble.name for o in objects)
    if not found:
        raise CatalogError(f"{where}: the P4 program has no {what} '{name}'",
                           hint=f"its {what}s: {', '.join(names) or 'none'}")
    raise CatalogError(f"{where}: '{name}' names several {what}s: {', '.join(o.preamble.name for o in found)}",
                       hint="give the full name in the catalog's bmv2 binding")


@dataclass(frozen=True)
class TableInfo:
    table: p4info_pb2.Table
    actions: dict[str, p4info_pb2.Action]     # catalog-style short name -> action
    has_counters: bool

    @property
    def id(self) -> int:
        return self.table.preamble.id

    def match_field(self, name: str):
        for f in self.table.match_fields:
            if f.name == name:
                return f
        return None

    def action_name(self, action_id: int) -> str | None:
        return next((n for n, a in self.actions.items() if a.preamble.id == action_id), None)


class P4Info:
    def __init__(self, info: p4info_pb2.P4Info):
        self.info = info
        self._actions = {a.preamble.id: a for a in info.actions}
        self._direct_counters = {c.preamble.id for c in info.direct_counters}

    def table(self, name: str, where: str) -> TableInfo:
        t = find(self.info.tables, name, "table", where)
        actions = {}
        for ref in t.action_refs:
            a = self._actions[ref.id]
            actions[a.preamble.name.rsplit(".", 1)[-1]] = a
        return TableInfo(t, actions, any(r in self._direct_counters for r in t.direct_resource_ids))

    def counter(self, name: str, where: str):
        return find(self.info.counters, name, "counter", where)
