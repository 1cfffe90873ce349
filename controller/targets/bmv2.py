"""Bmv2Target: NF instances as P4 programs on BMv2 simple_switch_grpc switches.

A node's switch is started beside the node (controller.p4.switch: by the testbed, or by hand)
and found here by scope and node name. Deploying an instance compiles its program with p4c
(cached), pushes it over P4Runtime (SetForwardingPipelineConfig, tagged with a cookie naming
the build, so the pipeline the switch really runs is read back rather than assumed) and
records the instance in the scope's database (DataplaneRecords, key bmv2/<instance>). Table
entries are P4Runtime entries written in batched WriteRequests, all or none; per-entry
counters are direct counters read over P4Runtime; registers go over BMv2's Thrift API, whole
arrays per call (its P4Runtime server does not serve registers). Logical `port` values
(interface names) are the switch's port numbers.

A switch runs one pipeline, holding one copy of each NF type's tables, so a switch runs at
most one instance of an NF type. An NF's own program (programs.bmv2) holds that NF alone:
another NF with another program is refused while the first runs there. When the composed
pipeline exists (p4/innet.p4, controller.p4.composed), every NF that has a bit in it runs
there, enabled per ingress port by its nf_enable table. Parameters are compile-time defines
of that one program, so deploying with other parameters builds and pushes a new pipeline,
which empties every table and register of the switch: the deployment lists every instance so
emptied (Deployment.cleared) for the caller to refill. A composed build the switch runs is kept
while it serves every deployed instance (records hold their build's defines), so an instance
that leaves does not make the next deploy load a build with its NF's defaults.
"""
from __future__ import annotations

import gc
import hashlib
import ipaddress
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from p4.v1 import p4runtime_pb2 as p4r

from controller.catalog import ADDRESS_TYPES, CATALOG_DIR, Field, NFSpec, Stat, Table, get_nf, load_nf_cached
from controller.errors import CatalogError, EntryError, TargetError, TopologyError
from controller.node import Node
from controller.p4 import composed, switch
from controller.p4.build import P4Build, compile_p4
from controller.p4.p4info import P4Info, TableInfo, load as load_p4info
from controller.p4.runtime import P4RuntimeClient, WriteFailed
from controller.p4.thrift import MAX_VALUE, ThriftClient
from controller.queues import QueueLevel, QueueStats, check_levels
from controller.scope import Scope
from controller.store import DataplaneRecords
from controller.tables import EntryCounters, TableEntry, address_bytes, address_text, normalize
from controller.targets.base import Deployment, QueueingTarget, Target

log = logging.getLogger("innet.bmv2")

RECORD_PREFIX = "bmv2/"   # DataplaneRecords key of an instance: bmv2/<instance>
NOT_FOUND, ALREADY_EXISTS = 5, 6   # google.rpc.Code
# BMv2 limits a queue in packets/s, not bit/s: rates are converted at full-size frames, so small
# packets get less than their bit rate would allow
QUEUE_PACKET_BYTES = 1500
QUEUE_DEPTH_PACKETS = 64   # simple_switch's default depth, put back when an instance's queues go
UNLIMITED_RATE = 0         # simple_switch: a queue rate of 0 packets/s is no limit
# The table an NF names as programs.bmv2.port_macs: the MAC of each port it runs on, written here
# (not by the NF's user) whenever the NF is deployed, as XdpTarget fills an XDP NF's port_macs.
PORT_MACS = Table("port_macs", "the MAC of each port", (Field("port", "port"),), {"port_mac": (Field("mac", "mac"),)},
                  64, ())
# The table an NF names as programs.bmv2.own_ipv4: the node's own IPv4 addresses, which are the
# /32 `local` routes of its ipv4_routes; written here beside them, in the same batch.
OWN_IPV4 = Table("own_ipv4", "the node's own IPv4 addresses", (Field("addr", "ipv4"),), {"own_address": ()}, 256, ())
ROUTES_V4 = "ipv4_routes"
# The table a forwarder names as programs.bmv2.nf_slots_table: which NF of the composed pipeline
# runs in each of its slots (the NF's enable bit), written here as instances are deployed behind it.
NF_SLOTS = Table("sfc_nfs", "the NF in each slot of a forwarder", (Field("slot", "u32"),),
                 {"run_nf": (Field("nfs", "u8"),)}, 16, ())


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


def _nf_of(record: dict) -> NFSpec:
    """The NF spec of a deployed instance, from its record: catalog NFs by name, others by file."""
    source = Path(record["source"])
    return get_nf(record["nf"]) if source.parent == CATALOG_DIR else load_nf_cached(source)


def _pipeline_of(record: dict) -> _Pipeline:
    return _Pipeline(P4Build(Path(record["json"]), Path(record["p4info"])), record["cookie"])


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a batch of entries is built, sent or read back.
    protobuf's pure-Python runtime (3.20 on Python 3.11) makes about ten objects per entry, and
    the collections they trigger scan all of them again and again: with it on, 10,000 routes were
    written 3-4 times slower. Whatever cycles appear meanwhile are collected once it is back on."""
    if not gc.isenabled():   # nested, or the caller turned it off
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _label(instance: str, nf_name: str) -> str:
    """How messages name an instance: its id, and its NF when that differs."""
    return instance if instance == nf_name else f"{instance} ({nf_name})"


@dataclass(frozen=True)
class _Instance:
    """A deployed instance as its record says: what every call after deploy works from."""
    id: str
    record: dict
    nf: NFSpec

    @property
    def label(self) -> str:
        return _label(self.id, self.nf.name)

    @property
    def params(self) -> dict[str, int]:
        return self.record["params"]

    @property
    def pipeline(self) -> _Pipeline:
        return _pipeline_of(self.record)


class Bmv2Target(Target, QueueingTarget):
    kind = "bmv2"

    def __init__(self, scope: Scope, records: DataplaneRecords):
        super().__init__(scope, records)
        self._sessions: dict[str, tuple[int, P4RuntimeClient]] = {}   # node -> (switch pid, client)

    # ---- the node's switch ------------------------------------------------------------
    def _switch(self, node: Node) -> switch.SwitchInfo:
        sw = switch.info(self.scope, node.name)
        if sw is None:
            raise TargetError(f"{node.name} runs no BMv2 switch",
                              hint=f"bring the topology up with `target: bmv2` for {node.name}, or start one: "
                                   f"controller.p4.switch.start(scope, '{node.name}', [interfaces], netns=...)")
        switch.ensure_running(sw)
        return sw

    def _running_switch(self, node: Node) -> switch.SwitchInfo | None:
        """The node's switch if it is up, else None: for what must work without it."""
        sw = switch.info(self.scope, node.name)
        return sw if sw is not None and switch.is_running(sw) else None

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
        sw = switch.info(self.scope, node.name)
        if sw is not None and not switch.is_running(sw):
            try:
                switch.ensure_running(sw)
            except TargetError as dead:
                return dead
        return exc

    def _loaded_cookie(self, node: Node) -> int | None:
        try:
            return self._session(node).pipeline_cookie()
        except TargetError as exc:
            raise self._failed(node, exc) from None

    def _thrift(self, node: Node) -> ThriftClient:
        sw = self._switch(node)
        return ThriftClient(sw.netns, sw.thrift_port, f"BMv2 switch of {node.name}")

    # ---- records ----------------------------------------------------------------------
    def _records(self, node: Node) -> dict[str, dict]:
        """instance -> deployment record, for every instance recorded on the node."""
        return {key[len(RECORD_PREFIX):]: record
                for key, record in self.records.items(node.name, RECORD_PREFIX).items()}

    def _put(self, node: Node, instance: str, record: dict) -> None:
        self.records.put(node.name, RECORD_PREFIX + instance, record)

    def _instance(self, node: Node, instance: str) -> _Instance:
        record = self.records.get(node.name, RECORD_PREFIX + instance)
        if record is None:
            raise TargetError(f"{instance} is not deployed on {node.name}",
                              hint=f"deploy it first: innet nf deploy {node.name} {instance}")
        return _Instance(instance, record, _nf_of(record))

    # ---- deployment -------------------------------------------------------------------
    def deploy(self, node: Node, instance: str, nf: NFSpec, interfaces: list[str],
               params: dict | None = None, behind: tuple[str, int] | None = None) -> Deployment:
        values = nf.resolve_parameters(params)
        label = _label(instance, nf.name)
        if behind is not None:
            behind = self._check_behind(node, instance, nf, interfaces, behind)
        elif not interfaces:
            raise TopologyError(f"deploying {label} on {node.name}: no interfaces given")
        sw = self._switch(node)
        for ifname in interfaces:
            if ifname not in sw.ports:
                raise TopologyError(f"the BMv2 switch of {node.name} has no port on '{ifname}'",
                                    hint=f"its ports: {', '.join(f'{i} ({p})' for i, p in sw.ports.items())}")
        others = self._records(node)
        old = others.pop(instance, None)
        self._check_one_per_type(node, instance, nf, old, others)
        # the composed pipeline carries every other composed instance of the switch into the new build
        carried = {i: r for i, r in others.items() if r["enable_mask"]} if composed.runs(nf) else {}
        loaded = self._loaded_cookie(node)
        build, defines = self._build(nf, values, carried, loaded)
        pipeline = _Pipeline(build, _cookie(build))
        record = {"nf": nf.name, "source": str(nf.source), "interfaces": list(interfaces), "params": values,
                  "json": str(build.json), "p4info": str(build.p4info), "cookie": pipeline.cookie,
                  "defines": defines,
                  "enable_mask": nf.programs["bmv2"]["enable_mask"] if composed.runs(nf) else None,
                  "behind": behind}
        if old and old.get("queues"):   # queues are the switch's, not the pipeline's: they stay
            record["queues"] = {i: q for i, q in old["queues"].items() if i in interfaces}
        cleared: tuple[str, ...] = ()
        if loaded != pipeline.cookie:
            self._check_replaceable(node, label, loaded, others, carried)
            self._push(node, label, pipeline)
            cleared = tuple(sorted({*carried, *([instance] if old else [])}))
        with self.records.store.write():   # the switch runs the new build now: so does every record of it
            for i, r in carried.items():
                moved = {**r, "json": record["json"], "p4info": record["p4info"], "cookie": pipeline.cookie,
                         "defines": defines}
                if moved != r:
                    self._put(node, i, moved)
            if record != old:
                self._put(node, instance, record)
        if record["enable_mask"]:
            self._sync_enable(node, pipeline, {**carried, instance: record})
        self._fill_port_macs(node, pipeline, {**carried, instance: record})
        self._fill_nf_slots(node, pipeline, {**carried, instance: record})
        log.info("%s deployed on %s (%s)%s", label, node.name,
                 f"behind {behind[0]} in slot {behind[1]}" if behind else
                 "ports " + ", ".join(f"{i}={sw.ports[i]}" for i in interfaces),
                 f"; a new pipeline emptied {', '.join(cleared)}" if cleared else "")
        return Deployment(node.name, instance, nf.name, self.kind, tuple(interfaces), values,
                          {i: f"bmv2 port {sw.ports[i]}" for i in interfaces}, cleared=cleared,
                          behind=tuple(behind) if behind else None)

    def _check_behind(self, node: Node, instance: str, nf: NFSpec, interfaces: list[str],
                      behind: tuple[str, int]) -> list:
        """`behind` as recorded ([forwarder, slot]), once the forwarder runs on the node, the slot is
        one of its own and free, and the NF is one the composed pipeline runs behind it."""
        forwarder, slot = behind
        label = _label(instance, nf.name)
        if interfaces:
            raise TopologyError(f"{label} runs behind {forwarder} on {node.name}: it takes no interfaces",
                                hint="deploy it with no interfaces, or not behind the forwarder")
        if not composed.runs(nf) or not nf.chain_hop(self.kind):
            raise TargetError(f"{nf.name} cannot run behind a forwarder on BMv2: only the composed pipeline's NFs "
                              f"that hand every packet on (cms, precision, prio) do",
                              hint="run it on its interfaces instead")
        fwd = self.records.get(node.name, RECORD_PREFIX + forwarder)
        table = _nf_of(fwd).programs["bmv2"].get("nf_slots_table") if fwd else None
        if table is None:
            raise TargetError(f"{forwarder} on {node.name} " + (f"runs {fwd['nf']}, which has no NF slots (catalog "
                              f"programs.bmv2.nf_slots_table)" if fwd else "is not deployed"),
                              hint=f"deploy a service function forwarder (sff) as {forwarder} first")
        size = fwd["params"]["max_nfs"]
        if type(slot) is not int or not 0 <= slot < size:
            raise TargetError(f"slot {slot!r} of {forwarder} on {node.name} does not exist: it has {size} NF slots",
                              hint=f"use 0..{size - 1}, or redeploy {forwarder} with more (sff: max_nfs)")
        holder = next((i for i, r in self._records(node).items()
                       if i != instance and r.get("behind") == [forwarder, slot]), None)
        if holder:
            raise TargetError(f"slot {slot} of {forwarder} on {node.name} holds {holder}",
                              hint=f"use a free slot, or remove {holder} first")
        return [forwarder, slot]

    def _nf_slots_codec(self, node: Node, pipeline: _Pipeline, forwarder: dict) -> "_Codec":
        p4_table = _nf_of(forwarder).programs["bmv2"]["nf_slots_table"]
        where = f"{forwarder['nf']} table {p4_table}"
        try:
            return _Codec(NF_SLOTS, pipeline.p4info.table(p4_table, where), self._switch(node).ports, where)
        except CatalogError as exc:
            raise TargetError(exc.message, hint=exc.hint) from None

    def _slot_entry(self, record: dict) -> TableEntry:
        return normalize(NF_SLOTS, TableEntry(NF_SLOTS.name, {"slot": record["behind"][1]}, "run_nf",
                                              {"nfs": record["enable_mask"]}))

    def _fill_nf_slots(self, node: Node, pipeline: _Pipeline, instances: dict[str, dict]) -> None:
        """Name in each forwarder's slot table the NF of every instance that runs behind it, one
        batch per forwarder."""
        behind: dict[str, list[dict]] = {}
        for record in instances.values():
            if record.get("behind"):
                behind.setdefault(record["behind"][0], []).append(record)
        for forwarder, records in behind.items():
            codec = self._nf_slots_codec(node, pipeline, self.records.get(node.name, RECORD_PREFIX + forwarder))
            self._apply(node, [(e, codec.insertion(e)) for e in map(self._slot_entry, records)])

    def _fill_port_macs(self, node: Node, pipeline: _Pipeline, instances: dict[str, dict]) -> None:
        """Write the MAC of each port of the instances whose NF names a port_macs table."""
        links = None
        for instance, record in instances.items():
            p4_table = _nf_of(record).programs["bmv2"].get("port_macs")
            if not p4_table:
                continue
            links = links or node.interfaces()
            where = f"{_label(instance, record['nf'])} table {p4_table}"
            try:
                codec = _Codec(PORT_MACS, pipeline.p4info.table(p4_table, where), self._switch(node).ports, where)
            except CatalogError as exc:
                raise TargetError(exc.message, hint=exc.hint) from None
            entries = [normalize(PORT_MACS, TableEntry(PORT_MACS.name, {"port": i}, "port_mac",
                                                       {"mac": links[i]["mac"]})) for i in record["interfaces"]]
            self._apply(node, [(e, codec.insertion(e)) for e in entries])

    @staticmethod
    def _check_one_per_type(node: Node, instance: str, nf: NFSpec, old: dict | None,
                            others: dict[str, dict]) -> None:
        """A switch's pipeline holds one copy of an NF type's tables: one instance of it per switch."""
        if old and old["nf"] != nf.name:
            raise TargetError(f"instance '{instance}' on {node.name} runs {old['nf']}, not {nf.name}",
                              hint=f"remove it first, or give the {nf.name} instance another id")
        same = sorted(i for i, r in others.items() if r["nf"] == nf.name)
        if same:
            holds = "the composed pipeline holds" if composed.runs(nf) else "a switch runs one pipeline, with"
            raise TargetError(f"bmv2 switch of {node.name} already runs {nf.name} as instance '{same[0]}'; "
                              f"{holds} one instance per NF type",
                              hint=f"deploy {instance} on another node, or on an XDP node (which runs several "
                                   f"instances of one NF), or remove '{same[0]}' first")

    def _build(self, nf: NFSpec, values: dict[str, int], carried: dict[str, dict],
               loaded: int | None) -> tuple[P4Build, dict[str, int]]:
        """The program the switch must run, and its defines. A composed build the switch runs
        already is kept while it serves every instance (composed.fits): loading another one
        would empty every table of the switch for nothing."""
        program = nf.programs.get("bmv2")
        if not program:
            raise TargetError(f"NF {nf.name} has no BMv2 program", hint="deploy it on an xdp node instead")
        if composed.runs(nf):
            deployed = {**{r["nf"]: r["params"] for r in carried.values()}, nf.name: values}
            defines = composed.defines(deployed)   # also: instances that disagree on a shared define
            running = next((r for r in carried.values() if r["cookie"] == loaded and r.get("defines") is not None
                            and Path(r["json"]).exists() and Path(r["p4info"]).exists()), None)
            if running and composed.fits(running["defines"], deployed):
                return P4Build(Path(running["json"]), Path(running["p4info"])), running["defines"]
            return compile_p4(composed.SOURCE, defines), defines
        defines = {p.bmv2["define"]: values[p.name] for p in nf.parameters.values() if "define" in p.bmv2}
        return compile_p4(program["source"], defines), defines

    @staticmethod
    def _check_replaceable(node: Node, label: str, loaded: int | None, others: dict[str, dict],
                           carried: dict[str, dict]) -> None:
        """A new pipeline may empty the instances it carries over, not drop others that run."""
        dropped = sorted(_label(i, r["nf"]) for i, r in others.items() if r["cookie"] == loaded and i not in carried)
        if dropped:
            raise TargetError(f"{node.name}'s switch runs {', '.join(dropped)} in another P4 program; "
                              f"loading {label}'s would replace it",
                              hint=f"remove {', '.join(dropped)} first, or deploy {label} on another node")

    def _push(self, node: Node, label: str, pipeline: _Pipeline) -> None:
        log.info("loading %s's pipeline on %s", label, node.name)
        try:
            self._session(node).set_pipeline(load_p4info(pipeline.build.p4info), pipeline.build.json.read_bytes(),
                                             pipeline.cookie)
        except TargetError as exc:
            raise self._failed(node, exc) from None

    def deployments(self, node: Node) -> list[Deployment]:
        records = self._records(node)
        if not records:
            return []
        sw = self._running_switch(node)
        loaded, enabled, problem = None, {}, None
        if sw is None:
            recorded = switch.info(self.scope, node.name)
            problem = (f"the BMv2 switch of {node.name} (pid {recorded.pid}) is not running" if recorded
                       else f"{node.name} runs no BMv2 switch")
        else:
            try:
                loaded = self._loaded_cookie(node)
                composed_record = next((r for r in records.values() if r["enable_mask"] and r["cookie"] == loaded), None)
                if composed_record:
                    enabled = self._enabled(node, _pipeline_of(composed_record))
            except TargetError as exc:
                problem = exc.message
        ports = sw.ports if sw else {}
        return [Deployment(node.name, i, r["nf"], self.kind, tuple(r["interfaces"]), r["params"],
                           {f: f"bmv2 port {ports[f]}" for f in r["interfaces"] if f in ports},
                           problem or self._problem(r, loaded, enabled, records),
                           behind=tuple(r["behind"]) if r.get("behind") else None)
                for i, r in records.items()]

    @staticmethod
    def _problem(record: dict, loaded: int | None, enabled: dict[str, int], records: dict[str, dict]) -> str | None:
        """What is wrong with a recorded instance on a running switch, or None."""
        if loaded is None:
            return "the switch has no pipeline loaded (it was restarted?)"
        if record["cookie"] != loaded:
            return "the switch runs another P4 pipeline than the one this instance was deployed in"
        if record.get("behind") and record["behind"][0] not in records:
            return f"its forwarder {record['behind'][0]} is not deployed: no packet reaches it"
        mask = record["enable_mask"]
        off = [i for i in record["interfaces"] if mask and not enabled.get(i, 0) & mask]
        if off:
            return f"the composed pipeline's {composed.ENABLE_TABLE} does not enable it on {', '.join(off)}"
        return None

    def remove(self, node: Node, instance: str) -> bool:
        """Drop the instance's record, and its enable bits, entries, registers and queues while
        the switch still runs its pipeline; a dead or missing switch needs nothing but the record."""
        record = self.records.get(node.name, RECORD_PREFIX + instance)
        if record is None:
            return False
        if self._running_switch(node) is not None and self._loaded_cookie(node) == record["cookie"]:
            self._clear_on_switch(node, instance, record)
        self.records.delete(node.name, RECORD_PREFIX + instance)
        log.info("%s removed from %s", _label(instance, record["nf"]), node.name)
        return True

    def _clear_on_switch(self, node: Node, instance: str, record: dict) -> None:
        pipeline = _pipeline_of(record)
        if record["enable_mask"]:
            staying = {i: r for i, r in self._records(node).items()
                       if i != instance and r["enable_mask"] and r["cookie"] == record["cookie"]}
            self._sync_enable(node, pipeline, staying)
        try:
            nf = _nf_of(record)
        except (CatalogError, OSError) as exc:   # its catalog file went: its tables cannot be named
            log.warning("%s: cannot load %s's catalog entry (%s); its entries stay on the switch",
                        node.name, instance, exc)
            return
        forwarder = self.records.get(node.name, RECORD_PREFIX + record["behind"][0]) if record.get("behind") else None
        if forwarder and forwarder["cookie"] == record["cookie"]:
            codec = self._nf_slots_codec(node, pipeline, forwarder)
            self._delete_keys(node, [codec.deletion(self._slot_entry(record))])
        inst = _Instance(instance, record, nf)
        for table in nf.tables.values():
            codec = self._codec(node, inst, table)
            self._delete_keys(node, [_deletion(e) for e in self._read_raw(node, codec)])
        for stat in nf.stats.values():
            if stat.kind == "registers":
                self.reset_registers(node, instance, stat.name)
        self._unset_queues(node, record)

    def prune(self, node: Node, keep: set[str]) -> list[str]:
        removed = []
        for instance, record in self._records(node).items():
            if instance not in keep:
                self.remove(node, instance)
                removed.append(f"BMv2 instance {_label(instance, record['nf'])} on {node.name}")
        return removed

    def _enable_codec(self, node: Node, pipeline: _Pipeline) -> "_Codec":
        table = composed.contract().table(composed.ENABLE_TABLE)
        where = f"composed pipeline table {table.name}"
        try:
            info = pipeline.p4info.table(table.bmv2.get("table", table.name), where)
        except CatalogError as exc:
            raise TargetError(exc.message, hint=exc.hint) from None
        return _Codec(table, info, self._switch(node).ports, where)

    def _enable_entries(self, node: Node, codec: "_Codec") -> dict[str, tuple[int, p4r.TableEntry]]:
        """interface -> (the NF bits nf_enable gives it on the switch now, that entry)."""
        out = {}
        for raw in self._read_raw(node, codec):
            entry = codec.decode(raw).entry
            out[entry.match[composed.ENABLE_MATCH]] = (entry.params.get(composed.ENABLE_PARAM, 0), raw)
        return out

    def _enabled(self, node: Node, pipeline: _Pipeline) -> dict[str, int]:
        return {i: mask for i, (mask, _) in self._enable_entries(node, self._enable_codec(node, pipeline)).items()}

    def _sync_enable(self, node: Node, pipeline: _Pipeline, instances: dict[str, dict]) -> None:
        """Bring the switch's nf_enable table to the ports and bits of `instances` (instance ->
        record). It is read back first, not assumed, so what a restart or an interrupted call
        left is put right too: changed ports written in one batch, ports no instance uses deleted."""
        codec = self._enable_codec(node, pipeline)
        table = codec.table
        want = composed.masks(instances)
        have = self._enable_entries(node, codec)

        def entry(ifname: str, mask: int) -> TableEntry:
            return normalize(table, TableEntry(table.name, {composed.ENABLE_MATCH: ifname}, composed.ENABLE_ACTION,
                                               {composed.ENABLE_PARAM: mask}))

        changed = [entry(i, m) for i, m in want.items() if have.get(i, (None,))[0] != m]
        self._apply(node, [(e, codec.insertion(e)) for e in changed])
        self._delete_keys(node, [_deletion(raw) for i, (_, raw) in have.items() if i not in want])

    # ---- tables -----------------------------------------------------------------------
    def _codec(self, node: Node, inst: _Instance, table: Table) -> "_Codec":
        where = f"{inst.label} table {table.name}"
        try:
            info = inst.pipeline.p4info.table(table.bmv2.get("table", table.name), where)
        except CatalogError as exc:
            raise EntryError(exc.message, hint=exc.hint) from None
        return _Codec(table, info, self._switch(node).ports, where)

    def write(self, node: Node, instance: str, entries: list[TableEntry]) -> None:
        """Insert every entry; entries that exist are then modified. If the switch refuses any
        update, what went in is taken back out before raising."""
        inst = self._instance(node, instance)
        encoded = []
        codecs: dict[str, _Codec] = {}
        with _collector_paused():
            for e in entries:
                table = inst.nf.table(e.table)
                if table.name not in codecs:
                    codecs[table.name] = self._codec(node, inst, table)
                e = normalize(table, e, nf_params=inst.params)
                encoded.append((e, codecs[table.name].insertion(e)))
            written = [e for e, _ in encoded]
            mirror = self._own_ipv4(node, inst, written)
            self._apply(node, encoded + [(e, mirror.insertion(e)) for e in _own_addresses(written, local=True)]
                        if mirror else encoded)
            if mirror:   # a /32 route that is no longer `local` takes its address out of own_ipv4
                self._delete_keys(node, [mirror.deletion(e) for e in _own_addresses(written, local=False)])

    def _apply(self, node: Node, encoded: list[tuple[TableEntry, p4r.Update]]) -> None:
        """Write the INSERT updates; those refused as existing go again as MODIFY."""
        if not encoded:
            return
        client = self._session(node)
        inserted: list[p4r.TableEntry] = []
        try:
            try:
                client.write([u for _, u in encoded])
                return
            except WriteFailed as failed:
                refused = {err.index: err for err in failed.errors}
            inserted = [u.entity.table_entry for i, (_, u) in enumerate(encoded) if i not in refused]
            hard = [err for err in refused.values() if err.code != ALREADY_EXISTS]
            if hard:
                raise self._refused(node, [(encoded[err.index][0], err) for err in hard])
            existing = [encoded[i] for i in sorted(refused)]
            before = [_without_counters(e) for e in client.read([p4r.Entity(table_entry=_key_only(u.entity.table_entry))
                                                                 for _, u in existing])]
            for _, u in existing:
                u.type = p4r.Update.MODIFY
            try:
                client.write([u for _, u in existing])
            except WriteFailed as failed:   # put back the old actions (a no-op for those refused)
                _undo(client, [p4r.Update(type=p4r.Update.MODIFY, entity=p4r.Entity(table_entry=old)) for old in before])
                raise self._refused(node, [(existing[err.index][0], err) for err in failed.errors])
        except BaseException as exc:
            _undo(client, [_deletion(te) for te in inserted])
            if isinstance(exc, TargetError):
                raise self._failed(node, exc) from None
            raise

    def _refused(self, node: Node, errors: list) -> EntryError:
        lines = "\n".join(f"    {e.table} {e.match} -> {e.action}: {err.code_name}: {err.message}" for e, err in errors)
        return EntryError(f"the BMv2 switch of {node.name} refused {len(errors)} entries (none was kept):\n{lines}",
                          hint="fix those entries; a full table needs a larger size parameter")

    def delete(self, node: Node, instance: str, entries: list[TableEntry]) -> int:
        inst = self._instance(node, instance)
        codecs: dict[str, _Codec] = {}
        deletions = []
        with _collector_paused():
            for e in entries:
                table = inst.nf.table(e.table)
                if table.name not in codecs:
                    codecs[table.name] = self._codec(node, inst, table)
                deletions.append(codecs[table.name].deletion(normalize(table, e, with_action=False)))
            removed = self._delete_keys(node, deletions)
            mirror = self._own_ipv4(node, inst, entries)
            if mirror:
                self._delete_keys(node, [mirror.deletion(e) for e in _own_addresses(entries, local=None)])
            return removed

    def _own_ipv4(self, node: Node, inst: _Instance, entries: list[TableEntry]) -> "_Codec | None":
        """The codec of the NF's own_ipv4 table, when it has one and `entries` touch ipv4_routes."""
        p4_table = inst.nf.programs["bmv2"].get("own_ipv4")
        if not p4_table or not any(e.table == ROUTES_V4 for e in entries):
            return None
        where = f"{inst.label} table {p4_table}"
        try:
            return _Codec(OWN_IPV4, inst.pipeline.p4info.table(p4_table, where), self._switch(node).ports, where)
        except CatalogError as exc:
            raise TargetError(exc.message, hint=exc.hint) from None

    def _delete_keys(self, node: Node, deletions: list[p4r.Update]) -> int:
        """Write the DELETE updates; returns how many entries existed."""
        if not deletions:
            return 0
        client = self._session(node)
        try:
            client.write(deletions)
            return len(deletions)
        except WriteFailed as failed:
            hard = [err for err in failed.errors if err.code != NOT_FOUND]
            if hard:
                raise TargetError(f"the BMv2 switch of {node.name} refused to delete: "
                                  + "; ".join(f"{err.code_name}: {err.message}" for err in hard)) from None
            return len(deletions) - len(failed.errors)
        except TargetError as exc:
            raise self._failed(node, exc) from None

    def _read_raw(self, node: Node, codec: "_Codec") -> list[p4r.TableEntry]:
        """Every entry of the codec's table as the switch holds it, with counters if it has them."""
        query = p4r.TableEntry(table_id=codec.info.id)
        if codec.info.has_counters:
            query.counter_data.SetInParent()
        try:
            found = self._session(node).read([p4r.Entity(table_entry=query)])
        except TargetError as exc:
            raise self._failed(node, exc) from None
        return [e.table_entry for e in found if not e.table_entry.is_default_action]

    def read(self, node: Node, instance: str, table: str) -> list[TableEntry]:
        return [c.entry for c in self.read_counters(node, instance, table)]

    def read_counters(self, node: Node, instance: str, table: str) -> list[EntryCounters]:
        inst = self._instance(node, instance)
        codec = self._codec(node, inst, inst.nf.table(table))
        with _collector_paused():
            return [codec.decode(e) for e in self._read_raw(node, codec)]

    # ---- statistics -------------------------------------------------------------------
    def read_stat(self, node: Node, instance: str, stat: str) -> dict[str, int]:
        inst = self._instance(node, instance)
        st = inst.nf.stat(stat)
        if st.kind != "counters":
            raise TargetError(f"{inst.label}.{stat} is a {st.kind} statistic", hint="read it with read_registers")
        where = f"{inst.label} statistic {stat}"
        if "counter" in st.bmv2:
            counter = inst.pipeline.p4info.counter(st.bmv2["counter"], where)
            query = p4r.CounterEntry(counter_id=counter.preamble.id)
            try:
                found = self._session(node).read([p4r.Entity(counter_entry=query)])
            except TargetError as exc:
                raise self._failed(node, exc) from None
            by_index = {e.counter_entry.index.index: e.counter_entry.data.packet_count for e in found}
            return {name: by_index.get(i, 0) for i, name in enumerate(st.index)}
        if "register" in st.bmv2:
            reg = self._register(inst, st.bmv2["register"], where)
            thrift = self._thrift(node)
            try:
                cells = thrift.register_read_all(reg["name"], reg["bitwidth"])
            finally:
                thrift.close()
            return {name: cells[i] for i, name in enumerate(st.index)}
        raise CatalogError(f"{where}: the catalog gives no bmv2 counter or register for it",
                           hint="add bmv2: {counter: <P4 counter>} to the statistic")

    @staticmethod
    def _register(inst: _Instance, name: str, where: str) -> dict:
        regs = inst.pipeline.registers
        found = [r for full, r in regs.items() if full == name or full.endswith("." + name)]
        if len(found) != 1:
            raise TargetError(f"{where}: the P4 program has {'no' if not found else 'several'} register '{name}'",
                              hint=f"its registers: {', '.join(sorted(regs)) or 'none'}")
        return found[0]

    def _register_fields(self, inst: _Instance, stat: str) -> tuple[Stat, tuple[int, ...], dict]:
        """The statistic, its shape, and per field the registers holding it (most significant first)."""
        st = inst.nf.stat(stat)
        if st.kind != "registers":
            raise TargetError(f"{inst.label}.{stat} is a {st.kind} statistic", hint="read it with read_stat")
        shape = st.shape(inst.params)
        where = f"{inst.label} statistic {stat}"
        bindings = st.bmv2.get("registers") or {}
        fields = {}
        for f in st.fields:
            if f.name not in bindings:
                raise CatalogError(f"{where}: field {f.name} has no bmv2 register", hint="add it under bmv2.registers")
            names = bindings[f.name] if isinstance(bindings[f.name], list) else [bindings[f.name]]
            regs = [self._register(inst, n, f"{where} field {f.name}") for n in names]
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

    def read_registers(self, node: Node, instance: str, stat: str) -> dict[str, np.ndarray]:
        _, shape, fields = self._register_fields(self._instance(node, instance), stat)
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

    def write_registers(self, node: Node, instance: str, stat: str, index: int, values: dict[str, int]) -> None:
        inst = self._instance(node, instance)
        _, shape, fields = self._register_fields(inst, stat)
        size = int(np.prod(shape))
        if not 0 <= index < size:
            raise EntryError(f"{inst.label}.{stat}: cell {index} is out of range [0, {size})")
        writes = []
        for name, value in values.items():
            if name not in fields:
                raise EntryError(f"{inst.label}.{stat} has no field '{name}'", hint=f"fields: {', '.join(fields)}")
            f, regs = fields[name]
            if not isinstance(value, int) or not 0 <= value < (1 << f.width):
                raise EntryError(f"{inst.label}.{stat}.{name}={value!r} is not an unsigned {f.width}-bit integer")
            for r in reversed(regs):
                part = value & ((1 << r["bitwidth"]) - 1)
                if part > MAX_VALUE:
                    raise EntryError(f"{inst.label}.{stat}.{name}={value}: BMv2's Thrift API carries at most "
                                     f"{MAX_VALUE} per register cell")
                writes.append((r["name"], part))
                value >>= r["bitwidth"]
        thrift = self._thrift(node)
        try:
            for reg, part in writes:
                thrift.register_write(reg, index, part)
        finally:
            thrift.close()

    def reset_registers(self, node: Node, instance: str, stat: str, start: int = 0, count: int | None = None) -> None:
        inst = self._instance(node, instance)
        _, shape, fields = self._register_fields(inst, stat)
        size = int(np.prod(shape))
        count = size - start if count is None else count
        if start < 0 or count < 0 or start + count > size:
            raise EntryError(f"{inst.label}.{stat}: cells [{start}, {start + count}) are out of range [0, {size})")
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
    def configure_queues(self, node: Node, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        """simple_switch's priority queues of the interface's port: a level's queue is limited to
        its ceiling (in packets/s, see QUEUE_PACKET_BYTES); the switch serves the highest
        `standard_metadata.priority` first, and the P4 program gives level L priority levels-1-L.
        BMv2 has no guaranteed rate (`rate_bps`): strict priority alone decides who goes first."""
        inst = self._instance(node, instance)
        where = f"{node.name}:{interface}"
        checked = check_levels(inst.nf, inst.params, where, link_rate_bps, levels)
        sw = self._switch(node)
        if interface not in inst.record["interfaces"]:
            raise TopologyError(f"{where}: {inst.label} does not run on {interface}",
                                hint=f"it runs on {', '.join(inst.record['interfaces'])}")
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
        queues = {**inst.record.get("queues", {}),
                  interface: {"link_rate_bps": link_rate_bps,
                              "levels": [[q.level, q.rate_bps, q.ceil_bps] for q in checked]}}
        self._put(node, instance, {**inst.record, "queues": queues})
        return checked

    def _unset_queues(self, node: Node, record: dict) -> None:
        """Put the queues an instance configured back to simple_switch's defaults."""
        if not record.get("queues"):
            return
        sw = self._switch(node)
        thrift = self._thrift(node)
        try:
            for interface, config in record["queues"].items():
                for priority in range(len(config["levels"])):
                    thrift.set_queue_rate(sw.ports[interface], priority, UNLIMITED_RATE)
                    thrift.set_queue_depth(sw.ports[interface], priority, QUEUE_DEPTH_PACKETS)
        finally:
            thrift.close()

    def queue_stats(self, node: Node, instance: str, interface: str) -> list[QueueStats]:
        raise TargetError(f"{node.name}:{interface}: BMv2 keeps no per-queue statistics (simple_switch's Thrift API "
                          f"sets queue rates and depths but reports no sent, dropped or queued counts)",
                          hint=f"read the per-level counters of {instance} instead (read_registers)")


def _key_only(entry: p4r.TableEntry, key: p4r.TableEntry | None = None) -> p4r.TableEntry:
    """The entry's key (table, match, priority), written into `key` if given."""
    key = p4r.TableEntry() if key is None else key
    key.table_id, key.priority = entry.table_id, entry.priority
    key.match.extend(entry.match)
    return key


def _deletion(entry: p4r.TableEntry) -> p4r.Update:
    update = p4r.Update(type=p4r.Update.DELETE)
    _key_only(entry, update.entity.table_entry)
    return update


def _own_addresses(entries: list[TableEntry], local: bool | None) -> list[TableEntry]:
    """own_ipv4 entries for the /32 ipv4_routes among `entries` whose action is `local` (True),
    another (False), or any (None)."""
    out = []
    for e in entries:
        prefix = e.match.get("dst_addr", "") if e.table == ROUTES_V4 else ""
        if prefix.endswith("/32") and (local is None or (e.action == "local") == local):
            out.append(normalize(OWN_IPV4, TableEntry(OWN_IPV4.name, {"addr": prefix[:-3]}, "own_address", {})))
    return out


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
        # fields whose 0 is a wildcard (catalog bmv2.zero_wildcards: field -> weight): ternary on
        # the switch, 0 left out as a don't-care; priority 1 + the weights of the fields set
        self.wildcards: dict[str, int] = table.bmv2.get("zero_wildcards", {})

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

    # Entries are encoded straight into the Update that carries them: with protobuf's pure-Python
    # runtime (3.20 on Python 3.11), copying a message into another cost as much as building it.
    def insertion(self, e: TableEntry) -> p4r.Update:
        update = p4r.Update(type=p4r.Update.INSERT)
        self._fill(update.entity.table_entry, e, with_action=True)
        return update

    def deletion(self, e: TableEntry) -> p4r.Update:
        update = p4r.Update(type=p4r.Update.DELETE)
        self._fill(update.entity.table_entry, e, with_action=False)
        return update

    def _fill(self, entry: p4r.TableEntry, e: TableEntry, with_action: bool) -> None:
        entry.table_id = self.info.id
        for f in self.table.match:
            mf = self._p4_field(self.info.match_field(f.name), f, "match field")
            raw = self._bytes(f, e.match[f.name], mf.bitwidth, "match")
            if f.kind == "lpm":
                plen = ipaddress.ip_network(e.match[f.name]).prefixlen
                if plen:   # P4Runtime: a /0 is a don't-care, left out
                    m = entry.match.add(field_id=mf.id)
                    m.lpm.value, m.lpm.prefix_len = raw, plen
            elif f.kind == "ternary" or f.name in self.wildcards:
                if f.name in self.wildcards and not any(raw):
                    continue
                m = entry.match.add(field_id=mf.id)
                m.ternary.value, m.ternary.mask = raw, b"\xff" * len(raw)
            else:
                entry.match.add(field_id=mf.id).exact.value = raw
        if any(f.kind == "ternary" for f in self.table.match) or self.wildcards:
            entry.priority = 1 + sum(w for name, w in self.wildcards.items() if e.match.get(name))
        if not with_action:
            return
        action = self.info.actions.get(e.action)
        if action is None:
            raise EntryError(f"{self.where}: action '{e.action}' is not in the P4 program's p4info",
                             hint=f"the table's P4 actions: {', '.join(self.info.actions)}")
        entry.action.action.action_id = action.preamble.id
        params = {p.name: p for p in action.params}
        for f in self.table.action(e.action):
            p = self._p4_field(params.get(f.name), f, f"action {e.action} parameter")
            entry.action.action.params.add(param_id=p.id, value=self._bytes(f, e.params[f.name], p.bitwidth, "parameter"))

    def decode(self, entry: p4r.TableEntry) -> EntryCounters:
        by_id = {m.field_id: m for m in entry.match}
        match = {}
        for f in self.table.match:
            mf = self.info.match_field(f.name)
            m = by_id.get(mf.id)
            if f.kind == "lpm":
                match[f.name] = self._value(f, m.lpm.value if m else b"", m.lpm.prefix_len if m else 0)
            elif f.kind == "ternary" or f.name in self.wildcards:
                match[f.name] = self._value(f, m.ternary.value if m else b"")
            else:
                match[f.name] = self._value(f, m.exact.value)
        action = self.info.action_name(entry.action.action.action_id) or f"action{entry.action.action.action_id}"
        values = {p.param_id: p.value for p in entry.action.action.params}
        ids = {p.name: p.id for p in self.info.actions[action].params} if action in self.info.actions else {}
        params = {f.name: self._value(f, values.get(ids.get(f.name), b""))
                  for f in self.table.actions.get(action, ())}
        return EntryCounters(TableEntry(self.table.name, match, action, params),
                             entry.counter_data.packet_count, entry.counter_data.byte_count)
