"""XdpTarget: NFs as XDP programs on Linux interfaces.

Compile with clang (cached), load with libbpf, pin maps under
/sys/fs/bpf/innet/<node>/<nf>/ (a redeploy reuses them, so no state is lost), attach with
pyroute2 in the node's namespace (native mode, generic as a logged fallback). Logical
table entries become map entries, encoded by field name against the program's BTF.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller import qos
from controller.bpf import libbpf
from controller.bpf.btf import Btf
from controller.bpf.build import compile_program
from controller.catalog import ADDRESS_TYPES, NFSpec, Table
from controller.errors import BpfError, EntryError, QueueError, TargetError, TopologyError
from controller.netns import netns
from controller.node import Node
from controller.queues import QueueLevel, QueueStats, check_levels
from controller.tables import EntryCounters, TableEntry, address_bytes, address_text, normalize
from controller.targets import chain
from controller.targets.base import Deployment, Target
from controller.targets.chain import NodeChains, Placement
from controller.targets.tc import TcEgressHook

log = logging.getLogger("innet.xdp")

BPFFS = Path("/sys/fs/bpf")
PIN_ROOT = BPFFS / "innet"
STATE_ROOT = Path(os.environ.get("INNET_STATE", "/run/innet")) / "xdp"
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4
PROG_PIN = "prog"
PORT_MAP = "tx_ports"   # DEVMAP of the NF's interfaces, when the program redirects


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf if it is not there yet."""
    if os.path.ismount(BPFFS):
        return
    if os.geteuid() != 0:
        raise BpfError("bpffs is not mounted at /sys/fs/bpf", errno=errno.EPERM)
    if os.system("mount -t bpf bpf /sys/fs/bpf") != 0:
        raise BpfError("cannot mount bpffs at /sys/fs/bpf", hint="mount -t bpf bpf /sys/fs/bpf")


@dataclass
class _Loaded:
    """A deployed NF's program and maps, opened from its pins."""
    meta: dict
    maps: dict[str, libbpf.BpfMap]
    btf: Btf
    ports: dict[str, int]          # interface name -> ifindex, for the NF's interfaces

    def close(self) -> None:
        for m in self.maps.values():
            m.close()


class XdpHook:
    """The XDP hook of interfaces (IFLA_XDP); TcEgressHook offers the same steps for tc egress."""

    what = "XDP"

    @staticmethod
    def detach_hint(ifname: str) -> str:
        return f"detach it first: ip link set dev {ifname} xdp off"

    @staticmethod
    def prog_id(ipr: IPRoute, ifindex: int) -> int | None:
        link = ipr.get_links(ifindex)[0]
        xdp = link.get("xdp")
        return xdp.get("IFLA_XDP_PROG_ID") if xdp else None

    @staticmethod
    def attach(ipr: IPRoute, node: Node, ifname: str, ifindex: int, prog_fd: int) -> str:
        """Native mode first; generic (skb) mode when the driver has no native XDP."""
        for flags, mode in ((XDP_FLAGS_DRV_MODE, "native"), (XDP_FLAGS_SKB_MODE, "generic")):
            try:
                ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]})
                if mode == "generic":
                    log.warning("%s:%s has no native XDP; running in generic mode (slower)", node.name, ifname)
                return mode
            except NetlinkError as exc:
                if exc.code == errno.EPERM:
                    raise BpfError(f"attaching XDP to {node.name}:{ifname}: permission denied", errno=exc.code)
                last = exc
        raise TargetError(f"cannot attach XDP to {node.name}:{ifname}: {last}",
                          hint="check that the interface is up and supports XDP")

    @staticmethod
    def detach(ipr: IPRoute, ifindex: int | None, only_prog_id: int | None) -> None:
        if ifindex is None:
            return
        try:
            link = ipr.get_links(ifindex)[0]
        except NetlinkError:
            return   # the interface is gone, and its program with it
        xdp = link.get("xdp")
        current = xdp.get("IFLA_XDP_PROG_ID") if xdp else None
        if not current or (only_prog_id is not None and current != only_prog_id):
            return
        mode = xdp.get("IFLA_XDP_ATTACHED")
        flags = XDP_FLAGS_SKB_MODE if mode in ("xdpgeneric", 2) else XDP_FLAGS_DRV_MODE
        ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]})


class XdpTarget(Target):
    kind = "xdp"

    # ---- deployment -------------------------------------------------------------------
    @staticmethod
    def _hook(nf: NFSpec) -> XdpHook | TcEgressHook:
        """Where the NF's program runs: XDP, or tc egress when its catalog entry says so."""
        return TcEgressHook(nf.name) if nf.programs["xdp"].get("hook") == "tc_egress" else XdpHook()

    def _pin_dir(self, node: Node, nf: NFSpec) -> Path:
        return PIN_ROOT / node.name / nf.name

    def _meta_path(self, node: Node, nf: NFSpec) -> Path:
        return STATE_ROOT / node.name / f"{nf.name}.json"

    def _read_meta(self, node: Node, nf: NFSpec) -> dict | None:
        path = self._meta_path(node, nf)
        return json.loads(path.read_text()) if path.exists() else None

    def _deployed_meta(self, node: Node, nf: NFSpec) -> dict:
        meta = self._read_meta(node, nf)
        if meta is None:
            raise TargetError(f"{nf.name} is not deployed on {node.name}",
                              hint=f"deploy it first: innet nf deploy {node.name} {nf.name}")
        return meta

    def _write_meta(self, node: Node, nf: NFSpec, meta: dict) -> None:
        path = self._meta_path(node, nf)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=1))

    def deployment(self, node: Node, nf: NFSpec) -> Deployment | None:
        meta = self._read_meta(node, nf)
        if meta is None:
            return None
        return Deployment(node.name, nf.name, self.kind, tuple(meta["interfaces"]), meta["params"], meta["modes"])

    def deploy(self, node: Node, nf: NFSpec, interfaces: list[str], params: dict | None = None) -> Deployment:
        program = nf.programs.get("xdp")
        if not program:
            raise TargetError(f"NF {nf.name} has no XDP program", hint="deploy it on a bmv2 node instead")
        values = nf.resolve_parameters(params)
        if not interfaces:
            raise TopologyError(f"deploying {nf.name} on {node.name}: no interfaces given")
        links = node.interfaces()
        for ifname in interfaces:
            if ifname not in links:
                raise TopologyError(f"node {node.name} has no interface '{ifname}'",
                                    hint=f"its interfaces: {', '.join(sorted(links))}")
        defines = {p.xdp["define"]: values[p.name] for p in nf.parameters.values() if "define" in p.xdp}
        obj_path = compile_program(program["source"], defines)

        meta = self._read_meta(node, nf)
        if meta and meta["object"] == str(obj_path) and meta["interfaces"] == list(interfaces) \
                and meta["params"] == values and self._in_place(node, nf, meta):
            log.info("%s already runs on %s (%s): nothing to do", nf.name, node.name, ", ".join(interfaces))
            return self.deployment(node, nf)
        if meta and meta["params"] != values:
            raise TargetError(f"{nf.name} runs on {node.name} with {meta['params']}; changing to {values} would "
                              f"resize its maps and drop their state",
                              hint=f"remove it first (innet nf remove {node.name} {nf.name}), then deploy again")
        hook = self._hook(nf)
        chains = self._chains(node)
        with netns(node.netns), IPRoute() as ipr:
            attached = {i: hook.prog_id(ipr, links[i]["ifindex"]) for i in interfaces}
        placement = self._place(node, nf, hook, chains, meta, attached)
        ensure_bpffs()
        pin_dir = self._pin_dir(node, nf)
        fresh = not pin_dir.exists()
        if fresh:   # new maps: no entry holds a counter slot yet
            self._slots_path(node, nf).unlink(missing_ok=True)
        pin_dir.mkdir(parents=True, exist_ok=True)
        changed: dict[str, int | None] = {}   # interface -> program id it ran before (None: no XDP)
        undo = []                             # chain_next slots to put back, newest last
        obj = None
        try:
            obj = libbpf.BpfObject(str(obj_path), pin_dir=str(pin_dir)).load()
            entry = program.get("entry") or next(iter(obj.programs))
            if entry not in obj.programs:
                raise TargetError(f"{obj_path} has no program '{entry}' (it has {', '.join(obj.programs)})")
            prog_fd = obj.programs[entry]
            prog_id = libbpf.prog_id(prog_fd)
            if chain.passes(program, nf.name) and chain.NEXT_MAP not in obj.maps:
                raise TargetError(f"{nf.name} is `chain: {chain.PASS}` but {program['source']} has no "
                                  f"{chain.NEXT_MAP} map", hint="end the program in chain_pass (ebpf/include/chain.h)")
            if meta is None and chain.NEXT_MAP in obj.maps:   # in front of what runs there now, if anything
                chains.link(nf.name, placement.next, obj.maps[chain.NEXT_MAP])
            modes = {i: m for i, m in (meta or {}).get("modes", {}).items() if i in interfaces}
            with netns(node.netns), IPRoute() as ipr:
                if PORT_MAP in obj.maps:
                    for ifname in interfaces:   # DEVMAP resolves ifindexes in the caller's namespace
                        idx = struct.pack("=I", links[ifname]["ifindex"])
                        obj.maps[PORT_MAP].update(idx, idx)
                for ifname in placement.attach:
                    changed[ifname] = attached[ifname]
                    modes[ifname] = hook.attach(ipr, node, ifname, links[ifname]["ifindex"], prog_fd)
                for before in placement.after:   # behind these NFs, in their chain_next
                    undo.append((before, chains.next_id(before), chains.metas[before].get("next")))
                    chains.set_next(before, prog_fd)
                    for ifname in chains.metas[before]["interfaces"]:
                        modes.setdefault(ifname, chains.metas[before]["modes"].get(ifname))
                for ifname in (meta or {}).get("interfaces", []):
                    if ifname not in interfaces:
                        hook.detach(ipr, links.get(ifname, {}).get("ifindex"), meta["prog_id"])
                        if ifname in meta.get("queues", {}):
                            qos.remove(ipr, meta["ifindexes"][ifname])
            prog_pin = pin_dir / PROG_PIN
            prog_pin.unlink(missing_ok=True)
            libbpf.pin(prog_fd, str(prog_pin))
            new_meta = {"object": str(obj_path), "interfaces": list(interfaces), "params": values,
                        "modes": modes, "prog_id": prog_id, "ifindexes": {i: links[i]["ifindex"] for i in interfaces},
                        "queues": {i: q for i, q in (meta or {}).get("queues", {}).items() if i in interfaces},
                        "chain": program.get("chain"), "next": (meta or {}).get("next", placement.next)}
            for before in placement.after:
                chains.metas[before]["next"] = nf.name
                chains.write_meta(before)
            self._write_meta(node, nf, new_meta)
        except BaseException:
            for before, prog, next_name in reversed(undo):
                chains.restore_next(before, prog)
                chains.metas[before]["next"] = next_name
                chains.write_meta(before)
            self._rollback(node, nf, chains, changed, links)
            if fresh:
                shutil.rmtree(pin_dir, ignore_errors=True)
                self._drop_empty_dirs(node, nf)
            raise
        finally:
            if obj is not None:
                obj.close()
        where = ", ".join(f"{i} ({m})" for i, m in modes.items())
        if meta is None and placement.next:
            where += f"; in front of {placement.next}"
        if meta is None and placement.after:
            where += f"; behind {', '.join(placement.after)}"
        log.info("%s deployed on %s: %s", nf.name, node.name, where)
        return self.deployment(node, nf)

    def _chains(self, node: Node) -> NodeChains:
        return NodeChains(node.name, STATE_ROOT / node.name, PIN_ROOT / node.name)

    def _place(self, node: Node, nf: NFSpec, hook, chains: NodeChains, meta: dict | None,
               attached: dict[str, int | None]) -> Placement:
        """Where the NF goes on its interfaces' hooks; refuses programs that are not innet's."""
        own = (meta or {}).get("prog_id")
        for ifname, prog_id in attached.items():
            if prog_id and prog_id != own and chains.owner(prog_id) is None:
                raise TargetError(f"{node.name}:{ifname} already runs {hook.what} program id {prog_id}, "
                                  f"not this deployment's", hint=hook.detach_hint(ifname))
        if not isinstance(hook, XdpHook):   # one NF per hook: no chains
            return Placement(attach=list(attached))
        if meta is None:
            return chains.place(nf.name, chain.passes(nf.programs["xdp"], nf.name), attached)
        # a redeploy: the new program takes the old one's places (hooks and chain_next slots)
        placement = Placement(attach=[i for i, p in attached.items() if not p or p == own],
                              after=chains.predecessors(nf.name))
        for ifname, prog_id in sorted(attached.items()):
            if prog_id and prog_id != own and nf.name not in chains.walk(prog_id):
                raise TargetError(f"{node.name}:{ifname} runs {chains.describe(prog_id)}, without {nf.name}",
                                  hint=f"remove {nf.name} first (innet nf remove {node.name} {nf.name}), then "
                                       f"deploy it again: it then joins that chain")
        chained = placement.after or meta.get("next")
        if chained and set(attached) != set(meta["interfaces"]):
            raise TargetError(f"{nf.name} is chained with other NFs on {node.name} "
                              f"({', '.join(meta['interfaces'])}); its interfaces cannot change in place",
                              hint=f"remove it first (innet nf remove {node.name} {nf.name}), then deploy again")
        return placement

    def _rollback(self, node: Node, nf: NFSpec, chains: NodeChains, changed: dict, links: dict) -> None:
        """Put every interface this deploy touched back as it was: the program it ran (an innet
        NF's, found through its pin), or none."""
        if not changed:
            return
        hook = self._hook(nf)
        with netns(node.netns), IPRoute() as ipr:
            for ifname, before in changed.items():
                idx = links[ifname]["ifindex"]
                owner = chains.owner(before)
                try:
                    fd = chains.program_fd(owner) if owner else None
                except BpfError:
                    fd = None
                try:
                    if fd is not None:
                        hook.attach(ipr, node, ifname, idx, fd)
                    else:
                        hook.detach(ipr, idx, None)
                finally:
                    if fd is not None:
                        os.close(fd)

    def _in_place(self, node: Node, nf: NFSpec, meta: dict) -> bool:
        """Whether the NF's program runs on each of its interfaces: attached there, or (XDP) in
        the chain attached there."""
        hook = self._hook(nf)
        chains = self._chains(node)
        try:
            with netns(node.netns), IPRoute() as ipr:
                attached = [hook.prog_id(ipr, idx) for idx in meta["ifindexes"].values()]
        except (TopologyError, NetlinkError):
            return False
        if not isinstance(hook, XdpHook):
            return all(a == meta["prog_id"] for a in attached)
        return all(nf.name in chains.walk(a) for a in attached)

    def remove(self, node: Node, nf: NFSpec) -> bool:
        meta = self._read_meta(node, nf)
        pin_dir = self._pin_dir(node, nf)
        if meta is None and not pin_dir.exists():
            return False
        if meta:
            # the chain closes over the NF before its program and maps go: its predecessors call
            # its next, and hooks that ran it run its next
            chains = self._chains(node)
            after = meta.get("next")
            for before in chains.predecessors(nf.name):
                chains.link(before, after)
                chains.metas[before]["next"] = after
                chains.write_meta(before)
            try:
                hook = self._hook(nf)
                with netns(node.netns), IPRoute() as ipr:
                    for ifname, idx in meta["ifindexes"].items():
                        if after and hook.prog_id(ipr, idx) == meta["prog_id"]:
                            fd = chains.program_fd(after)
                            try:
                                hook.attach(ipr, node, ifname, idx, fd)
                            finally:
                                os.close(fd)
                        else:
                            hook.detach(ipr, idx, meta["prog_id"])
                    for ifname in meta.get("queues", {}):
                        qos.remove(ipr, meta["ifindexes"][ifname])
            except TopologyError:
                log.info("%s: namespace gone; only dropping pins", node.name)
            self._meta_path(node, nf).unlink(missing_ok=True)
        self._slots_path(node, nf).unlink(missing_ok=True)
        shutil.rmtree(pin_dir, ignore_errors=True)
        self._drop_empty_dirs(node, nf)
        log.info("%s removed from %s", nf.name, node.name)
        return True

    def _drop_empty_dirs(self, node: Node, nf: NFSpec) -> None:
        """The node's pin and state directories go once its last NF has."""
        for d in (self._pin_dir(node, nf).parent, self._meta_path(node, nf).parent):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()

    # ---- tables -----------------------------------------------------------------------
    def _open(self, node: Node, nf: NFSpec) -> _Loaded:
        meta = self._deployed_meta(node, nf)
        pin_dir = self._pin_dir(node, nf)
        maps = {p.name: libbpf.BpfMap.from_pin(str(p)) for p in pin_dir.iterdir() if p.name != PROG_PIN}
        return _Loaded(meta, maps, Btf(Path(meta["object"])), meta["ifindexes"])

    def _codec(self, loaded: _Loaded, table: Table) -> "_Codec":
        return _Codec(table, loaded)

    # Counter slots: each entry's counters live in a slot of a shared per-CPU array. Which entry
    # holds which slot is recorded in <nf>.slots (JSON: {counters map: {"<table map>/<key hex>":
    # slot}}), so a write needs no scan of every table and knows whether its exact key exists,
    # which an LPM trie's lookup cannot tell (it returns the longest match: maybe a shorter
    # prefix). A slot is recorded before its entry is written and dropped after the entry is
    # deleted: a crash in between can leak a slot, never hand one to two entries.
    def _slots_path(self, node: Node, nf: NFSpec) -> Path:
        return STATE_ROOT / node.name / f"{nf.name}.slots"   # not *.json: those are deployments

    def _read_slots(self, node: Node, nf: NFSpec) -> dict[str, dict[str, int]]:
        path = self._slots_path(node, nf)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_slots(self, node: Node, nf: NFSpec, holders: dict[str, dict[str, int]]) -> None:
        record = self._read_slots(node, nf)
        record.update(holders)
        self._slots_path(node, nf).write_text(json.dumps(record))

    def _slot_holders(self, loaded: _Loaded, nf: NFSpec, counters_map: str, record: dict) -> dict[str, int]:
        """Entry -> counter slot for every table sharing `counters_map`: as recorded, else read
        from those tables."""
        if counters_map in record:
            return dict(record[counters_map])
        holders = {}
        for t in nf.tables.values():
            if t.xdp.get("counters_map") == counters_map:
                codec = self._codec(loaded, t)
                holders.update({_holder(codec, k): codec.slot_of(v) for k, v in codec.table_map.items()})
        return holders

    def write(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> None:
        loaded = self._open(node, nf)
        try:
            encoded = []
            for e in entries:
                table = nf.table(e.table)
                codec = self._codec(loaded, table)
                e = normalize(table, e, nf_params=loaded.meta["params"])
                encoded.append((codec, codec.key(e), e))
            record = self._read_slots(node, nf)
            holders: dict[str, dict[str, int]] = {}   # counters map -> entry -> slot, after this write
            used: dict[str, set[int]] = {}
            added: list[tuple[str, str]] = []        # (counters map, entry) newly holding a slot
            plan = []
            for codec, key, e in encoded:
                shared = codec.table.xdp.get("counters_map")
                if not shared:   # no counters: a hash table's own lookup is exact
                    plan.append((codec, key, e, codec.table_map.lookup(key), None))
                    continue
                if shared not in holders:
                    holders[shared] = self._slot_holders(loaded, nf, shared, record)
                    used[shared] = set(holders[shared].values())
                holder = _holder(codec, key)
                if holder in holders[shared]:   # the exact key exists, so even an LPM lookup returns it
                    plan.append((codec, key, e, codec.table_map.lookup(key), holders[shared][holder]))
                else:
                    holders[shared][holder] = slot = codec.free_slot(used[shared])
                    added.append((shared, holder))
                    plan.append((codec, key, e, None, slot))
            if added:
                self._save_slots(node, nf, holders)
            undo: list[tuple[_Codec, bytes, bytes | None]] = []
            try:
                for codec, key, e, old, slot in plan:
                    codec.reset_counters(slot, keep=old is not None)
                    codec.table_map.update(key, codec.value(e, slot))
                    undo.append((codec, key, old))
            except BaseException:
                for codec, key, old in reversed(undo):
                    if old is None:
                        codec.table_map.delete(key)
                    else:
                        codec.table_map.update(key, old)
                if added:
                    for shared, holder in added:
                        del holders[shared][holder]
                    self._save_slots(node, nf, holders)
                raise
        finally:
            loaded.close()

    def delete(self, node: Node, nf: NFSpec, entries: list[TableEntry]) -> int:
        loaded = self._open(node, nf)
        try:
            keys = []
            for e in entries:
                table = nf.table(e.table)
                codec = self._codec(loaded, table)
                keys.append((codec, codec.key(normalize(table, e, with_action=False))))
            deleted = 0
            record = self._read_slots(node, nf)
            holders: dict[str, dict[str, int]] = {}
            for codec, key in keys:
                old = codec.table_map.lookup(key)
                if old is None or not codec.table_map.delete(key):   # the delete is exact, the lookup maybe not
                    continue
                shared = codec.table.xdp.get("counters_map")
                if shared:
                    if shared not in holders:
                        holders[shared] = self._slot_holders(loaded, nf, shared, record)
                    codec.reset_counters(holders[shared].pop(_holder(codec, key), codec.slot_of(old)), keep=False)
                deleted += 1
            if holders:
                self._save_slots(node, nf, holders)
            return deleted
        finally:
            loaded.close()

    def read(self, node: Node, nf: NFSpec, table: str) -> list[TableEntry]:
        return [c.entry for c in self.read_counters(node, nf, table)]

    def read_counters(self, node: Node, nf: NFSpec, table: str) -> list[EntryCounters]:
        loaded = self._open(node, nf)
        try:
            codec = self._codec(loaded, nf.table(table))
            return [codec.decode(k, v) for k, v in codec.table_map.items()]
        finally:
            loaded.close()

    def read_stat(self, node: Node, nf: NFSpec, stat: str) -> dict[str, int]:
        """Counters summed over CPUs: named fields of a struct value, or one u64 per index."""
        spec = nf.stat(stat)
        loaded = self._open(node, nf)
        try:
            m = loaded.maps[spec.xdp["map"]]
            fields = loaded.btf.members(_btf_ids(loaded, spec.xdp["map"])[1])
            if fields:
                per_cpu = m.lookup_per_cpu(struct.pack("=I", 0))
                return {name: sum(int.from_bytes(v[fields[name].offset:][:8], "little") for v in per_cpu)
                        for name in spec.index}
            return {name: sum(int.from_bytes(v[:8], "little") for v in m.lookup_per_cpu(struct.pack("=I", i)))
                    for i, name in enumerate(spec.index)}
        finally:
            loaded.close()

    # ---- register arrays (sketches, flow tables) --------------------------------------
    def _registers(self, loaded: _Loaded, nf: NFSpec, stat: str):
        spec = nf.stat(stat)
        if spec.kind != "registers":
            raise TargetError(f"{nf.name}.{stat} is a {spec.kind} statistic, not registers",
                              hint="read it with read_stat")
        m = loaded.maps[spec.xdp["map"]]
        members = loaded.btf.members(_btf_ids(loaded, spec.xdp["map"])[1])
        shape = spec.shape(loaded.meta["params"])
        if int(np.prod(shape)) != m.max_entries:
            raise TargetError(f"{nf.name}.{stat}: map {m.name} has {m.max_entries} cells, the catalog's shape "
                              f"{shape} wants {int(np.prod(shape))}", hint=f"fix {nf.source}")
        return spec, m, members, shape

    def read_registers(self, node: Node, nf: NFSpec, stat: str) -> dict[str, np.ndarray]:
        """Read in batches; numeric fields of per-CPU maps are summed over CPUs."""
        loaded = self._open(node, nf)
        try:
            spec, m, members, shape = self._registers(loaded, nf, stat)
            raw = np.frombuffer(m.lookup_all(), dtype=np.uint8)
            per_index = m.read_size // m.stride if m.per_cpu else 1
            raw = raw.reshape(m.max_entries, per_index, m.stride if m.per_cpu else m.value_size)
            out = {}
            for f in spec.fields:
                mem = members[f.name]
                chunk = np.ascontiguousarray(raw[:, :, mem.offset:mem.offset + mem.size])
                if f.type in ADDRESS_TYPES:   # network byte order
                    values = [int.from_bytes(c.tobytes(), "big") for c in chunk[:, 0]]
                    arr = np.array(values, dtype=object if mem.size > 8 else np.uint64)
                else:
                    arr = chunk.view(f"<u{mem.size}")[:, :, 0].astype(np.uint64).sum(axis=1, dtype=np.uint64)
                out[f.name] = arr.reshape(shape)
            return out
        finally:
            loaded.close()

    def write_registers(self, node: Node, nf: NFSpec, stat: str, index: int, values: dict[str, int]) -> None:
        loaded = self._open(node, nf)
        try:
            spec, m, members, _ = self._registers(loaded, nf, stat)
            if not 0 <= index < m.max_entries:
                raise EntryError(f"{nf.name}.{stat}: cell {index} is out of range [0, {m.max_entries})")
            key = struct.pack("=I", index)
            cell = bytearray(m.lookup(key)[:m.value_size])
            for name, value in values.items():
                f, mem = spec.field(name), members[name]
                order = "big" if f.type in ADDRESS_TYPES else "little"
                try:
                    cell[mem.offset:mem.offset + mem.size] = int(value).to_bytes(mem.size, order)
                except OverflowError:
                    raise EntryError(f"{nf.name}.{stat}.{name}={value} does not fit in {mem.size} bytes") from None
            if m.per_cpu:   # the value on the first CPU, zero on the others
                cell = cell.ljust(m.stride, b"\0").ljust(m.read_size, b"\0")
            m.update(key, bytes(cell))
        finally:
            loaded.close()

    def reset_registers(self, node: Node, nf: NFSpec, stat: str, start: int = 0, count: int | None = None) -> None:
        loaded = self._open(node, nf)
        try:
            _, m, _, _ = self._registers(loaded, nf, stat)
            count = m.max_entries - start if count is None else count
            if start < 0 or count < 0 or start + count > m.max_entries:
                raise EntryError(f"{nf.name}.{stat}: cells [{start}, {start + count}) are out of range "
                                 f"[0, {m.max_entries})")
            if count:
                m.update_range(start, bytes(count * m.read_size))
        finally:
            loaded.close()

    # ---- priority queues (an HTB tree per interface, see controller.qos) ---------------
    def _queue_meta(self, node: Node, nf: NFSpec, interface: str) -> dict:
        meta = self._deployed_meta(node, nf)
        if interface not in meta["interfaces"]:
            raise QueueError(f"{nf.name} does not run on {node.name}:{interface}, so it classifies nothing there",
                             hint=f"it runs on: {', '.join(meta['interfaces'])}")
        return meta

    def configure_queues(self, node: Node, nf: NFSpec, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        meta = self._queue_meta(node, nf, interface)
        where = f"{node.name}:{interface}"
        checked = check_levels(nf, meta["params"], where, link_rate_bps, levels)
        if "classes_map" not in nf.programs["xdp"]:
            raise QueueError(f"{nf.name}'s XDP program has no level -> class map", hint=f"fix {nf.source}")
        previous = meta.get("queues", {}).get(interface)
        ifindex = meta["ifindexes"][interface]
        loaded = self._open(node, nf)
        try:
            classes_map = loaded.maps[nf.programs["xdp"]["classes_map"]]
            with netns(node.netns), IPRoute() as ipr:
                if previous is None:
                    qos.check_free(ipr, ifindex, where)
                try:
                    self._write_classes(classes_map, qos.install(ipr, ifindex, link_rate_bps, checked))
                except BaseException:
                    if previous:   # put the earlier configuration back
                        old = [QueueLevel(*q) for q in previous["levels"]]
                        self._write_classes(classes_map, qos.install(ipr, ifindex, previous["link_rate_bps"], old))
                    else:
                        qos.remove(ipr, ifindex)
                        if not meta.get("queues"):
                            self._write_classes(classes_map, {})
                    raise
            meta.setdefault("queues", {})[interface] = {"link_rate_bps": link_rate_bps,
                                                        "levels": [[q.level, q.rate_bps, q.ceil_bps] for q in checked]}
            self._write_meta(node, nf, meta)
        finally:
            loaded.close()
        log.info("%s: %d priority levels on %s at %d bit/s", nf.name, len(checked), where, link_rate_bps)
        return checked

    @staticmethod
    def _write_classes(classes_map: libbpf.BpfMap, classes: dict[int, int]) -> None:
        """level -> class id for the classifier; levels not given get 0 (leave the packet's priority)."""
        for level in range(classes_map.max_entries):
            classes_map.update(struct.pack("=I", level), struct.pack("=I", classes.get(level, 0)))

    def queue_stats(self, node: Node, nf: NFSpec, interface: str) -> list[QueueStats]:
        meta = self._queue_meta(node, nf, interface)
        if interface not in meta.get("queues", {}):
            raise QueueError(f"no queues are configured for {nf.name} on {node.name}:{interface}",
                             hint=f"configure them first: innet queues {node.name} {interface} --link-rate RATE "
                                  f"--level RATE[:CEIL] ...")
        with netns(node.netns), IPRoute() as ipr:
            return qos.read_stats(ipr, meta["ifindexes"][interface], meta["params"]["levels"])


class _Codec:
    """Encodes one logical table's entries as its map's keys and values, by BTF field name."""

    def __init__(self, table: Table, loaded: _Loaded):
        self.table, self.loaded = table, loaded
        binding = table.xdp
        self.table_map = loaded.maps[binding["map"]]
        key_id, value_id = _btf_ids(loaded, binding["map"])
        self.key_fields = loaded.btf.members(key_id)
        self.value_fields = loaded.btf.members(value_id)
        self.actions = {}
        if "action_enum" in binding:
            prefix = binding["action_enum"].upper() + "_"
            self.actions = {n[len(prefix):].lower(): v for n, v in loaded.btf.enum(binding["action_enum"]).items()
                            if n.startswith(prefix)}
        self.counters_map = loaded.maps.get(binding.get("counters_map", ""))
        self.counter_fields = None
        if self.counters_map is not None:
            _, cid = _btf_ids(loaded, binding["counters_map"])
            self.counter_fields = loaded.btf.members(cid)
        self.port_names = {v: k for k, v in loaded.ports.items()}

    # fields
    def _put(self, buf: bytearray, member, field_type: str, value, where: str) -> None:
        if field_type in ADDRESS_TYPES:
            raw = address_bytes(field_type, value)
        elif field_type == "port":
            if value not in self.loaded.ports:
                raise EntryError(f"{where}: interface '{value}' does not run this NF",
                                 hint=f"its interfaces: {', '.join(self.loaded.ports)}")
            raw = struct.pack("=I", self.loaded.ports[value])
        else:
            raw = value.to_bytes(member.size, "little")
        buf[member.offset:member.offset + len(raw)] = raw

    def _get(self, raw: bytes, member, field_type: str):
        chunk = raw[member.offset:member.offset + member.size]
        if field_type in ADDRESS_TYPES:
            return address_text(field_type, int.from_bytes(chunk, "big"))
        if field_type == "port":
            idx = struct.unpack("=I", chunk[:4])[0]
            return self.port_names.get(idx, f"ifindex{idx}")
        return int.from_bytes(chunk, "little")

    def key(self, e: TableEntry) -> bytes:
        buf = bytearray(self.table_map.key_size)
        for f in self.table.match:
            self._put(buf, self.key_fields[f.name], f.type, e.match[f.name], f"table {self.table.name} {f.name}")
            if f.kind == "lpm":
                plen = self.key_fields["prefixlen"]
                struct.pack_into("=I", buf, plen.offset, ipaddress.ip_network(e.match[f.name]).prefixlen)
        return bytes(buf)

    def value(self, e: TableEntry, slot: int | None) -> bytes:
        buf = bytearray(self.table_map.value_size)
        if self.actions:
            struct.pack_into("=I", buf, self.value_fields["action"].offset, self.actions[e.action])
        for f in self.table.action(e.action):
            self._put(buf, self.value_fields[f.name], f.type, e.params[f.name],
                      f"table {self.table.name} action {e.action} {f.name}")
        if slot is not None:
            struct.pack_into("=I", buf, self.value_fields["stats_slot"].offset, slot)
        return bytes(buf)

    def decode(self, key: bytes, value: bytes) -> EntryCounters:
        match = {}
        for f in self.table.match:
            v = self._get(key, self.key_fields[f.name], f.type)
            if f.kind == "lpm":
                plen = struct.unpack_from("=I", key, self.key_fields["prefixlen"].offset)[0]
                v = str(ipaddress.ip_network(f"{v}/{plen}", strict=False))
            match[f.name] = v
        action = next(iter(self.table.actions))
        if self.actions:
            code = struct.unpack_from("=I", value, self.value_fields["action"].offset)[0]
            action = next((a for a, c in self.actions.items() if c == code), f"action{code}")
        params = {f.name: self._get(value, self.value_fields[f.name], f.type)
                  for f in self.table.actions.get(action, ())}
        packets = nbytes = 0
        if self.counters_map is not None:
            for v in self.counters_map.lookup_per_cpu(struct.pack("=I", self.slot_of(value))):
                packets += self._get(v, self.counter_fields["packets"], "u64")
                nbytes += self._get(v, self.counter_fields["bytes"], "u64")
        return EntryCounters(TableEntry(self.table.name, match, action, params), packets, nbytes)

    # per-entry counters live in a shared per-CPU array, one slot per entry
    def slot_of(self, value: bytes) -> int | None:
        if self.counters_map is None:
            return None
        return struct.unpack_from("=I", value, self.value_fields["stats_slot"].offset)[0]

    def free_slot(self, used: set[int]) -> int | None:
        """The lowest counter slot not in `used`, which then holds it."""
        if self.counters_map is None:
            return None
        for slot in range(self.counters_map.max_entries):
            if slot not in used:
                used.add(slot)
                return slot
        raise BpfError(f"table {self.table.name}: all {self.counters_map.max_entries} counter slots are in use",
                       hint="delete entries first")

    def reset_counters(self, slot: int | None, keep: bool) -> None:
        if slot is None or keep:
            return
        self.counters_map.update(struct.pack("=I", slot), bytes(self.counters_map.read_size))


def _holder(codec: "_Codec", key: bytes) -> str:
    """An entry's name in the counter-slot record: its table's map and its exact key."""
    return f"{codec.table_map.name}/{key.hex()}"


def _btf_ids(loaded: _Loaded, map_name: str) -> tuple[int, int]:
    """A pinned map's key and value BTF type ids, found through the object's map definitions."""
    return _map_type_ids(Path(loaded.meta["object"]), map_name)


_TYPE_ID_CACHE: dict[tuple[Path, str], tuple[int, int]] = {}


def _map_type_ids(obj: Path, map_name: str) -> tuple[int, int]:
    key = (obj, map_name)
    if key not in _TYPE_ID_CACHE:
        with libbpf.BpfObject(str(obj)) as o:   # opened, not loaded: BTF only
            for name in o._map_ptrs:
                _TYPE_ID_CACHE[(obj, name)] = o.btf_type_ids(name)
    return _TYPE_ID_CACHE[key]
