"""Bmv2Target: NFs as P4 programs on BMv2 simple_switch_grpc switches.

A node's switch is started beside the node (controller.p4.switch: by the testbed, or by hand)
and found here by node name. Deploying an NF compiles its program with p4c (cached), pushes it
over P4Runtime (SetForwardingPipelineConfig, tagged with a cookie naming the build, so the
pipeline the switch really runs is read back rather than assumed) and records the deployment
in /run/innet/bmv2/<node>/nfs/<nf>.json. Table entries are P4Runtime entries written in one
batched WriteRequest, all or none; per-entry counters are direct counters read over P4Runtime;
registers go over BMv2's Thrift API, whole arrays per call (its P4Runtime server does not serve
registers). Logical `port` values (interface names) are the switch's port numbers.

Several NFs on one switch: a switch runs one pipeline. An NF's own program (programs.bmv2)
holds that NF alone, so a second NF with another program is refused while the first runs there.
When the composed pipeline exists (p4/innet.p4, controller.p4.composed), every NF that has a
bit in it runs there, enabled per ingress port by its nf_enable table; parameters are compile-time defines of that one program,
so an NF whose parameters would change the loaded program is refused while other NFs run there,
as XdpTarget refuses a resize.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from p4.v1 import p4runtime_pb2 as p4r

from controller.catalog import ADDRESS_TYPES, Field, NFSpec, Stat, Table
from controller.errors import CatalogError, EntryError, TargetError, TopologyError
from controller.node import Node
from controller.p4 import composed, switch
from controller.p4.build import P4Build, compile_p4
from controller.p4.p4info import P4Info, TableInfo, load as load_p4info
from controller.p4.runtime import P4RuntimeClient, WriteFailed
from controller.p4.thrift import MAX_VALUE, ThriftClient
from controller.queues import QueueLevel, QueueStats, check_levels
from controller.tables import EntryCounters, TableEntry, address_bytes, address_text, normalize
from controller.targets.base import Deployment, Target

log = logging.getLogger("innet.bmv2")

NOT_FOUND, ALREADY_EXISTS = 5, 6   # google.rpc.Code
# BMv2 limits a queue in packets/s, not bit/s: rates are converted at full-size frames, so small
# packets get less than their bit rate would allow
QUEUE_PACKET_BYTES = 1500
QUEUE_DEPTH_PACKETS = 64


@dataclass(frozen=True)
class _Pipeline:
    """A compiled program as loaded on a switch."""
    build: P4Build
    cookie: int

    @property
    def p4info(self) -> P4Info:
        return _p4info(self.build.p4info)

    @property
    def registers(self) -> dict[str, dict]:
        return _registers(self.build.json)


@lru_cache(maxsize=32)
def _p4info(path: Path) -> P4Info:
    return P4Info(load_p4info(path))


@lru_cache(maxsize=32)
def _registers(path: Path) -> dict[str, dict]:
    """The BMv2 JSON's register arrays by full name: size and bitwidth."""
    return {r["name"]: r for r in json.loads(path.read_text()).get("register_arrays", [])}


def _cookie(build: P4Build) -> int:
    h = hashlib.sha256(build.json.read_bytes() + build.p4info.read_bytes())
    return int.from_bytes(h.digest()[:8], "big") >> 1


class Bmv2Target(Target):
    kind = "bmv2"

    def __init__(self):
        self._sessions: dict[str, tuple[int, P4RuntimeClient]] = {}   # node -> (switch pid, client)

    # ---- the node's switch ------------------------------------------------------------
    def _switch(self, node: Node) -> switch.SwitchInfo:
        sw = switch.info(node.name)
        if sw is None:
            raise TargetError(f"{node.name} runs no BMv2 switch",
                              hint=f"bring the topology up with `target: bmv2` for {node.name}, or start one: "
                                   f"controller.p4.switch.start('{node.name}', [interfaces], netns=...)")
        switch.ensure_running(sw)
        return sw

    def _session(self, node: Node) -> P4RuntimeClient:
        sw = self._switch(node)
        cached = self._sessions.get(node.name)
        if cached and cached[0] == sw.pid:
            return cached[1]
        if cached:
            cached[1].close()
        client = P4RuntimeClient(sw.grpc_addr, sw.device_id, f"BMv2 switch of {node.name}")
        self._sessions[node.name] = (sw.pid, client)
        return client

    def _failed(self, node: Node, exc: TargetError) -> TargetError:
        """A transport failure, explained by the switch's log when the switch died."""
        cached = self._sessions.pop(node.name, None)
        if cached:
            cached[1].close()
        sw = switch.info(node.name)
        if sw is not None and not switch.is_running(sw):
            try:
                switch.ensure_running(sw)
            except TargetError as dead:
                return dead
        return exc

    def _thrift(self, node: Node) -> ThriftClient:
        sw = self._switch(node)
        return ThriftClient(sw.netns, sw.thrift_port, f"BMv2 switch of {node.name}")

    # ---- records ----------------------------------------------------------------------
    def _nf_file(self, node: Node, nf: NFSpec) -> Path:
        return switch.state_dir(node.name) / "nfs" / f"{nf.name}.json"

    def _records(self, node: Node) -> dict[str, dict]:
        directory = switch.state_dir(node.name) / "nfs"
        return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))} if directory.exists() else {}

    def _record(self, node: Node, nf: NFSpec) -> dict:
        record = self._records(node).get(nf.name)
        if record is None:
            raise TargetError(f"{nf.name} is not deployed on {node.name}",
                              hint=f"deploy it first: innet nf deploy {node.name} {nf.name}")
        return record

    def _pipeline(self, record: dict) -> _Pipeline:
        return _Pipeline(P4Build(Path(record["json"]), Path(record["p4info"])), record["cookie"])

    # ---- deployment -------------------------------------------------------------------
    def _build(self, nf: NFSpec, values: dict[str, int]) -> P4Build:
        program = nf.programs.get("bmv2")
        if not program:
            raise TargetError(f"NF {nf.name} has no BMv2 program", hint="deploy it on an xdp node instead")
        defines = {p.bmv2["define"]: values[p.name] for p in nf.parameters.values() if "define" in p.bmv2}
        return compile_p4(program["source"], defines)

    def deploy(self, node: Node, nf: NFSpec, interfaces: list[str], params: dict | None = None) -> Deployment:
        values = nf.resolve_parameters(params)
        if not interfaces:
            raise TopologyError(f"deploying {nf.name} on {node.name}: no interfaces given")
        sw = self._switch(node)
        for ifname in interfaces:
            if ifname not in sw.ports:
                raise TopologyError(f"the BMv2 switch of {node.name} has no port on '{ifname}'",
                                    hint=f"its ports: {', '.join(f'{i} ({p})' for i, p in sw.ports.items())}")
        records = self._records(node)
        old = records.pop(nf.name, None)
        if composed.runs(nf):
            defines = composed.defines({**{n: r["params"] for n, r in records.items()}, nf.name: values})
            build = compile_p4(composed.SOURCE, defines)
        else:
            build = self._build(nf, values)
        cookie = _cookie(build)
        if old and old["params"] != values:
            raise TargetError(f"{nf.name} runs on {node.name} with {old['params']}; changing to {values} means a new "
                              f"pipeline, which drops its tables and registers",
                              hint=f"remove it first (innet nf remove {node.name} {nf.name}), then deploy again")
        try:
            client = self._session(node)
            loaded = client.pipeline_cookie()
            fresh = loaded != cookie
            if fresh:
                running = [n for n, r in records.items() if r["cookie"] == loaded]
                if running:
                    raise TargetError(f"{node.name}'s switch runs {', '.join(running)} in another P4 program; "
                                      f"loading {nf.name}'s would replace it",
                                      hint=f"remove {', '.join(running)} first, or deploy {nf.name} on another node")
                log.info("loading %s's pipeline on %s", nf.name, node.name)
                client.set_pipeline(load_p4info(build.p4info), build.json.read_bytes(), cookie)
        except TargetError as exc:
            raise self._failed(node, exc) from None
        record = {"interfaces": list(interfaces), "params": values, "json": str(build.json),
                  "p4info": str(build.p4info), "cookie": cookie,
                  "enable_mask": nf.programs["bmv2"]["enable_mask"] if composed.runs(nf) else None}
        if record["enable_mask"]:   # a fresh pipeline's enable table is empty
            live = {} if fresh else {n: r for n, r in records.items() if r["cookie"] == cookie}
            self._enable(node, self._pipeline(record), {**live, **({nf.name: old} if old and not fresh else {})},
                         {**live, nf.name: record})
        if record != old:
            path = self._nf_file(node, nf)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))
        log.info("%s deployed on %s (ports %s)", nf.name, node.name,
                 ", ".join(f"{i}={sw.ports[i]}" for i in interfaces))
        return Deployment(node.name, nf.name, self.kind, tuple(interfaces), values,
                          {i: f"bmv2 port {sw.ports[i]}" for i in interfaces})

    def deployment(self, node: Node, nf: NFSpec) -> Deployment | None:
        record = self._records(node).get(nf.name)
        sw = switch.info(node.name)
        if record is None or sw is None or not switch.is_running(sw):
            return None
        try:
            if self._session(node).pipeline_cookie() != record["cookie"]:
                return None   # the switch was given another pipeline since
        except TargetError as exc:
            raise self._failed(node, exc) from None
        return Deployment(node.name, nf.name, self.kind, tuple(record["interfaces"]), record["params"],
                          {i: f"bmv2 port {sw.ports[i]}" for i in record["interfaces"]})

    def remove(self, node: Node, nf: NFSpec) -> bool:
        """Drop the NF's record, and its entries and registers while the switch still runs its program."""
        path = self._nf_file(node, nf)
        if not path.exists():
            return False
        if self.deployment(node, nf) is not None:
            records = self._records(node)
            mine = records.pop(nf.name)
            if mine.get("enable_mask"):
                self._enable(node, self._pipeline(mine), {**records, nf.name: mine}, records)
            for table in nf.tables:
                self.delete(node, nf, self.read(node, nf, table))
            for stat in nf.stats.values():
                if stat.kind == "registers":
                    self.reset_registers(node, nf, stat.name)
        path.unlink()
        if not any(path.parent.iterdir()):
            shutil.rmtree(path.parent, ignore_errors=True)
        log.info("%s removed from %s", nf.name, node.name)
        return True

    def _enable(self, node: Node, pipeline: _Pipeline, before: dict[str, dict], after: dict[str, dict]) -> None:
        """Bring the composed pipeline's nf_enable table from the NFs of `before` to those of
        `after` (NF -> deployment record): changed ports written in one batch, emptied ones deleted."""
        spec = composed.contract()
        table = spec.table(composed.ENABLE_TABLE)
        where = f"composed pipeline table {table.name}"
        try:
            info = pipeline.p4info.table(table.bmv2.get("table", table.name), where)
        except CatalogError as exc:
            raise TargetError(exc.message, hint=exc.hint) from None
        codec = _Codec(table, info, self._switch(node).ports, where)
        old, new = composed.masks(before), composed.masks(after)

        def entry(ifname: str, mask: int = 0) -> TableEntry:
            return normalize(table, TableEntry(table.name, {composed.ENABLE_MATCH: ifname}, composed.ENABLE_ACTION,
                                               {composed.ENABLE_PARAM: mask}), with_action=bool(mask))

        self._apply(node, [(e, codec.encode(e)) for e in (entry(i, m) for i, m in new.items() if old.get(i) != m)])
        gone = [_key_only(codec.encode(entry(i), with_action=False)) for i in old if i not in new]
        self._delete_keys(node, gone)

    # ---- tables -----------------------------------------------------------------------
    def _codec(self, node: Node, nf: NFSpec, table: Table) -> "_Codec":
        record = self._record(node, nf)
        pipeline = self._pipeline(record)
        where = f"{nf.name} table {table.name}"
        try:
            info = pipeline.p4info.table(table.bmv2.get("table", table.name), where)
        except CatalogError as exc:
            raise EntryError(exc.message, hint=exc.hint) from None
        return _Codec(table, info, self._switch(node).ports, where)

    def write(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> None:
        """One WriteRequest inserting every entry; entries that exist are then modified in a second
        one. If the switch refuses any update, what went in is taken back out before raising."""
        encoded = []
        codecs: dict[str, _Codec] = {}
        params = self._record(node, nf)["params"]
        for e in entries:
            table = nf.table(e.table)
            if table.name not in codecs:
                codecs[table.name] = self._codec(node, nf, table)
            e = normalize(table, e, nf_params=params)
            encoded.append((e, codecs[table.name].encode(e)))
        self._apply(node, encoded)

    def _apply(self, node: Node, encoded: list[tuple[TableEntry, p4r.TableEntry]]) -> None:
        if not encoded:
            return
        client = self._session(node)
        inserted: list[p4r.TableEntry] = []
        try:
            try:
                client.write([_update(p4r.Update.INSERT, te) for _, te in encoded])
                return
            except WriteFailed as failed:
                refused = {err.index: err for err in failed.errors}
            inserted = [te for i, (_, te) in enumerate(encoded) if i not in refused]
            hard = [err for err in refused.values() if err.code != ALREADY_EXISTS]
            if hard:
                raise self._refused(node, [(encoded[err.index][0], err) for err in hard])
            existing = [encoded[i] for i in sorted(refused)]
            before = [_without_counters(e) for e in client.read([p4r.Entity(table_entry=_key_only(te))
                                                                 for _, te in existing])]
            try:
                client.write([_update(p4r.Update.MODIFY, te) for _, te in existing])
            except WriteFailed as failed:   # put back the old actions (a no-op for those refused)
                _undo(client, [_update(p4r.Update.MODIFY, old) for old in before])
                raise self._refused(node, [(existing[err.index][0], err) for err in failed.errors])
        except BaseException as exc:
            _undo(client, [_update(p4r.Update.DELETE, _key_only(te)) for te in inserted])
            if isinstance(exc, TargetError):
                raise self._failed(node, exc) from None
            raise

    def _refused(self, node: Node, errors: list) -> EntryError:
        lines = "\n".join(f"    {e.table} {e.match} -> {e.action}: {err.code_name}: {err.message}" for e, err in errors)
        return EntryError(f"the BMv2 switch of {node.name} refused {len(errors)} entries (none was kept):\n{lines}",
                          hint="fix those entries; a full table needs a larger size parameter")

    def delete(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> int:
        keys = []
        for e in entries:
            table = nf.table(e.table)
            keys.append(_key_only(self._codec(node, nf, table).encode(normalize(table, e, with_action=False),
                                                                     with_action=False)))
        return self._delete_keys(node, keys)

    def _delete_keys(self, node: Node, keys: list[p4r.TableEntry]) -> int:
        if not keys:
            return 0
        client = self._session(node)
        try:
            client.write([_update(p4r.Update.DELETE, k) for k in keys])
            return len(keys)
        except WriteFailed as failed:
            hard = [err for err in failed.errors if err.code != NOT_FOUND]
            if hard:
                raise TargetError(f"the BMv2 switch of {node.name} refused to delete: "
                                  + "; ".join(f"{err.code_name}: {err.message}" for err in hard)) from None
            return len(keys) - len(failed.errors)

    def read(self, node: Node, nf: NFSpec, table: str) -> list[TableEntry]:
        return [c.entry for c in self.read_counters(node, nf, table)]

    def read_counters(self, node: Node, nf: NFSpec, table: str) -> list[EntryCounters]:
        codec = self._codec(node, nf, nf.table(table))
        query = p4r.TableEntry(table_id=codec.info.id)
        if codec.info.has_counters:
            query.counter_data.SetInParent()
        try:
            found = self._session(node).read([p4r.Entity(table_entry=query)])
        except TargetError as exc:
            raise self._failed(node, exc) from None
        return [codec.decode(e.table_entry) for e in found if not e.table_entry.is_default_action]

    # ---- statistics -------------------------------------------------------------------
    def read_stat(self, node: Node, nf: NFSpec, stat: str) -> dict[str, int]:
        st = nf.stat(stat)
        if st.kind != "counters":
            raise TargetError(f"{nf.name}.{stat} is a {st.kind} statistic", hint="read it with read_registers")
        record = self._record(node, nf)
        where = f"{nf.name} statistic {stat}"
        if "counter" in st.bmv2:
            counter = self._pipeline(record).p4info.counter(st.bmv2["counter"], where)
            query = p4r.CounterEntry(counter_id=counter.preamble.id)
            try:
                found = self._session(node).read([p4r.Entity(counter_entry=query)])
            except TargetError as exc:
                raise self._failed(node, exc) from None
            by_index = {e.counter_entry.index.index: e.counter_entry.data.packet_count for e in found}
            return {name: by_index.get(i, 0) for i, name in enumerate(st.index)}
        if "register" in st.bmv2:
            reg = self._register(record, st.bmv2["register"], where)
            thrift = self._thrift(node)
            try:
                cells = thrift.register_read_all(reg["name"], reg["bitwidth"])
            finally:
                thrift.close()
            return {name: cells[i] for i, name in enumerate(st.index)}
        raise CatalogError(f"{where}: the catalog gives no bmv2 counter or register for it",
                           hint="add bmv2: {counter: <P4 counter>} to the statistic")

    def _register(self, record: dict, name: str, where: str) -> dict:
        regs = self._pipeline(record).registers
        found = [r for full, r in regs.items() if full == name or full.endswith("." + name)]
        if len(found) != 1:
            raise TargetError(f"{where}: the P4 program has {'no' if not found else 'several'} register '{name}'",
                              hint=f"its registers: {', '.join(sorted(regs)) or 'none'}")
        return found[0]

    def _register_fields(self, node: Node, nf: NFSpec, stat: str) -> tuple[Stat, tuple[int, ...], dict]:
        """The statistic, its shape, and per field the registers holding it (most significant first)."""
        st = nf.stat(stat)
        if st.kind != "registers":
            raise TargetError(f"{nf.name}.{stat} is a {st.kind} statistic", hint="read it with read_stat")
        record = self._record(node, nf)
        shape = st.shape(record["params"])
        where = f"{nf.name} statistic {stat}"
        bindings = st.bmv2.get("registers") or {}
        fields = {}
        for f in st.fields:
            if f.name not in bindings:
                raise CatalogError(f"{where}: field {f.name} has no bmv2 register", hint="add it under bmv2.registers")
            names = bindings[f.name] if isinstance(bindings[f.name], list) else [bindings[f.name]]
            regs = [self._register(record, n, f"{where} field {f.name}") for n in names]
            for r in regs:
                if r["size"] != int(np.prod(shape)):
                    raise TargetError(f"{where}: register {r['name']} has {r['size']} cells, the catalog's shape "
                                      f"{shape} holds {int(np.prod(shape))}",
                                      hint="the program and the catalog disagree: fix one of them")
            if sum(r["bitwidth"] for r in regs) < f.width:
                raise TargetError(f"{where}: field {f.name} ({f.width} bits) does not fit register(s) "
                                  f"{', '.join(r['name'] for r in regs)}")
            fields[f.name] = (f, regs)
        return st, shape, fields

    def read_registers(self, node: Node, nf: NFSpec, stat: str) -> dict[str, np.ndarray]:
        _, shape, fields = self._register_fields(node, nf, stat)
        thrift = self._thrift(node)
        try:
            out = {}
            for name, (f, regs) in fields.items():
                value = [0] * int(np.prod(shape))
                for r in regs:
                    cells = thrift.register_read_all(r["name"], r["bitwidth"])
                    value = [(v << r["bitwidth"]) | c for v, c in zip(value, cells)]
                if f.width <= 64:
                    out[name] = np.array(value, dtype=np.uint64).reshape(shape)
                else:
                    out[name] = np.array(value, dtype=object).reshape(shape)
            return out
        finally:
            thrift.close()

    def write_registers(self, node: Node, nf: NFSpec, stat: str, index: int, values: dict[str, int]) -> None:
        _, shape, fields = self._register_fields(node, nf, stat)
        size = int(np.prod(shape))
        if not 0 <= index < size:
            raise EntryError(f"{nf.name}.{stat}: cell {index} is out of range [0, {size})")
        writes = []
        for name, value in values.items():
            if name not in fields:
                raise EntryError(f"{nf.name}.{stat} has no field '{name}'", hint=f"fields: {', '.join(fields)}")
            f, regs = fields[name]
            if not isinstance(value, int) or not 0 <= value < (1 << f.width):
                raise EntryError(f"{nf.name}.{stat}.{name}={value!r} is not an unsigned {f.width}-bit integer")
            for r in reversed(regs):
                part = value & ((1 << r["bitwidth"]) - 1)
                if part > MAX_VALUE:
                    raise EntryError(f"{nf.name}.{stat}.{name}={value}: BMv2's Thrift API carries at most "
                                     f"{MAX_VALUE} per register cell")
                writes.append((r["name"], part))
                value >>= r["bitwidth"]
        thrift = self._thrift(node)
        try:
            for reg, part in writes:
                thrift.register_write(reg, index, part)
        finally:
            thrift.close()

    def reset_registers(self, node: Node, nf: NFSpec, stat: str, start: int = 0, count: int | None = None) -> None:
        _, shape, fields = self._register_fields(node, nf, stat)
        size = int(np.prod(shape))
        count = size - start if count is None else count
        if start < 0 or count < 0 or start + count > size:
            raise EntryError(f"{nf.name}.{stat}: cells [{start}, {start + count}) are out of range [0, {size})")
        thrift = self._thrift(node)
        try:
            for _, regs in fields.values():
                for r in regs:
                    if count == size:
                        thrift.register_reset(r["name"])
                    elif count:
                        thrift.register_fill(r["name"], start, count)
        finally:
            thrift.close()

    # ---- priority queues --------------------------------------------------------------
    def configure_queues(self, node: Node, nf: NFSpec, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        """simple_switch's priority queues of the interface's port: a level's queue is limited to
        its ceiling (in packets/s, see QUEUE_PACKET_BYTES); the switch serves the highest
        `standard_metadata.priority` first, and the P4 program gives level L priority levels-1-L.
        BMv2 has no guaranteed rate (`rate_bps`): strict priority alone decides who goes first."""
        record = self._record(node, nf)
        where = f"{node.name}:{interface}"
        checked = check_levels(nf, record["params"], where, link_rate_bps, levels)
        sw = self._switch(node)
        if interface not in record["interfaces"]:
            raise TopologyError(f"{where}: {nf.name} does not run on {interface}",
                                hint=f"it runs on {', '.join(record['interfaces'])}")
        if len(checked) > sw.priority_queues:
            raise TargetError(f"{where}: {len(checked)} levels, the switch has {sw.priority_queues} priority queues",
                              hint="start the switch with more --priority-queues")
        thrift = self._thrift(node)
        try:
            for q in checked:
                priority = len(checked) - 1 - q.level
                thrift.set_queue_rate(sw.ports[interface], priority,
                                      max(1, q.ceil_bps // (8 * QUEUE_PACKET_BYTES)))
                thrift.set_queue_depth(sw.ports[interface], priority, QUEUE_DEPTH_PACKETS)
        finally:
            thrift.close()
        record.setdefault("queues", {})[interface] = {"link_rate_bps": link_rate_bps,
                                                      "levels": [[q.level, q.rate_bps, q.ceil_bps] for q in checked]}
        self._nf_file(node, nf).write_text(json.dumps(record, indent=1))
        return checked

    def queue_stats(self, node: Node, nf: NFSpec, interface: str) -> list[QueueStats]:
        raise TargetError(f"{node.name}:{interface}: BMv2 keeps no per-queue statistics (simple_switch's Thrift API "
                          f"sets queue rates and depths but reports no sent, dropped or queued counts)",
                          hint=f"read the per-level counters of {nf.name} instead (read_registers)")


def _update(kind, entry: p4r.TableEntry) -> p4r.Update:
    return p4r.Update(type=kind, entity=p4r.Entity(table_entry=entry))


def _key_only(entry: p4r.TableEntry) -> p4r.TableEntry:
    key = p4r.TableEntry(table_id=entry.table_id, priority=entry.priority)
    key.match.extend(entry.match)
    return key


def _without_counters(entity: p4r.Entity) -> p4r.TableEntry:
    entry = p4r.TableEntry()
    entry.CopyFrom(entity.table_entry)
    entry.ClearField("counter_data")
    return entry


def _undo(client: P4RuntimeClient, updates: list[p4r.Update]) -> None:
    """Best effort: the original error is what the caller reports."""
    try:
        client.write(updates)
    except (WriteFailed, TargetError) as exc:
        log.error("rolling back on the switch failed too: %s", exc)


class _Codec:
    """One logical table's entries as P4Runtime table entries, field by field against the p4info."""

    def __init__(self, table: Table, info: TableInfo, ports: dict[str, int], where: str):
        self.table, self.info, self.ports, self.where = table, info, ports, where
        self.port_names = {p: i for i, p in ports.items()}

    def _p4_field(self, found, f: Field, what: str):
        if found is None:
            raise EntryError(f"{self.where}: {what} '{f.name}' is not in the P4 program's p4info",
                             hint="the catalog and the program disagree: fix one of them")
        return found

    def _int(self, f: Field, value) -> int:
        if f.type in ADDRESS_TYPES:
            return int.from_bytes(address_bytes(f.type, value), "big")
        if f.type == "port":
            if value not in self.ports:
                raise EntryError(f"{self.where}: interface '{value}' is not a port of the switch",
                                 hint=f"its ports: {', '.join(self.ports)}")
            return self.ports[value]
        return value

    def _bytes(self, f: Field, value, bitwidth: int, what: str) -> bytes:
        number = self._int(f, value)
        if number >= 1 << bitwidth:
            raise EntryError(f"{self.where}: {what} {f.name}={value!r} does not fit the P4 field's {bitwidth} bits",
                             hint=f"the catalog says {f.type} ({f.width} bits); the catalog and the program disagree")
        return number.to_bytes((bitwidth + 7) // 8, "big")

    def _value(self, f: Field, raw: bytes, prefix_len: int | None = None):
        number = int.from_bytes(raw, "big")
        if f.type in ADDRESS_TYPES:
            text = address_text(f.type, number)
            return str(ipaddress.ip_network(f"{text}/{prefix_len}", strict=False)) if prefix_len is not None else text
        if f.type == "port":
            return self.port_names.get(number, f"port{number}")
        return number

    def encode(self, e: TableEntry, with_action: bool = True) -> p4r.TableEntry:
        entry = p4r.TableEntry(table_id=self.info.id)
        for f in self.table.match:
            mf = self._p4_field(self.info.match_field(f.name), f, "match field")
            raw = self._bytes(f, e.match[f.name], mf.bitwidth, "match")
            if f.kind == "lpm":
                plen = ipaddress.ip_network(e.match[f.name]).prefixlen
                if plen:   # P4Runtime: a /0 is a don't-care, left out
                    entry.match.add(field_id=mf.id, lpm=p4r.FieldMatch.LPM(value=raw, prefix_len=plen))
            elif f.kind == "ternary":
                entry.match.add(field_id=mf.id, ternary=p4r.FieldMatch.Ternary(value=raw, mask=b"\xff" * len(raw)))
            else:
                entry.match.add(field_id=mf.id, exact=p4r.FieldMatch.Exact(value=raw))
        if any(f.kind == "ternary" for f in self.table.match):
            entry.priority = 1
        if not with_action:
            return entry
        action = self.info.actions.get(e.action)
        if action is None:
            raise EntryError(f"{self.where}: action '{e.action}' is not in the P4 program's p4info",
                             hint=f"the table's P4 actions: {', '.join(self.info.actions)}")
        entry.action.action.action_id = action.preamble.id
        params = {p.name: p for p in action.params}
        for f in self.table.action(e.action):
            p = self._p4_field(params.get(f.name), f, f"action {e.action} parameter")
            entry.action.action.params.add(param_id=p.id, value=self._bytes(f, e.params[f.name], p.bitwidth, "parameter"))
        return entry

    def decode(self, entry: p4r.TableEntry) -> EntryCounters:
        by_id = {m.field_id: m for m in entry.match}
        match = {}
        for f in self.table.match:
            mf = self.info.match_field(f.name)
            m = by_id.get(mf.id)
            if f.kind == "lpm":
                match[f.name] = self._value(f, m.lpm.value if m else b"", m.lpm.prefix_len if m else 0)
            else:
                match[f.name] = self._value(f, m.ternary.value if f.kind == "ternary" else m.exact.value)
        action = self.info.action_name(entry.action.action.action_id) or f"action{entry.action.action.action_id}"
        values = {p.param_id: p.value for p in entry.action.action.params}
        ids = {p.name: p.id for p in self.info.actions[action].params} if action in self.info.actions else {}
        params = {f.name: self._value(f, values.get(ids.get(f.name), b""))
                  for f in self.table.actions.get(action, ())}
        return EntryCounters(TableEntry(self.table.name, match, action, params),
                             entry.counter_data.packet_count, entry.counter_data.byte_count)
