"""The desired-state store: one SQLite database per scope (controller.scope).

What should be deployed lives here: the testbed and its nodes, NF instances with their
parameters, the table entries and routes the controller owns, and a log of operations
(intent recorded before the data plane is touched, marked done after). The path allocator's
closed loop (controller.te.loop) keeps its per-flow path overrides and its decision log here too. The data plane's
own bookkeeping (XdpTarget's deployment records and counter slots, Bmv2Target's records)
lives in the same database, in its own tables, so it changes in the same transactions.

Writers are serialised by the scope's writer lock (controller.service takes it) and by
SQLite's own locking (WAL, BEGIN IMMEDIATE); readers never wait for writers.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from controller.errors import InnetError

SCHEMA_VERSION = 2
# MIGRATIONS[v - 1] takes a database of version v to v + 1 (tables added later need none: the
# schema's CREATE TABLE IF NOT EXISTS makes them)
MIGRATIONS = ["ALTER TABLE instances ADD COLUMN behind TEXT"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS testbed (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    topology TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL, doc TEXT);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, netns TEXT, role TEXT NOT NULL, target TEXT NOT NULL,
    kernel_slow_path INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    node TEXT NOT NULL, id TEXT NOT NULL, nf TEXT NOT NULL, target TEXT NOT NULL,
    interfaces TEXT NOT NULL, params TEXT NOT NULL, source TEXT, behind TEXT, created REAL NOT NULL,
    PRIMARY KEY (node, id));
CREATE TABLE IF NOT EXISTS entries (
    node TEXT NOT NULL, instance TEXT NOT NULL, tbl TEXT NOT NULL, match TEXT NOT NULL,
    action TEXT NOT NULL, params TEXT NOT NULL,
    PRIMARY KEY (node, instance, tbl, match));
CREATE TABLE IF NOT EXISTS routes (
    node TEXT NOT NULL, prefix TEXT NOT NULL, instance TEXT NOT NULL, interface TEXT,
    mac TEXT, via TEXT, local INTEGER NOT NULL,
    PRIMARY KEY (node, prefix));
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY, model TEXT NOT NULL, plan TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, node TEXT, subject TEXT,
    detail TEXT, state TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,
    finished REAL, error TEXT);
CREATE TABLE IF NOT EXISTS path_overrides (
    flow TEXT PRIMARY KEY, path TEXT NOT NULL, entries TEXT NOT NULL, retiring TEXT NOT NULL,
    since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS te_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, summary TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dp_records (
    node TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (node, key));
CREATE TABLE IF NOT EXISTS dp_slots (
    node TEXT NOT NULL, instance TEXT NOT NULL, map TEXT NOT NULL, holder TEXT NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (node, instance, map, holder), UNIQUE (node, instance, map, slot));
"""
PENDING, DONE, FAILED, RECOVERED = "pending", "done", "failed", "recovered"


class StoreError(InnetError):
    """The desired-state database cannot be opened or is not innet's."""


@dataclass(frozen=True)
class NodeRow:
    name: str
    netns: str | None
    role: str
    target: str
    kernel_slow_path: bool


@dataclass(frozen=True)
class InstanceRow:
    node: str
    id: str
    nf: str
    target: str
    interfaces: tuple[str, ...]
    params: dict
    source: str | None   # the catalog file, when the NF is not from innet's own catalog
    behind: tuple[str, int] | None = None   # runs behind this forwarder instance, in this slot (a chain NF)


@dataclass(frozen=True)
class RouteRow:
    node: str
    prefix: str
    instance: str
    interface: str | None
    mac: str | None
    via: str | None
    local: bool


@dataclass(frozen=True)
class PathOverrideRow:
    flow: str                 # the flow's key (controller.te.live.flow_key)
    path: tuple[str, ...]     # the nodes it crosses, source host first
    entries: list[dict]       # the flow_routes entries that pin it: {"node", "match", "params"}
    retiring: list[dict]      # entries of the path it left, until they are removed
    since: float


@dataclass(frozen=True)
class Decision:
    id: int
    at: float
    summary: str
    detail: dict


@dataclass(frozen=True)
class Operation:
    id: int
    kind: str
    node: str | None
    subject: str | None
    detail: dict
    state: str
    pid: int
    started: float
    finished: float | None
    error: str | None


class Store:
    """One scope's database. Each thread gets its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            self.db.executescript(SCHEMA)   # executescript commits on its own: outside a transaction
            with self.write() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {version}, this innet reads up to {SCHEMA_VERSION}",
                                     hint="use a matching innet, or move the file away to start afresh")
                if version:   # a database an earlier innet made: bring it up to date
                    for step in MIGRATIONS[version - 1:]:
                        db.execute(step)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open the desired-state database {self.path}: {exc}",
                             hint="check the path (INNET_HOME) and its permissions; a corrupt file can be moved "
                                  "away, then `innet reconcile` rebuilds the data plane from nothing") from None

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            self._local.depth = 0
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one): committed on success, rolled back on error."""
        db = self.db
        if self._local.depth:
            self._local.depth += 1
            try:
                yield db
            finally:
                self._local.depth -= 1
            return
        db.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._local.depth = 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- testbed and nodes --------------------------------------------------------------
    def testbed(self) -> dict | None:
        row = self.db.execute("SELECT topology, pid, started, doc FROM testbed").fetchone()
        return None if row is None else {"topology": row[0], "pid": row[1], "started": row[2],
                                         "doc": json.loads(row[3]) if row[3] else None}

    def set_testbed(self, topology: str, pid: int, doc: dict | None) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO testbed VALUES (1, ?, ?, ?, ?)",
                       (topology, pid, time.time(), json.dumps(doc) if doc is not None else None))

    def clear_testbed(self) -> None:
        with self.write() as db:
            db.execute("DELETE FROM testbed")

    def nodes(self) -> list[NodeRow]:
        return [NodeRow(r[0], r[1], r[2], r[3], bool(r[4]))
                for r in self.db.execute("SELECT name, netns, role, target, kernel_slow_path FROM nodes ORDER BY name")]

    def put_node(self, node: NodeRow) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?)",
                       (node.name, node.netns, node.role, node.target, int(node.kernel_slow_path)))

    def delete_node(self, name: str) -> None:
        """The node and everything desired on it."""
        with self.write() as db:
            for table in ("instances", "entries", "routes", "dp_records", "dp_slots"):
                db.execute(f"DELETE FROM {table} WHERE node = ?", (name,))
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))

    # ---- NF instances ---------------------------------------------------------------------
    def instances(self, node: str | None = None) -> list[InstanceRow]:
        sql = "SELECT node, id, nf, target, interfaces, params, source, behind FROM instances"
        rows = self.db.execute(sql + (" WHERE node = ?" if node else "") + " ORDER BY node, created, id",
                               (node,) if node else ())
        return [InstanceRow(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), json.loads(r[5]), r[6],
                            tuple(json.loads(r[7])) if r[7] else None) for r in rows]

    def instance(self, node: str, instance: str) -> InstanceRow | None:
        return next((i for i in self.instances(node) if i.id == instance), None)

    def put_instance(self, inst: InstanceRow) -> None:
        with self.write() as db:
            created = db.execute("SELECT created FROM instances WHERE node = ? AND id = ?",
                                 (inst.node, inst.id)).fetchone()
            db.execute("INSERT OR REPLACE INTO instances (node, id, nf, target, interfaces, params, source, behind, "
                       "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",   # named: a migrated table orders them otherwise
                       (inst.node, inst.id, inst.nf, inst.target, json.dumps(list(inst.interfaces)),
                        json.dumps(inst.params, sort_keys=True), inst.source,
                        json.dumps(list(inst.behind)) if inst.behind else None,
                        created[0] if created else time.time()))

    def delete_instance(self, node: str, instance: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM instances WHERE node = ? AND id = ?", (node, instance))
            db.execute("DELETE FROM entries WHERE node = ? AND instance = ?", (node, instance))
            db.execute("DELETE FROM routes WHERE node = ? AND instance = ?", (node, instance))

    # ---- table entries the controller owns --------------------------------------------------
    def entries(self, node: str, instance: str) -> list[tuple[str, dict, str, dict]]:
        rows = self.db.execute("SELECT tbl, match, action, params FROM entries WHERE node = ? AND instance = ?",
                               (node, instance))
        return [(r[0], json.loads(r[1]), r[2], json.loads(r[3])) for r in rows]

    def put_entries(self, node: str, instance: str, entries: Iterable[tuple[str, dict, str, dict]]) -> None:
        with self.write() as db:
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                           ((node, instance, t, json.dumps(m, sort_keys=True), a, json.dumps(p, sort_keys=True))
                            for t, m, a, p in entries))

    def delete_entries(self, node: str, instance: str, keys: Iterable[tuple[str, dict]]) -> None:
        with self.write() as db:
            db.executemany("DELETE FROM entries WHERE node = ? AND instance = ? AND tbl = ? AND match = ?",
                           ((node, instance, t, json.dumps(m, sort_keys=True)) for t, m in keys))

    # ---- routes ---------------------------------------------------------------------------
    def routes(self, node: str) -> list[RouteRow]:
        rows = self.db.execute("SELECT node, prefix, instance, interface, mac, via, local FROM routes "
                               "WHERE node = ?", (node,))
        return [RouteRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def routes_for(self, node: str, prefixes: list[str]) -> list[RouteRow]:
        """The node's routes for these prefixes (those that exist)."""
        if len(prefixes) > 500:   # a big batch: one scan beats thousands of lookups
            wanted = set(prefixes)
            return [r for r in self.routes(node) if r.prefix in wanted]
        rows = self.db.execute("SELECT node, prefix, instance, interface, mac, via, local FROM routes WHERE node = ? "
                               f"AND prefix IN ({', '.join('?' * len(prefixes))})", (node, *prefixes))
        return [RouteRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def routes_via(self, node: str, next_hops: set[tuple[str, str]]) -> list[RouteRow]:
        """The node's forwarding routes whose next hop (interface, gateway or on-link host) is one of these."""
        gateways = sorted({address for _, address in next_hops})
        if not gateways:
            return []
        marks = ", ".join("?" * len(gateways))
        rows = self.db.execute("SELECT node, prefix, instance, interface, mac, via, local FROM routes WHERE node = ? "
                               f"AND local = 0 AND (via IN ({marks}) OR (via IS NULL AND "
                               f"substr(prefix, 1, instr(prefix, '/') - 1) IN ({marks})))",
                               (node, *gateways, *gateways))
        found = [RouteRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]
        return [r for r in found if (r.interface, r.via or r.prefix.split("/")[0]) in next_hops]

    def put_routes(self, routes: Iterable[RouteRow]) -> None:
        with self.write() as db:
            db.executemany("INSERT OR REPLACE INTO routes VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ((r.node, r.prefix, r.instance, r.interface, r.mac, r.via, int(r.local)) for r in routes))

    def delete_routes(self, node: str, prefixes: Iterable[str]) -> None:
        with self.write() as db:
            db.executemany("DELETE FROM routes WHERE node = ? AND prefix = ?", ((node, p) for p in prefixes))

    # ---- service chains ------------------------------------------------------------------------
    def services(self) -> dict[str, tuple[dict, dict]]:
        """name -> (the service's model, its plan), as controller.chains wrote them."""
        rows = self.db.execute("SELECT name, model, plan FROM services ORDER BY name")
        return {r[0]: (json.loads(r[1]), json.loads(r[2])) for r in rows}

    def put_service(self, name: str, model: dict, plan: dict) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO services VALUES (?, ?, ?, ?)",
                       (name, json.dumps(model, sort_keys=True), json.dumps(plan, sort_keys=True), time.time()))

    def delete_service(self, name: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM services WHERE name = ?", (name,))

    def path_overrides(self) -> dict[str, PathOverrideRow]:
        rows = self.db.execute("SELECT flow, path, entries, retiring, since FROM path_overrides ORDER BY since")
        return {r[0]: PathOverrideRow(r[0], tuple(json.loads(r[1])), json.loads(r[2]), json.loads(r[3]), r[4])
                for r in rows}

    def put_path_override(self, row: PathOverrideRow) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO path_overrides VALUES (?, ?, ?, ?, ?)",
                       (row.flow, json.dumps(row.path), json.dumps(row.entries, sort_keys=True),
                        json.dumps(row.retiring, sort_keys=True), row.since))

    def delete_path_override(self, flow: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM path_overrides WHERE flow = ?", (flow,))

    def log_decision(self, summary: str, detail: dict, keep: int = 1000) -> None:
        """Append to the path allocator's decision log, which keeps its latest `keep` entries."""
        with self.write() as db:
            db.execute("INSERT INTO te_decisions (at, summary, detail) VALUES (?, ?, ?)",
                       (time.time(), summary, json.dumps(detail, sort_keys=True)))
            db.execute("DELETE FROM te_decisions WHERE id <= (SELECT MAX(id) FROM te_decisions) - ?", (keep,))

    def decisions(self, limit: int = 20) -> list[Decision]:
        """The latest decisions, newest first."""
        rows = self.db.execute("SELECT id, at, summary, detail FROM te_decisions ORDER BY id DESC LIMIT ?", (limit,))
        return [Decision(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def clear_paths(self) -> None:
        """Every path override and decision: they live on a testbed, and go with it."""
        with self.write() as db:
            db.execute("DELETE FROM path_overrides")
            db.execute("DELETE FROM te_decisions")

    def clear_services(self) -> None:
        """Every service: they live on a testbed, and go with it."""
        with self.write() as db:
            db.execute("DELETE FROM services")

    # ---- the operation log ------------------------------------------------------------------
    def begin(self, kind: str, node: str | None, subject: str | None, detail: dict | None = None) -> int:
        with self.write() as db:
            cur = db.execute("INSERT INTO operations (kind, node, subject, detail, state, pid, started) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (kind, node, subject, json.dumps(detail or {}), PENDING, os.getpid(), time.time()))
            return cur.lastrowid

    def finish(self, op: int, state: str = DONE, error: str | None = None) -> None:
        with self.write() as db:
            db.execute("UPDATE operations SET state = ?, finished = ?, error = ? WHERE id = ?",
                       (state, time.time(), error, op))

    def operations(self, state: str | None = None, limit: int = 50) -> list[Operation]:
        sql = ("SELECT id, kind, node, subject, detail, state, pid, started, finished, error FROM operations"
               + (" WHERE state = ?" if state else "") + " ORDER BY id DESC LIMIT ?")
        rows = self.db.execute(sql, ((state, limit) if state else (limit,)))
        return [Operation(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9]) for r in rows]


class DataplaneRecords:
    """The data plane's own bookkeeping, per node: JSON records by key, and counter slots.

    A counter slot is held by one entry (a `holder` string) of one NF instance's counters map;
    the UNIQUE constraint makes it impossible for two entries to share a slot, whatever
    processes write at once."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, node: str, key: str) -> dict | None:
        row = self.store.db.execute("SELECT value FROM dp_records WHERE node = ? AND key = ?", (node, key)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, node: str, key: str, value: dict) -> None:
        with self.store.write() as db:
            db.execute("INSERT OR REPLACE INTO dp_records VALUES (?, ?, ?)", (node, key, json.dumps(value)))

    def delete(self, node: str, key: str) -> None:
        with self.store.write() as db:
            db.execute("DELETE FROM dp_records WHERE node = ? AND key = ?", (node, key))

    def items(self, node: str, prefix: str = "") -> dict[str, dict]:
        rows = self.store.db.execute("SELECT key, value FROM dp_records WHERE node = ? AND key LIKE ? ESCAPE '\\' "
                                     "ORDER BY key", (node, _like_prefix(prefix)))
        return {k: json.loads(v) for k, v in rows}

    def nodes(self) -> list[str]:
        rows = self.store.db.execute("SELECT DISTINCT node FROM dp_records UNION SELECT DISTINCT node FROM dp_slots")
        return sorted(r[0] for r in rows)

    # ---- counter slots ------------------------------------------------------------------------
    def slots(self, node: str, instance: str, counters_map: str) -> dict[str, int]:
        rows = self.store.db.execute("SELECT holder, slot FROM dp_slots WHERE node = ? AND instance = ? AND map = ?",
                                     (node, instance, counters_map))
        return dict(rows.fetchall())

    def claim_slots(self, node: str, instance: str, counters_map: str, holders: list[str],
                    capacity: int) -> dict[str, int]:
        """A slot for each holder: the one it has, else the lowest free. Raises SlotsFull (nothing
        claimed) when fewer than needed are free."""
        with self.store.write() as db:
            have = self.slots(node, instance, counters_map)
            wanted = [h for h in dict.fromkeys(holders) if h not in have]
            if wanted:
                used = set(have.values())
                free = (s for s in range(capacity) if s not in used)
                fresh = list(zip(wanted, free))
                if len(fresh) < len(wanted):
                    raise SlotsFull(capacity - len(used), len(wanted))
                db.executemany("INSERT INTO dp_slots VALUES (?, ?, ?, ?, ?)",
                               ((node, instance, counters_map, h, s) for h, s in fresh))
                have.update(fresh)
            return {h: have[h] for h in holders}

    def release_slots(self, node: str, instance: str, counters_map: str, holders: list[str]) -> dict[str, int]:
        """Drop the holders' slots; returns the slots they held."""
        with self.store.write() as db:
            have = self.slots(node, instance, counters_map)
            gone = {h: have[h] for h in holders if h in have}
            db.executemany("DELETE FROM dp_slots WHERE node = ? AND instance = ? AND map = ? AND holder = ?",
                           ((node, instance, counters_map, h) for h in gone))
            return gone

    def drop_slots(self, node: str, instance: str) -> None:
        with self.store.write() as db:
            db.execute("DELETE FROM dp_slots WHERE node = ? AND instance = ?", (node, instance))


class SlotsFull(InnetError):
    def __init__(self, free: int, wanted: int):
        super().__init__(f"{wanted} new entries need counter slots, {free} are free",
                         hint="delete entries first, or raise the NF's size parameter (it keeps every entry)")
        self.free, self.wanted = free, wanted


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
