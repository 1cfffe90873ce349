"""The NF catalog: each NF's logical tables, statistics and parameters (nfs/*.yaml).

The catalog is the contract between data-plane programs and the controller. Code above
the target layer speaks only in these terms: tables with match fields and actions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from controller.errors import CatalogError

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = REPO_ROOT / "nfs"

ADDRESS_TYPES = {"ipv4", "ipv6", "ip", "mac"}   # kept in network byte order by every target
MATCH_KINDS = {"exact", "lpm", "ternary"}
CAPABILITIES = {"queues"}   # what an NF offers beyond tables and statistics
CHAIN_PASS = "pass"   # programs.xdp.chain of an NF that hands every packet on (targets/chain.py)
# programs.xdp.behind: the program an NF runs behind a service function forwarder when its
# programs.xdp cannot run there (prio: a tc classifier on interfaces, an XDP chain hop behind)
BEHIND = "behind"
TARGETS = ("xdp", "bmv2")
# `ip` holds an IPv4 or IPv6 address in 128 bits, IPv4 as its IPv4-mapped IPv6 address.
VALUE_TYPES = {"ipv4": 32, "ipv6": 128, "ip": 128, "mac": 48, "port": 32, "u8": 8, "u16": 16, "u32": 32, "u64": 64}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    kind: str = "exact"  # for match fields
    below: int | str | None = None   # values must be under this: a number, or a parameter's name

    @property
    def width(self) -> int:
        return VALUE_TYPES[self.type]


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    match: tuple[Field, ...]
    actions: dict[str, tuple[Field, ...]]
    size_param: str | int
    counters: tuple[str, ...]
    xdp: dict = field(default_factory=dict)
    bmv2: dict = field(default_factory=dict)

    def action(self, name: str) -> tuple[Field, ...]:
        if name not in self.actions:
            raise CatalogError(f"table {self.name} has no action '{name}'",
                               hint=f"use one of: {', '.join(self.actions)}")
        return self.actions[name]


@dataclass(frozen=True)
class Parameter:
    name: str
    doc: str
    default: int
    min: int
    max: int
    xdp: dict = field(default_factory=dict)
    power_of_two: bool = False
    bmv2: dict = field(default_factory=dict)


STAT_KINDS = {"counters", "registers"}


@dataclass(frozen=True)
class Stat:
    """A statistic the NF exports.

    kind `counters`: named packet/byte counters (`index`), read summed over CPUs.
    kind `registers`: an array of cells, `cells` giving its shape (parameter names or
    integers, row-major), each cell holding `fields`; sketches and flow tables are these.
    """
    name: str
    doc: str
    kind: str
    index: tuple[str, ...] = ()
    cells: tuple[str | int, ...] = ()
    fields: tuple[Field, ...] = ()
    xdp: dict = field(default_factory=dict)
    bmv2: dict = field(default_factory=dict)

    def shape(self, params: dict[str, int]) -> tuple[int, ...]:
        return tuple(params[c] if isinstance(c, str) else c for c in self.cells)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise CatalogError(f"statistic {self.name} has no field '{name}'",
                           hint=f"fields: {', '.join(f.name for f in self.fields)}")


@dataclass(frozen=True)
class NFSpec:
    name: str
    description: str
    programs: dict[str, dict]
    parameters: dict[str, Parameter]
    tables: dict[str, Table]
    stats: dict[str, Stat]
    source: Path
    capabilities: frozenset[str] = frozenset()   # e.g. "queues": the instance serves priority queues

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise CatalogError(f"NF {self.name} has no table '{name}'", hint=f"tables: {', '.join(self.tables)}")
        return self.tables[name]

    def stat(self, name: str) -> Stat:
        if name not in self.stats:
            raise CatalogError(f"NF {self.name} has no statistic '{name}'", hint=f"statistics: {', '.join(self.stats)}")
        return self.stats[name]

    def resolve_parameters(self, given: dict | None) -> dict[str, int]:
        """Defaults filled in, every value checked against the catalog's bounds."""
        given = dict(given or {})
        unknown = set(given) - set(self.parameters)
        if unknown:
            raise CatalogError(f"NF {self.name} has no parameter {', '.join(sorted(unknown))}",
                               hint=f"parameters: {', '.join(self.parameters) or 'none'}")
        values = {}
        for p in self.parameters.values():
            v = given.get(p.name, p.default)
            if not isinstance(v, int) or isinstance(v, bool):
                raise CatalogError(f"{self.name}.{p.name} must be an integer, got {v!r}")
            if not p.min <= v <= p.max:
                raise CatalogError(f"{self.name}.{p.name}={v} is out of range [{p.min}, {p.max}]", hint=p.doc)
            if p.power_of_two and v & (v - 1):
                raise CatalogError(f"{self.name}.{p.name}={v} must be a power of two", hint=p.doc)
            values[p.name] = v
        return values

    def table_size(self, table: Table, params: dict[str, int]) -> int:
        return params[table.size_param] if isinstance(table.size_param, str) else table.size_param

    def xdp_program(self, behind: bool = False) -> dict | None:
        """The XDP target's program entry for an instance on interfaces (programs.xdp), or
        behind a service function forwarder: programs.xdp.behind if the NF has one, else the
        same program. Both share the tables and statistics (map names and layouts)."""
        program = self.programs.get("xdp")
        if program and behind and BEHIND in program:
            return program[BEHIND]
        return program

    @property
    def forwarder(self) -> bool:
        """Whether the NF is a service function forwarder (its XDP program has an NF-slots map):
        a chain's own plumbing, which runs NF instances, never one of its hops."""
        return "nf_slots_map" in self.programs.get("xdp", {})

    def chain_hop(self, target: str) -> bool:
        """Whether an instance can be a hop of a service chain on `target`: no forwarder, and on
        XDP its program behind a forwarder hands every packet back (`chain: pass` on the XDP
        hook); on BMv2 it is part of the composed pipeline (an nf_enable bit) and hands packets
        on, as its XDP program says (the router, which decides where they go, is no hop)."""
        if target not in TARGETS:
            raise CatalogError(f"unknown target '{target}'", hint=f"targets: {', '.join(TARGETS)}")
        if self.forwarder:
            return False
        if target == "xdp":
            program = self.xdp_program(behind=True)
            return program is not None and program.get("chain") == CHAIN_PASS and program.get("hook", "xdp") == "xdp"
        return "enable_mask" in self.programs.get("bmv2", {}) and ("xdp" not in self.programs or self.chain_hop("xdp"))


def _fields(items, where: str, is_match: bool) -> tuple[Field, ...]:
    out = []
    for i, item in enumerate(items or []):
        if not isinstance(item, dict) or "name" not in item or "type" not in item:
            raise CatalogError(f"{where}[{i}]: each field needs a name and a type, got {item!r}")
        if item["type"] not in VALUE_TYPES:
            raise CatalogError(f"{where}.{item['name']}: unknown type '{item['type']}'",
                               hint=f"types: {', '.join(VALUE_TYPES)}")
        kind = item.get("kind", "exact")
        if is_match and kind not in MATCH_KINDS:
            raise CatalogError(f"{where}.{item['name']}: unknown match kind '{kind}'",
                               hint=f"kinds: {', '.join(sorted(MATCH_KINDS))}")
        below = item.get("below")
        if below is not None and not isinstance(below, (int, str)):
            raise CatalogError(f"{where}.{item['name']}: 'below' is a number or a parameter's name, got {below!r}")
        out.append(Field(item["name"], item["type"], kind, below))
    return tuple(out)


def load_nf(path: Path) -> NFSpec:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or "name" not in doc:
        raise CatalogError(f"{path}: an NF entry is a mapping with at least a 'name'")
    name = doc["name"]
    params = {}
    for pname, p in (doc.get("parameters") or {}).items():
        params[pname] = Parameter(pname, p.get("doc", ""), p["default"], p.get("min", 0), p.get("max", 2**32 - 1),
                                  p.get("xdp", {}), p.get("power_of_two", False), p.get("bmv2", {}))
    tables = {}
    for tname, t in (doc.get("tables") or {}).items():
        where = f"{path.name}: table {tname}"
        if not t.get("match") or not t.get("actions"):
            raise CatalogError(f"{where}: a table needs match fields and at least one action")
        size = t.get("size", 1024)
        if isinstance(size, str) and size not in params:
            raise CatalogError(f"{where}: size names parameter '{size}', which is not declared")
        actions = {a: _fields(ps, f"{where} action {a}", False) for a, ps in t["actions"].items()}
        match = _fields(t["match"], f"{where} match", True)
        for f in (*match, *(f for fs in actions.values() for f in fs)):
            if isinstance(f.below, str) and f.below not in params:
                raise CatalogError(f"{where}: field {f.name} is bounded by parameter '{f.below}', which is not declared")
        tables[tname] = Table(tname, t.get("doc", ""), match, actions,
                              size, tuple(t.get("counters") or ()), t.get("xdp", {}), t.get("bmv2", {}))
    stats = {}
    for sname, st in (doc.get("stats") or {}).items():
        where = f"{path.name}: statistic {sname}"
        kind = st.get("kind", "counters")
        if kind not in STAT_KINDS:
            raise CatalogError(f"{where}: unknown kind '{kind}'", hint=f"kinds: {', '.join(sorted(STAT_KINDS))}")
        cells = tuple(st.get("cells") or ())
        for c in cells:
            if isinstance(c, str) and c not in params:
                raise CatalogError(f"{where}: cells name parameter '{c}', which is not declared")
        if kind == "registers" and not (cells and st.get("fields")):
            raise CatalogError(f"{where}: a registers statistic needs cells and fields")
        stats[sname] = Stat(sname, st.get("doc", ""), kind, tuple(st.get("index") or ()), cells,
                            _fields(st.get("fields"), f"{where} fields", False), st.get("xdp", {}), st.get("bmv2", {}))
    capabilities = frozenset(doc.get("capabilities") or ())
    if capabilities - CAPABILITIES:
        raise CatalogError(f"{path.name}: unknown capabilities {sorted(capabilities - CAPABILITIES)}",
                           hint=f"capabilities: {', '.join(sorted(CAPABILITIES))}")
    programs = doc.get("programs") or {}
    _check_behind_program(programs.get("xdp") or {}, path)
    return NFSpec(name, doc.get("description", "").strip(), programs, params, tables, stats, path, capabilities)


def _check_behind_program(program: dict, path: Path) -> None:
    """programs.xdp.behind, if given, is a complete XDP program that hands packets back."""
    if BEHIND not in program:
        return
    behind = program[BEHIND]
    if not isinstance(behind, dict) or "source" not in behind:
        raise CatalogError(f"{path.name}: programs.xdp.{BEHIND} is a program entry with at least a source, "
                           f"got {behind!r}")
    if behind.get("chain") != CHAIN_PASS or behind.get("hook", "xdp") != "xdp":
        raise CatalogError(f"{path.name}: programs.xdp.{BEHIND} runs behind a forwarder, so it is an XDP program "
                           f"with `chain: {CHAIN_PASS}`", hint="it hands every packet back through chain_pass "
                                                              "(ebpf/include/chain.h)")


# parsed entries by path, kept while the file's mtime and size stay the same: every controller
# call looks its NF up, and parsing the YAML each time cost more than the table write itself
_PARSED: dict[Path, tuple[tuple[int, int], NFSpec]] = {}


def load_nf_cached(path: Path) -> NFSpec:
    """load_nf, parsed again only when the file's mtime or size changes."""
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _PARSED.get(path)
    if hit is None or hit[0] != stamp:
        hit = _PARSED[path] = (stamp, load_nf(path))
    return hit[1]


def load_catalog(directory: Path = CATALOG_DIR) -> dict[str, NFSpec]:
    return {nf.name: nf for nf in (load_nf_cached(p) for p in sorted(directory.glob("*.yaml")))}


def service_nfs(directory: Path = CATALOG_DIR) -> dict[str, NFSpec]:
    """The NFs a service descriptor may name: all but forwarders (an NF with an NF-slots map is
    the chain's own plumbing, which placement puts on every chain router by itself)."""
    return {name: nf for name, nf in load_catalog(directory).items() if not nf.forwarder}


def get_nf(name: str, directory: Path = CATALOG_DIR) -> NFSpec:
    catalog = load_catalog(directory)
    if name not in catalog:
        raise CatalogError(f"unknown NF '{name}'", hint=f"the catalog ({directory}) has: {', '.join(catalog) or 'nothing'}")
    return catalog[name]
