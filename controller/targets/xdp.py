"""XdpTarget: NF instances as XDP programs on Linux interfaces.

Compile with clang (cached), load with libbpf, pin the program and its maps under
<scope pin root>/<node>/<instance>@<generation>/, attach with pyroute2 in the node's namespace
(native mode, generic as a logged fallback). Logical table entries become map entries,
encoded by field name against the program's BTF.

Bookkeeping lives in the scope's database (DataplaneRecords), not in files: one record per
instance under key `xdp/<instance>`,

    nf, source         the catalog name and the catalog file the instance was deployed from
    object, params     the compiled object and the parameters it was compiled with
    hook, chain        "xdp" or "tc_egress"; the catalog's chain kind ("pass" or None)
    pin, prog_id       its pin directory's name (<instance>@<generation>) and its program's id
    interfaces, ifindexes, modes, queues, next      where and how it runs (next: chain.py)
    behind, nf_slots   [forwarder, slot] of an instance run behind a service function forwarder
                       (it has no interfaces then, and runs the catalog's programs.xdp.behind
                       when the NF has one); a forwarder's program array of NF slots

and the counter slots its entries hold (DataplaneRecords.claim_slots, by instance id).

Generations: a redeploy of the same program keeps its pins, and so its state. A changed
program (another object or other parameters) is loaded into a fresh pin directory, the next
generation, so libbpf never meets a pinned map of another definition; it takes every place the
old program had (hooks, predecessors' chain_next slots), then the old pins go. Its maps start
empty, and Deployment.cleared says so: the caller writes the entries again.

Crash safety: a program is pinned before it runs anywhere, and a deploy changes the record
(with the instance's counter slots, and its predecessors' `next`) in one transaction after
every hook and slot is in place. Until then the new pin directory is one no record holds;
after it, the old one is. Either way a later deploy() or prune() finds that directory and
puts the recorded program (or, with none, what that program called next) wherever its
program still runs, found by program id on every hook and chain_next slot of the node
(`_sweep`): an interrupted deploy is rolled back before its record changed, forward after.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shutil
import socket
import struct
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller import qos
from controller.bpf import libbpf
from controller.bpf.btf import Btf, Member
from controller.bpf.build import compile_program
from controller.catalog import ADDRESS_TYPES, Field, NFSpec, Table, load_nf_cached
from controller.errors import BpfError, EntryError, QueueError, TargetError, TopologyError
from controller.netns import netns
from controller.node import Node
from controller.queues import QueueLevel, QueueStats, check_levels
from controller.tables import (EntryCounters, TableEntry, address_bytes, address_text, ip_packed, mac_bytes, normalize,
                               parse_mac)
from controller.targets import chain, tc
from controller.targets.base import Deployment, QueueingTarget, Target, check_instance_id
from controller.targets.chain import PROG_PIN, NodeChains, Placement, record_key
from controller.targets.tc import TcEgressHook

log = logging.getLogger("innet.xdp")

BPFFS = Path("/sys/fs/bpf")
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4
PORT_MAP = "tx_ports"   # DEVMAP of the NF's interfaces, when the program redirects
PORT_MACS_MAP = "port_macs"   # the interfaces' MACs, when the program checks them (include/port_macs.h)
PORT_MAC_SLOTS, PORT_MAC_PROBES = 256, 4   # as include/port_macs.h defines them
OWN_IPV4_MAP = "own_ipv4"   # the node's IPv4 addresses, when the program checks sources (include/own_ipv4.h)
OWN_IPV4_SLOT_BITS, OWN_IPV4_PROBES, OWN_IPV4_HASH = 10, 8, 0x9E3779B1   # as include/own_ipv4.h defines them
XDP, TC_EGRESS = "xdp", "tc_egress"


def write_port_macs(macs_map: libbpf.BpfMap, macs: dict[int, bytes], where: str) -> None:
    """Put each interface's MAC (ifindex -> 6 bytes) in a port_macs array: in slot ifindex %
    PORT_MAC_SLOTS, or the first of the next ones that is free or its own already."""
    for ifindex, mac in macs.items():
        for probe in range(PORT_MAC_PROBES):
            key = struct.pack("=I", (ifindex + probe) % PORT_MAC_SLOTS)
            if struct.unpack_from("=I", macs_map.lookup(key))[0] in (0, ifindex):
                macs_map.update(key, struct.pack("=I6sH", ifindex, mac, 0))
                break
        else:
            raise TargetError(f"{where}: interface {ifindex}'s port_macs slots are all taken by other interfaces",
                              hint="deploy on fewer interfaces; the router cannot tell its own frames apart")


def write_own_ipv4(addrs_map: libbpf.BpfMap, addresses: list[bytes], where: str) -> None:
    """Lay the IPv4 addresses (4 bytes each, as packets carry them) out as an own_ipv4 array
    and write all of it, so an address gone since the last write is gone from it too: each in
    the slot its hash gives or the first free one of the next ones."""
    slots = [0] * (1 << OWN_IPV4_SLOT_BITS)
    for packed in dict.fromkeys(addresses):
        word = int.from_bytes(packed, sys.byteorder)   # the program reads it as a native u32
        first = (word * OWN_IPV4_HASH & 0xFFFFFFFF) >> (32 - OWN_IPV4_SLOT_BITS)
        for probe in range(OWN_IPV4_PROBES):
            slot = (first + probe) % len(slots)
            if slots[slot] == 0:
                slots[slot] = word
                break
        else:
            raise TargetError(f"{where}: the own_ipv4 slots of {socket.inet_ntoa(packed)} are all taken by other "
                              f"addresses ({len(addresses)} in all)",
                              hint="the router checks sources against at most about 128 IPv4 addresses of its node")
    addrs_map.update_many(struct.pack(f"={len(slots)}I", *range(len(slots))), struct.pack(f"={len(slots)}I", *slots))


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf if it is not there yet."""
    if os.path.ismount(BPFFS):
        return
    if os.geteuid() != 0:
        raise BpfError("bpffs is not mounted at /sys/fs/bpf", errno=errno.EPERM)
    if os.system("mount -t bpf bpf /sys/fs/bpf") != 0:
        raise BpfError("cannot mount bpffs at /sys/fs/bpf", hint="mount -t bpf bpf /sys/fs/bpf")


def _instance_of(pin: Path) -> str:
    """The instance a pin directory <instance>@<generation> belongs to."""
    return pin.name.rpartition("@")[0] or pin.name


def _generation(pin_name: str) -> int:
    gen = pin_name.rpartition("@")[2]
    return int(gen) if gen.isdigit() else 0


def _pinned_id(pin: Path) -> int | None:
    """The id of the program pinned in `pin` (None: none is)."""
    try:
        fd = libbpf.get_pinned(str(pin / PROG_PIN))
    except BpfError:
        return None
    try:
        return libbpf.prog_id(fd)
    finally:
        os.close(fd)


def _fd_by_id(prog_id: int | None) -> int | None:
    try:
        return libbpf.prog_fd_by_id(prog_id) if prog_id else None
    except BpfError:
        return None   # unloaded: nothing keeps it any more


class XdpHook:
    """The XDP hook of interfaces (IFLA_XDP); TcEgressHook offers the same steps for tc egress."""

    what = "XDP"

    @staticmethod
    def detach_hint(ifname: str) -> str:
        return f"detach it first: ip link set dev {ifname} xdp off"

    @staticmethod
    def attached(link) -> int | None:
        """The program id on a link message's XDP hook."""
        xdp = link.get("xdp")
        return xdp.get("IFLA_XDP_PROG_ID") if xdp else None

    @staticmethod
    def prog_id(ipr: IPRoute, ifindex: int) -> int | None:
        return XdpHook.attached(ipr.get_links(ifindex)[0])

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


def _hook(kind: str, instance: str) -> XdpHook | TcEgressHook:
    return TcEgressHook(instance) if kind == TC_EGRESS else XdpHook()


def _hook_kind(program: dict) -> str:
    """Where a catalog XDP program entry runs: XDP, or tc egress when it says so."""
    return TC_EGRESS if program.get("hook") == TC_EGRESS else XDP


@dataclass(frozen=True)
class _Link:
    """What one interface of a node runs: its XDP program and innet's tc egress filters."""
    ifindex: int
    xdp: int | None
    tc: dict[str, int]   # instance -> program id


class _Changes:
    """The hooks and program-array slots (chain_next, forwarders' NF slots) a deploy changed, to
    put back if it fails. The programs that ran there are held open meanwhile, so they come back
    even if nothing else keeps them."""

    def __init__(self, node: Node):
        self.node = node
        self.hooks: list[tuple[str, int, XdpHook | TcEgressHook, int | None]] = []
        self.slots: list[tuple[Path, str, int, int | None]] = []
        self.fds: dict[int, int] = {}

    def _hold(self, prog_id: int | None) -> None:
        if prog_id and prog_id not in self.fds:
            fd = _fd_by_id(prog_id)
            if fd is not None:
                self.fds[prog_id] = fd

    def hook(self, ifname: str, ifindex: int, hook: XdpHook | TcEgressHook, before: int | None) -> None:
        self._hold(before)
        self.hooks.append((ifname, ifindex, hook, before))

    def slot(self, pin: Path, before: int | None, map_name: str = chain.NEXT_MAP, index: int = 0) -> None:
        self._hold(before)
        self.slots.append((pin, map_name, index, before))

    def revert(self) -> None:
        """Newest first, best effort: a step that fails is logged and the others still run."""
        for pin, map_name, index, before in reversed(self.slots):
            try:
                chain.write_slot(pin, map_name, index, self.fds.get(before))
            except Exception as exc:   # noqa: BLE001 - put back the rest anyway
                log.warning("cannot put back %s's %s[%d]: %s", pin.name, map_name, index, exc)
        if not self.hooks:
            return
        try:
            with netns(self.node.netns), IPRoute() as ipr:
                for ifname, ifindex, hook, before in reversed(self.hooks):
                    try:
                        if before in self.fds:
                            hook.attach(ipr, self.node, ifname, ifindex, self.fds[before])
                        else:
                            hook.detach(ipr, ifindex, None)
                    except Exception as exc:   # noqa: BLE001
                        log.warning("cannot put back the %s hook of %s:%s: %s", hook.what, self.node.name, ifname,
                                    exc)
        except TopologyError:
            pass   # the namespace is gone, and its hooks with it

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass
class _Opened:
    """A deployed instance: its record, its NF's spec and its pinned maps, open."""
    instance: str
    meta: dict
    nf: NFSpec
    maps: dict[str, libbpf.BpfMap]

    @property
    def obj(self) -> Path:
        return Path(self.meta["object"])

    def close(self) -> None:
        for m in self.maps.values():
            m.close()

    def __enter__(self) -> "_Opened":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class XdpTarget(Target, QueueingTarget):
    kind = "xdp"

    # ---- where things are ----------------------------------------------------------------
    def node_pins(self, node: str) -> Path:
        """The node's pin directory: one subdirectory per instance generation."""
        return self.scope.pin_root / node

    def pin_dir(self, node: Node, instance: str) -> Path:
        """Where the instance's program (chain.PROG_PIN) and maps are pinned now."""
        return self.node_pins(node.name) / self._deployed(node, instance)["pin"]

    def _pin_dirs(self, node: Node, instance: str | None = None) -> list[Path]:
        """The node's pin directories (with `instance`: that instance's, every generation found)."""
        root = self.node_pins(node.name)
        dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return [d for d in dirs if instance is None or _instance_of(d) == instance]

    def _fresh_pin(self, node: Node, instance: str, meta: dict | None) -> Path:
        """A pin directory for the instance's next generation, above every one recorded or found."""
        gens = [_generation(p.name) for p in self._pin_dirs(node, instance)]
        gens += [_generation(meta["pin"])] if meta else []
        return self.node_pins(node.name) / f"{instance}@{max(gens, default=0) + 1}"

    def _drop_empty_node_dir(self, node: Node) -> None:
        root = self.node_pins(node.name)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    def _record(self, node: Node, instance: str) -> dict | None:
        return self.records.get(node.name, record_key(instance))

    def _deployed(self, node: Node, instance: str) -> dict:
        meta = self._record(node, instance)
        if meta is None:
            raise TargetError(f"{instance} is not deployed on {node.name}",
                              hint=f"deploy it first: innet nf deploy {node.name} {instance}")
        return meta

    def _put(self, node: Node, instance: str, meta: dict) -> None:
        self.records.put(node.name, record_key(instance), meta)

    def _chains(self, node: Node) -> NodeChains:
        return NodeChains(node.name, self.records, self.node_pins(node.name))

    # ---- deployment -------------------------------------------------------------------
    def deploy(self, node: Node, instance: str, nf: NFSpec, interfaces: list[str],
               params: dict | None = None, behind: tuple[str, int] | None = None) -> Deployment:
        check_instance_id(instance)
        program = nf.xdp_program(behind=behind is not None)   # behind a forwarder: programs.xdp.behind, if any
        if not program:
            raise TargetError(f"NF {nf.name} has no XDP program", hint="deploy it on a bmv2 node instead")
        values = nf.resolve_parameters(params)
        interfaces = list(interfaces)
        if behind is not None and interfaces:
            raise TopologyError(f"{instance} runs behind forwarder {behind[0]}, so it takes no interfaces "
                                f"(given: {', '.join(interfaces)})",
                                hint="the forwarder hands it the packets of its service index")
        if behind is None and not interfaces:
            raise TopologyError(f"deploying {instance} on {node.name}: no interfaces given")
        links = node.interfaces()
        for ifname in interfaces:
            if ifname not in links:
                raise TopologyError(f"node {node.name} has no interface '{ifname}'",
                                    hint=f"its interfaces: {', '.join(sorted(links))}")
        defines = {p.xdp["define"]: values[p.name] for p in nf.parameters.values() if "define" in p.xdp}
        obj_path = compile_program(program["source"], defines)
        kind = _hook_kind(program)
        meta = self._record(node, instance)
        if meta and (meta["nf"], meta["hook"]) != (nf.name, kind):
            raise TargetError(f"{instance} on {node.name} runs {meta['nf']} ({meta['hook']}); it cannot become "
                              f"{nf.name} ({kind}) in place",
                              hint=f"remove it first (innet nf remove {node.name} {instance}), or pick another id")
        ensure_bpffs()
        if behind is not None:
            behind = self._check_behind(node, instance, nf, behind)
        if meta and meta.get("behind") != behind:
            now = f"behind {meta['behind'][0]} in slot {meta['behind'][1]}" if meta.get("behind") \
                else f"on {', '.join(meta['interfaces'])}"
            raise TargetError(f"{instance} on {node.name} runs {now}; it cannot move in place",
                              hint=f"remove it first (innet nf remove {node.name} {instance}), or deploy another "
                                   f"instance where it should go")
        self._clean_leftovers(node, instance, meta)
        new = {"nf": nf.name, "source": str(nf.source), "object": str(obj_path), "hook": kind,
               "chain": program.get("chain"), "params": values, "interfaces": interfaces,
               "ifindexes": {i: links[i]["ifindex"] for i in interfaces},
               "behind": behind, "nf_slots": program.get("nf_slots_map")}
        if meta is None:
            return self._first_deploy(node, instance, nf, new)
        same_program = (meta["object"], meta["params"]) == (new["object"], values) \
            and self._pins_problem(node, meta) is None \
            and all(meta["ifindexes"].get(i, idx) == idx for i, idx in new["ifindexes"].items())
        if same_program and meta["interfaces"] == interfaces and self._problem(node, instance, meta) is None:
            # what the program knows of the node (MACs, addresses) is read again: a deploy refreshes it
            self._fill_pinned_ports(node, self.node_pins(node.name) / meta["pin"], new["ifindexes"])
            log.info("%s already runs on %s (%s): its node's ports and addresses read again", instance, node.name,
                     ", ".join(interfaces))
            return self._deployment(node, instance, meta)
        return self._redeploy(node, instance, nf, meta, new, same_program)

    def _check_behind(self, node: Node, instance: str, nf: NFSpec, behind: tuple[str, int]) -> list:
        """`behind` as recorded ([forwarder, slot]), once the forwarder is deployed on the node, the
        slot is one of its own and free, and the NF can hand packets back (chain: pass, XDP)."""
        forwarder, slot = behind
        program = nf.xdp_program(behind=True)
        if not chain.passes(program, nf.name) or _hook_kind(program) != XDP:
            raise TargetError(f"{nf.name} cannot run behind a forwarder: only XDP NFs with `chain: {chain.PASS}` "
                              f"hand packets back to it",
                              hint=f"see {nf.source}: programs.xdp, or programs.xdp.behind if the NF has one")
        if forwarder == instance:
            raise TargetError(f"{instance} cannot run behind itself")
        fmeta = self._record(node, forwarder)
        if fmeta is None or not fmeta.get("nf_slots"):
            what = "is not deployed" if fmeta is None else \
                f"runs {fmeta['nf']}, which has no NF slots (catalog programs.xdp.nf_slots_map)"
            raise TargetError(f"{instance} cannot run behind {forwarder} on {node.name}: {forwarder} {what}",
                              hint=f"deploy a service function forwarder (sff) as {forwarder} first")
        broken = self._pins_problem(node, fmeta)
        if broken:
            raise TargetError(f"{instance} cannot run behind {forwarder} on {node.name}: {forwarder} is broken "
                              f"({broken})", hint=f"deploy {forwarder} again first")
        slots = libbpf.BpfMap.from_pin(str(self.node_pins(node.name) / fmeta["pin"] / fmeta["nf_slots"]))
        size = slots.max_entries
        slots.close()
        if type(slot) is not int or not 0 <= slot < size:
            raise TargetError(f"slot {slot!r} of {forwarder} on {node.name} does not exist: it has {size} NF slots",
                              hint=f"use 0..{size - 1}, or redeploy {forwarder} with more (sff: max_nfs)")
        holder = next((n for n, s in self._chains(node).behind(forwarder).items() if s == slot and n != instance), None)
        if holder:
            raise TargetError(f"slot {slot} of {forwarder} on {node.name} holds {holder}",
                              hint=f"use a free slot, or remove {holder} first")
        return [forwarder, slot]

    def _first_deploy(self, node: Node, instance: str, nf: NFSpec, new: dict) -> Deployment:
        hook = _hook(new["hook"], instance)
        chains = self._chains(node)
        attached, shared = self._survey(node, hook, new["ifindexes"])
        if new["behind"]:   # on no hook: it hands packets back to its forwarder
            placement = Placement(next=new["behind"][0])
        else:
            placement = self._place(node, instance, nf, hook, chains, None, attached, shared)
        pin = self._fresh_pin(node, instance, None)
        obj, prog_fd = self._load(node, nf, new, pin, chains, placement.next)
        changes = _Changes(node)
        try:
            modes = {}
            with netns(node.netns), IPRoute() as ipr:
                for ifname in placement.attach:
                    changes.hook(ifname, new["ifindexes"][ifname], hook, attached[ifname])
                    modes[ifname] = hook.attach(ipr, node, ifname, new["ifindexes"][ifname], prog_fd)
            for before in placement.after:   # behind these instances, in their chain_next
                changes.slot(chains.pins(before), chains.next_id(before))
                chains.set_next(before, prog_fd)
                for ifname in chains.metas[before]["interfaces"]:
                    modes.setdefault(ifname, chains.metas[before]["modes"].get(ifname))
            self._take_nf_slot(chains, new["behind"], prog_fd, changes)
            self._link_behind(node, chains, instance, prog_fd, changes)
            meta = {**new, "pin": pin.name, "prog_id": libbpf.prog_id(prog_fd), "modes": modes, "queues": {},
                    "next": placement.next}
            with self.records.store.write():
                self._put(node, instance, meta)
                self.records.drop_slots(node.name, instance)   # any left by a lost record: its maps are gone
                for before in placement.after:
                    chains.metas[before]["next"] = instance
                    chains.write_meta(before)
        except BaseException:
            changes.revert()
            shutil.rmtree(pin, ignore_errors=True)
            self._drop_empty_node_dir(node)
            raise
        finally:
            changes.close()
            obj.close()
        where = ", ".join(f"{i} ({m})" for i, m in modes.items())
        if new["behind"]:
            where = f"behind {new['behind'][0]} in slot {new['behind'][1]}"
        elif placement.next:
            where += f"; in front of {placement.next}"
        if placement.after:
            where += f"; behind {', '.join(placement.after)}"
        log.info("%s (%s) deployed on %s: %s", instance, nf.name, node.name, where)
        return self._deployment(node, instance, meta, cleared=(instance,))

    def _redeploy(self, node: Node, instance: str, nf: NFSpec, meta: dict, new: dict, same_program: bool) -> Deployment:
        """Run the instance as `new` says, where it ran: with its own pins when the program is the
        same (its state stays), else as a new generation that takes every place of the old one."""
        hook = _hook(meta["hook"], instance)
        chains = self._chains(node)
        old_id, old_pin = meta["prog_id"], self.node_pins(node.name) / meta["pin"]
        attached, shared = self._survey(node, hook, new["ifindexes"])
        placement = self._place(node, instance, nf, hook, chains, meta, attached, shared)
        follows = meta["next"] if meta["next"] in chains.metas else None   # its next may have lost its record
        elsewhere = self._running_elsewhere(node, instance, old_id, new["interfaces"])
        queues = meta["queues"] if same_program else self._queues_that_fit(node, nf, meta, new)
        queues = {i: q for i, q in queues.items() if i in new["interfaces"]}
        if same_program:
            pin, obj, prog_fd = old_pin, None, libbpf.get_pinned(str(old_pin / PROG_PIN))
        else:
            pin = self._fresh_pin(node, instance, meta)
            obj, prog_fd = self._load(node, nf, new, pin, chains, follows)
        changes = _Changes(node)
        try:
            if same_program:   # its port map, chain_next and NF slots may have lost what they held
                self._fill_pinned_ports(node, pin, new["ifindexes"])
                chains.link(pin, follows)
                if new["nf_slots"]:
                    self._fill_nf_slots(node, chains, instance, pin, new["nf_slots"])
            elif queues:   # the HTB trees stay; the new classifier needs their classes
                self._write_classes(obj.maps[nf.programs["xdp"]["classes_map"]], _classes(queues))
            modes = {i: m for i, m in meta["modes"].items() if i in new["interfaces"]}
            with netns(node.netns), IPRoute() as ipr:
                for ifname, ifindex in elsewhere.items():
                    changes.hook(ifname, ifindex, hook, old_id)
                    hook.detach(ipr, ifindex, old_id)
                for ifname in placement.attach:
                    changes.hook(ifname, new["ifindexes"][ifname], hook, attached[ifname])
                    modes[ifname] = hook.attach(ipr, node, ifname, new["ifindexes"][ifname], prog_fd)
            for before in placement.after:
                changes.slot(chains.pins(before), chains.next_id(before))
                chains.set_next(before, prog_fd)
            self._take_nf_slot(chains, new["behind"], prog_fd, changes)
            self._link_behind(node, chains, instance, prog_fd, changes)
            if not same_program:   # wherever else the old program still ran
                self._sweep(node, {old_id}, prog_fd, changes, generation=True)
            updated = {**meta, **new, "pin": pin.name, "prog_id": libbpf.prog_id(prog_fd), "modes": modes,
                       "queues": queues, "next": follows}
            with self.records.store.write():
                self._put(node, instance, updated)
                if not same_program:   # the new maps hold no entry yet
                    self.records.drop_slots(node.name, instance)
        except BaseException:
            changes.revert()
            if not same_program:
                shutil.rmtree(pin, ignore_errors=True)
            raise
        finally:
            changes.close()
            if obj is not None:
                obj.close()
            else:
                os.close(prog_fd)
        if not same_program:
            shutil.rmtree(old_pin, ignore_errors=True)
        self._remove_queues(node, meta, [i for i in meta["queues"] if i not in queues])
        what = "placed again" if same_program else f"replaced by generation {_generation(pin.name)}, its maps empty"
        log.info("%s on %s %s: %s", instance, node.name, what, ", ".join(new["interfaces"]))
        return self._deployment(node, instance, updated, cleared=() if same_program else (instance,))

    def _load(self, node: Node, nf: NFSpec, new: dict, pin: Path, chains: NodeChains,
              follows: str | None) -> tuple[libbpf.BpfObject, int]:
        """Load the object with its maps pinned in the fresh directory `pin`, pin its program
        there (before it runs anywhere), point its chain_next at instance `follows` and fill its
        port map. Returns the object (the caller closes it) and the program's fd; on failure
        the directory is gone again."""
        program = nf.xdp_program(behind=bool(new["behind"]))
        pin.mkdir(parents=True)
        obj = None
        try:
            obj = libbpf.BpfObject(new["object"], pin_dir=str(pin)).load()
            entry = program.get("entry") or next(iter(obj.programs))
            if entry not in obj.programs:
                raise TargetError(f"{new['object']} has no program '{entry}' (it has {', '.join(obj.programs)})")
            if chain.passes(program, nf.name) and chain.NEXT_MAP not in obj.maps:
                raise TargetError(f"{nf.name} is `chain: {chain.PASS}` but {program['source']} has no "
                                  f"{chain.NEXT_MAP} map", hint="end the program in chain_pass (ebpf/include/chain.h)")
            prog_fd = obj.programs[entry]
            libbpf.pin(prog_fd, str(pin / PROG_PIN))
            if chain.NEXT_MAP in obj.maps:
                chains.link(pin, follows, obj.maps[chain.NEXT_MAP])
            if PORT_MAP in obj.maps:
                self._fill_ports(node, obj.maps[PORT_MAP], new["ifindexes"])
            if PORT_MACS_MAP in obj.maps:
                self._fill_port_macs(node, obj.maps[PORT_MACS_MAP], new["ifindexes"])
            if OWN_IPV4_MAP in obj.maps:
                self._fill_own_ipv4(node, obj.maps[OWN_IPV4_MAP], new["ifindexes"])
            if new["nf_slots"]:
                if new["nf_slots"] not in obj.maps:
                    raise TargetError(f"{nf.name}'s catalog entry names NF slots {new['nf_slots']}, but "
                                      f"{program['source']} has no such map", hint=f"fix {nf.source}")
                self._fill_nf_slots(node, chains, _instance_of(pin), pin, new["nf_slots"], obj.maps[new["nf_slots"]])
            return obj, prog_fd
        except BaseException:
            if obj is not None:
                obj.close()
            shutil.rmtree(pin, ignore_errors=True)
            raise

    @staticmethod
    def _fill_ports(node: Node, port_map: libbpf.BpfMap, ifindexes: dict[str, int]) -> None:
        with netns(node.netns):   # DEVMAP resolves ifindexes in the caller's namespace
            for ifindex in ifindexes.values():
                key = struct.pack("=I", ifindex)
                port_map.update(key, key)

    @staticmethod
    def _fill_port_macs(node: Node, macs_map: libbpf.BpfMap, ifindexes: dict[str, int]) -> None:
        links = node.interfaces()
        write_port_macs(macs_map, {idx: mac_bytes(links[i]["mac"]) for i, idx in ifindexes.items()}, node.name)

    @staticmethod
    def _fill_own_ipv4(node: Node, addrs_map: libbpf.BpfMap, ifindexes: dict[str, int]) -> None:
        """Every IPv4 address of the node's namespace, on whichever interface: the kernel's
        `local` table, which it checks a forwarded packet's source against."""
        with netns(node.netns), IPRoute() as ipr:
            addresses = [socket.inet_aton(a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"))
                         for a in ipr.get_addr(family=socket.AF_INET)]
        write_own_ipv4(addrs_map, addresses, node.name)

    def _fill_pinned_ports(self, node: Node, pin: Path, ifindexes: dict[str, int]) -> None:
        for name, fill in ((PORT_MAP, self._fill_ports), (PORT_MACS_MAP, self._fill_port_macs),
                           (OWN_IPV4_MAP, self._fill_own_ipv4)):
            if (pin / name).exists():
                pinned = libbpf.BpfMap.from_pin(str(pin / name))
                try:
                    fill(node, pinned, ifindexes)
                finally:
                    pinned.close()

    # ---- instances behind a forwarder -----------------------------------------------------
    @staticmethod
    def _take_nf_slot(chains: NodeChains, behind: list | None, prog_fd: int, changes: _Changes) -> None:
        """Put the program of an instance behind a forwarder (`behind`: [forwarder, slot]) in its slot."""
        if not behind:
            return
        forwarder, slot = behind
        pin, slots_map = chains.pins(forwarder), chains.metas[forwarder]["nf_slots"]
        changes.slot(pin, chain.read_slot(pin, slots_map, slot), slots_map, slot)
        chain.write_slot(pin, slots_map, slot, prog_fd)

    def _intact_behind(self, node: Node, chains: NodeChains, forwarder: str) -> list[str]:
        """The instances behind `forwarder` whose programs are there to link; a broken one says so
        in deployments(), and its own redeploy links it again."""
        return [n for n in chains.behind(forwarder) if self._pins_problem(node, chains.metas[n]) is None]

    def _link_behind(self, node: Node, chains: NodeChains, forwarder: str, prog_fd: int, changes: _Changes) -> None:
        """Point the chain_next of the instances behind `forwarder` at its program `prog_fd`: they
        hand packets back to it (also those left behind by an earlier forwarder of that id)."""
        prog_id = libbpf.prog_id(prog_fd)
        for name in self._intact_behind(node, chains, forwarder):
            before = chains.next_id(name)
            if before != prog_id:
                changes.slot(chains.pins(name), before)
                chains.set_next(name, prog_fd)

    def _fill_nf_slots(self, node: Node, chains: NodeChains, forwarder: str, pin: Path, slots_map: str,
                       opened: libbpf.BpfMap | None = None) -> None:
        """Put the programs of the instances behind `forwarder` in its NF slots (the map pinned in
        `pin`, or `opened`, that map of a generation being loaded)."""
        for name in self._intact_behind(node, chains, forwarder):
            fd = chains.program_fd(name)
            try:
                chain.write_slot(pin, slots_map, chains.metas[name]["behind"][1], fd, opened)
            finally:
                os.close(fd)

    @staticmethod
    def _survey(node: Node, hook, ifindexes: dict[str, int]) -> tuple[dict[str, int | None], dict[str, list[str]]]:
        """What each interface's hook runs now; for tc egress, also which other instances' filters are there."""
        with netns(node.netns), IPRoute() as ipr:
            attached = {i: hook.prog_id(ipr, idx) for i, idx in ifindexes.items()}
            shared = {i: hook.others(ipr, idx) for i, idx in ifindexes.items()} \
                if isinstance(hook, TcEgressHook) else {}
        return attached, shared

    def _running_elsewhere(self, node: Node, instance: str, prog_id: int, interfaces: list[str]) -> dict[str, int]:
        """Interfaces outside `interfaces` whose hook runs the instance's program (ifname -> ifindex)."""
        links = self._links(node) or {}
        return {i: link.ifindex for i, link in links.items()
                if i not in interfaces and prog_id in (link.xdp, link.tc.get(instance))}

    def _place(self, node: Node, instance: str, nf: NFSpec, hook, chains: NodeChains, meta: dict | None,
               attached: dict[str, int | None], shared: dict[str, list[str]]) -> Placement:
        """Where the instance goes on its interfaces' hooks; refuses programs that are not innet's."""
        own = (meta or {}).get("prog_id")
        for ifname, prog_id in attached.items():
            if prog_id and prog_id != own and chains.owner(prog_id) is None:
                raise TargetError(f"{node.name}:{ifname} already runs {hook.what} program id {prog_id}, "
                                  f"not this deployment's", hint=hook.detach_hint(ifname))
        for ifname, others in sorted(shared.items()):
            if others:
                raise TargetError(f"{node.name}:{ifname} already runs {others[0]} at its tc egress, and one tc "
                                  f"egress NF per interface classifies its packets",
                                  hint=f"remove {others[0]} first (innet nf remove {node.name} {others[0]}), "
                                       f"or deploy {instance} on other interfaces")
        if not isinstance(hook, XdpHook):   # one NF per hook: no chains
            return Placement(attach=list(attached))
        if meta is None:
            return chains.place(instance, chain.passes(nf.programs["xdp"], nf.name), attached)
        # a redeploy: the program takes its places again (hooks and chain_next slots)
        placement = Placement(attach=[i for i, p in attached.items() if not p or p == own],
                              after=chains.predecessors(instance))
        for ifname, prog_id in sorted(attached.items()):
            if prog_id and prog_id != own and instance not in chains.walk(prog_id):
                raise TargetError(f"{node.name}:{ifname} runs {chains.describe(prog_id)}, without {instance}",
                                  hint=f"remove {instance} first (innet nf remove {node.name} {instance}), then "
                                       f"deploy it again: it then joins that chain")
        chained = placement.after or meta["next"]
        if chained and set(attached) != set(meta["interfaces"]):
            raise TargetError(f"{instance} is chained with other NFs on {node.name} "
                              f"({', '.join(meta['interfaces'])}); its interfaces cannot change in place",
                              hint=f"remove it first (innet nf remove {node.name} {instance}), then deploy again")
        return placement

    def _queues_that_fit(self, node: Node, nf: NFSpec, meta: dict, new: dict) -> dict:
        """The queue configurations that fit the new parameters; the others are dropped (configure them again)."""
        kept = {}
        for ifname, q in meta["queues"].items():
            try:
                check_levels(nf, new["params"], f"{node.name}:{ifname}", q["link_rate_bps"],
                             [QueueLevel(*level) for level in q["levels"]])
                kept[ifname] = q
            except QueueError as exc:
                log.warning("%s: the queues of %s do not fit its new parameters (%s); removing them",
                            node.name, nf.name, exc.message)
        return kept

    def _clean_leftovers(self, node: Node, instance: str, meta: dict | None) -> None:
        """Pin directories of the instance that its record does not hold are what an interrupted
        deploy left: their programs give way to the recorded one (or, with none, to what they
        called next) wherever they still run, then they go."""
        for pin in self._pin_dirs(node, instance):
            if meta is None or pin.name != meta["pin"]:
                log.warning("%s on %s: removing %s, left by an interrupted deploy", instance, node.name, pin.name)
                self._drop_pins(node, pin, meta)

    def _drop_pins(self, node: Node, pin: Path, instead: dict | None) -> None:
        """Remove a pin directory no record holds; its program, wherever it runs, is replaced by
        `instead`'s (a record of the same instance) when that is intact, else by its own successor."""
        intact = instead is not None and self._pins_problem(node, instead) is None
        self._replace(node, {_pinned_id(pin)} - {None}, instead["prog_id"] if intact else chain.read_next(pin),
                      generation=intact)
        shutil.rmtree(pin, ignore_errors=True)

    # ---- reading back --------------------------------------------------------------------
    def deployments(self, node: Node) -> list[Deployment]:
        chains, links = self._chains(node), self._links(node)
        return [self._deployment(node, i, m, self._problem(node, i, m, chains, links)) for i, m in chains.metas.items()]

    def deployment(self, node: Node, instance: str) -> Deployment | None:
        meta = self._record(node, instance)
        return None if meta is None else self._deployment(node, instance, meta, self._problem(node, instance, meta))

    def _deployment(self, node: Node, instance: str, meta: dict, problem: str | None = None,
                    cleared: tuple[str, ...] = ()) -> Deployment:
        behind = meta.get("behind")
        return Deployment(node.name, instance, meta["nf"], self.kind, tuple(meta["interfaces"]), meta["params"],
                          dict(meta["modes"]), problem, cleared, tuple(behind) if behind else None)

    def _links(self, node: Node) -> dict[str, _Link] | None:
        """What every interface of the node runs (None: the node's namespace is gone)."""
        try:
            with netns(node.netns), IPRoute() as ipr:
                return {link.get("ifname"): _Link(link["index"], XdpHook.attached(link),
                                                  {f.instance: f.prog_id for f in tc.innet_filters(ipr, link["index"])})
                        for link in ipr.get_links()}
        except TopologyError:
            return None

    def _problem(self, node: Node, instance: str, meta: dict, chains: NodeChains | None = None,
                 links: dict[str, _Link] | None = None) -> str | None:
        """What is wrong with a recorded instance; None when it runs as recorded."""
        chains = chains or self._chains(node)
        problem = self._pins_problem(node, meta) or self._slot_problem(node, meta, chains)
        if problem:
            return problem
        successor = meta["next"]
        if successor and chain.read_next(self.node_pins(node.name) / meta["pin"]) != \
                chains.metas.get(successor, {}).get("prog_id"):
            return f"its {chain.NEXT_MAP} does not call {successor}"
        links = links if links is not None else self._links(node)
        if links is None:
            return f"its namespace {node.netns} is gone"
        for ifname in meta["interfaces"]:
            link = links.get(ifname)
            if link is None:
                return f"interface {ifname} is gone"
            if link.ifindex != meta["ifindexes"][ifname]:
                return f"interface {ifname} was made anew (ifindex {link.ifindex}, not {meta['ifindexes'][ifname]})"
            if meta["hook"] == TC_EGRESS:
                if link.tc.get(instance) != meta["prog_id"]:
                    return f"not attached to {ifname}'s tc egress"
            elif instance not in chains.walk(link.xdp):
                return f"not on {ifname}'s XDP hook, which runs {chains.describe(link.xdp)}"
        return None

    def _slot_problem(self, node: Node, meta: dict, chains: NodeChains) -> str | None:
        """For an instance behind a forwarder: what keeps the forwarder from running it (None: nothing)."""
        if not meta.get("behind"):
            return None
        forwarder, slot = meta["behind"]
        fmeta = chains.metas.get(forwarder)
        if fmeta is None:
            return f"its forwarder {forwarder} is not deployed"
        held = chain.read_slot(self.node_pins(node.name) / fmeta["pin"], fmeta["nf_slots"], slot)
        if held != meta["prog_id"]:
            return f"slot {slot} of {forwarder}'s {fmeta['nf_slots']} " + \
                ("is empty" if held is None else f"holds program id {held}, not its program (id {meta['prog_id']})")
        return None

    def _pins_problem(self, node: Node, meta: dict) -> str | None:
        """What is missing of the instance's pins and object (None: nothing)."""
        pin = self.node_pins(node.name) / meta["pin"]
        if not pin.is_dir():
            return f"its pins are gone ({pin})"
        pinned = _pinned_id(pin)
        if pinned is None:
            return f"its program is not pinned ({pin / PROG_PIN})"
        if pinned != meta["prog_id"]:
            return f"the program pinned at {pin} (id {pinned}) is not its recorded one (id {meta['prog_id']})"
        obj = Path(meta["object"])
        if not obj.exists():
            return f"its compiled object {obj} is gone"
        missing = sorted(name for name in _object_maps(obj) if not (pin / name).exists())
        if missing:
            return f"maps {', '.join(missing)} are not pinned in {pin}"
        return None

    # ---- removal -------------------------------------------------------------------------
    def remove(self, node: Node, instance: str) -> bool:
        meta = self._record(node, instance)
        pins = self._pin_dirs(node, instance)
        if meta is None and not pins:
            return False
        chains = self._chains(node)
        programs = {_pinned_id(p) for p in pins} | ({meta["prog_id"]} if meta else set())
        successor = self._successor(chains, meta, pins)
        # the chain closes over the instance before its program and maps go: whatever ran it
        # (hooks, predecessors' chain_next) runs its successor; a forwarder's slot holding it is emptied
        self._replace(node, programs - {None}, successor, generation=False)
        if meta:
            self._remove_queues(node, meta, list(meta["queues"]))
        after = meta["next"] if meta else chains.owner(successor)
        with self.records.store.write():
            for before in chains.predecessors(instance):
                chains.metas[before]["next"] = after
                chains.write_meta(before)
            self.records.delete(node.name, record_key(instance))
            self.records.drop_slots(node.name, instance)
        for pin in pins:
            shutil.rmtree(pin, ignore_errors=True)
        self._drop_empty_node_dir(node)
        log.info("%s removed from %s", instance, node.name)
        return True

    def _successor(self, chains: NodeChains, meta: dict | None, pins: list[Path]) -> int | None:
        """The program that runs after the instance's: the one in its chain_next (its recorded
        generation's first), else its recorded next's."""
        for pin in sorted(pins, key=lambda p: p.name != (meta or {}).get("pin")):
            found = chain.read_next(pin)
            if found:
                return found
        after = (meta or {}).get("next")
        return chains.metas[after]["prog_id"] if after in chains.metas else None

    def prune(self, node: Node, keep: set[str]) -> list[str]:
        removed = []
        innet = self._innet_programs(node)   # found before anything goes: what to look for on the hooks
        for instance in sorted(set(self._chains(node).metas) - set(keep)):
            self.remove(node, instance)
            removed.append(f"instance {instance}")
        kept = self._chains(node).metas
        for pin in self._pin_dirs(node):
            meta = kept.get(_instance_of(pin))
            if meta is None or pin.name != meta["pin"]:
                self._drop_pins(node, pin, meta)
                removed.append(f"pins {pin.name}")
        removed += self._detach_strays(node, innet - {m["prog_id"] for m in kept.values()}, kept)
        self._drop_empty_node_dir(node)
        return removed

    def _innet_programs(self, node: Node) -> set[int]:
        """Programs innet answers for: the node's recorded ones and every one pinned under the scope's pin root."""
        ids = {m["prog_id"] for m in self._chains(node).metas.values()}
        root = self.scope.pin_root
        for prog in (root.glob(f"*/*/{PROG_PIN}") if root.is_dir() else ()):
            ids.add(_pinned_id(prog.parent))
        return ids - {None}

    def _detach_strays(self, node: Node, stray: set[int], kept: dict[str, dict]) -> list[str]:
        """Take off the node's hooks what an interrupted deploy left there: innet programs of no
        kept instance, and kept instances' programs on interfaces outside their records."""
        done = []
        by_program = {m["prog_id"]: m for m in kept.values()}
        try:
            with netns(node.netns), IPRoute() as ipr:
                for link in ipr.get_links():
                    ifname, ifindex, prog_id = link.get("ifname"), link["index"], XdpHook.attached(link)
                    meta = by_program.get(prog_id)
                    if prog_id in stray or (meta and ifname not in meta["interfaces"]):
                        XdpHook.detach(ipr, ifindex, prog_id)
                        done.append(f"XDP program id {prog_id} on {ifname}")
                    for f in tc.innet_filters(ipr, ifindex):
                        meta = kept.get(f.instance)
                        if f.prog_id in stray or (meta and ifname not in meta["interfaces"]):
                            tc.delete_filter(ipr, ifindex, f)
                            done.append(f"tc egress program id {f.prog_id} on {ifname}")
        except TopologyError:
            pass   # the namespace is gone, and its hooks with it
        return done

    def _replace(self, node: Node, old: set[int], prog_id: int | None, generation: bool) -> None:
        """_sweep to the program with id `prog_id` (None, or unloaded: to nothing)."""
        fd = _fd_by_id(prog_id)
        try:
            self._sweep(node, old, fd, generation=generation)
        finally:
            if fd is not None:
                os.close(fd)

    def _sweep(self, node: Node, old: set[int], new_fd: int | None, changes: _Changes | None = None,
               generation: bool = False) -> None:
        """Run `new_fd`'s program (None: nothing) wherever one of the `old` programs runs on the
        node: in the chain_next slots pinned for it, on its interfaces' XDP hooks and in innet's
        tc egress filters. All are found by program id, so no record of where is needed.
        Forwarders' NF slots holding an old program take `new_fd` only if it is a `generation` of
        the same instance; else they are emptied (an NF's successor is its forwarder: no stand-in)."""
        if not old:
            return
        for pin in self._pin_dirs(node):
            before = chain.read_next(pin)
            if before in old:
                if changes:
                    changes.slot(pin, before)
                chain.write_next(pin, new_fd)
        for meta in self._chains(node).metas.values():
            slots_map = meta.get("nf_slots")
            pin = self.node_pins(node.name) / meta["pin"]
            for index, before in (chain.program_slots(pin, slots_map) if slots_map else {}).items():
                if before in old:
                    if changes:
                        changes.slot(pin, before, slots_map, index)
                    chain.write_slot(pin, slots_map, index, new_fd if generation else None)
        try:
            with netns(node.netns), IPRoute() as ipr:
                for link in ipr.get_links():
                    self._sweep_link(ipr, node, link, old, new_fd, changes)
        except TopologyError:
            log.info("%s: namespace gone, and its hooks with it", node.name)

    @staticmethod
    def _sweep_link(ipr: IPRoute, node: Node, link, old: set[int], new_fd: int | None,
                    changes: _Changes | None) -> None:
        ifname, ifindex = link.get("ifname"), link["index"]
        before = XdpHook.attached(link)
        if before in old:
            if changes:
                changes.hook(ifname, ifindex, XdpHook(), before)
            if new_fd is None:
                XdpHook.detach(ipr, ifindex, before)
            else:
                XdpHook.attach(ipr, node, ifname, ifindex, new_fd)
        for f in tc.innet_filters(ipr, ifindex):
            if f.prog_id in old:
                hook = TcEgressHook(f.instance)
                if changes:
                    changes.hook(ifname, ifindex, hook, f.prog_id)
                if new_fd is None:
                    tc.delete_filter(ipr, ifindex, f)
                else:
                    hook.attach(ipr, node, ifname, ifindex, new_fd)

    # ---- tables -----------------------------------------------------------------------
    def _open(self, node: Node, instance: str) -> _Opened:
        meta = self._deployed(node, instance)
        pin = self.node_pins(node.name) / meta["pin"]
        if not pin.is_dir():
            raise TargetError(f"{instance} on {node.name} has no pins at {pin}",
                              hint=f"deploy it again: innet nf deploy {node.name} {instance}")
        nf = _nf_of(meta)
        maps = {}
        try:
            for p in pin.iterdir():
                if p.name != PROG_PIN:
                    maps[p.name] = libbpf.BpfMap.from_pin(str(p))
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return _Opened(instance, meta, nf, maps)

    # Counter slots: each entry's counters live in a slot of a shared per-CPU array, held by the
    # entry ("<table map>/<key hex>") in DataplaneRecords. The record says whether an exact key
    # exists, which an LPM trie's lookup cannot (it returns the longest match: maybe a shorter
    # prefix). A slot is claimed before its entry is written and released after the entry is
    # deleted: a crash in between can leak a slot, never hand one to two entries.
    def write(self, node: Node, instance: str, entries: list[TableEntry]) -> None:
        if not entries:
            return
        with self._open(node, instance) as opened:
            batches = _encode(opened, entries, with_action=True)
            claimed = self._claim_slots(node, instance, batches)
            for b in batches:   # open before the first entry: a crash leaves it open, never shut on entries
                _set_gate(opened, b.codec.table, True)
            written = []
            try:
                for b in batches:
                    written.append(b)
                    b.apply()
            except BaseException:
                for b in reversed(written):
                    b.undo()
                for counters_map, holders in claimed.items():
                    self.records.release_slots(node.name, instance, counters_map, holders)
                raise

    def _claim_slots(self, node: Node, instance: str, batches: list["_Batch"]) -> dict[str, list[str]]:
        """A counter slot for every entry, one claim per counters map, all in one transaction;
        returns the holders that claimed a slot just now, by counters map."""
        by_map: dict[str, list[_Batch]] = {}
        for b in batches:
            if b.codec.counters_map is not None:
                by_map.setdefault(b.codec.counters_name, []).append(b)
        claimed, found = {}, []
        with self.records.store.write():   # no other writer claims between reading and claiming
            for counters_map, group in by_map.items():
                holders = [h for b in group for h in b.holders]
                held = self.records.slots(node.name, instance, counters_map)
                slots = self.records.claim_slots(node.name, instance, counters_map, holders,
                                                 group[0].codec.counters_map.max_entries)
                claimed[counters_map] = [h for h in dict.fromkeys(holders) if h not in held]
                found += [(b, slots, held) for b in group]
        for b, slots, held in found:
            b.assign_slots(slots, held)
        for b in batches:
            if b.codec.counters_map is None:
                b.find_existing()
        return claimed

    def delete(self, node: Node, instance: str, entries: list[TableEntry]) -> int:
        if not entries:
            return 0
        with self._open(node, instance) as opened:
            deleted = 0
            for b in _encode(opened, entries, with_action=False):
                deleted += b.codec.table_map.delete_many(b"".join(b.keys))
                if b.codec.counters_map is not None:   # released after the entries are gone
                    self.records.release_slots(node.name, instance, b.codec.counters_name, b.holders)
                if next(b.codec.table_map.keys(), None) is None:
                    _set_gate(opened, b.codec.table, False)
            return deleted

    def read(self, node: Node, instance: str, table: str) -> list[TableEntry]:
        return [c.entry for c in self.read_counters(node, instance, table)]

    def read_counters(self, node: Node, instance: str, table: str) -> list[EntryCounters]:
        with self._open(node, instance) as opened:
            codec = _Codec(opened.nf.table(table), opened)
            totals = codec.counter_totals()
            return [codec.decode(k, v, totals) for k, v in codec.table_map.items()]

    def entry_slots(self, node: Node, instance: str, table: str) -> list[int]:
        """The counter slot each entry of a table holds, read from its map."""
        with self._open(node, instance) as opened:
            codec = _Codec(opened.nf.table(table), opened)
            return [codec.slot_of(v) for _, v in codec.table_map.items()] if codec.counters_map is not None else []

    def read_stat(self, node: Node, instance: str, stat: str) -> dict[str, int]:
        """Counters summed over CPUs: named fields of a struct value, or one u64 per index."""
        with self._open(node, instance) as opened:
            spec = opened.nf.stat(stat)
            m = opened.maps[spec.xdp["map"]]
            fields = Btf(opened.obj).members(_map_type_ids(opened.obj, spec.xdp["map"])[1])
            if fields:
                per_cpu = m.lookup_per_cpu(struct.pack("=I", 0))
                return {name: sum(int.from_bytes(v[fields[name].offset:][:8], "little") for v in per_cpu)
                        for name in spec.index}
            return {name: sum(int.from_bytes(v[:8], "little") for v in m.lookup_per_cpu(struct.pack("=I", i)))
                    for i, name in enumerate(spec.index)}

    # ---- register arrays (sketches, flow tables) --------------------------------------
    def _registers(self, opened: _Opened, stat: str):
        spec = opened.nf.stat(stat)
        if spec.kind != "registers":
            raise TargetError(f"{opened.instance}.{stat} is a {spec.kind} statistic, not registers",
                              hint="read it with read_stat")
        m = opened.maps[spec.xdp["map"]]
        members = Btf(opened.obj).members(_map_type_ids(opened.obj, spec.xdp["map"])[1])
        shape = spec.shape(opened.meta["params"])
        if int(np.prod(shape)) != m.max_entries:
            raise TargetError(f"{opened.instance}.{stat}: map {m.name} has {m.max_entries} cells, the catalog's shape "
                              f"{shape} wants {int(np.prod(shape))}", hint=f"fix {opened.nf.source}")
        return spec, m, members, shape

    def read_registers(self, node: Node, instance: str, stat: str) -> dict[str, np.ndarray]:
        """Read in batches; numeric fields of per-CPU maps are summed over CPUs."""
        with self._open(node, instance) as opened:
            spec, m, members, shape = self._registers(opened, stat)
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

    def write_registers(self, node: Node, instance: str, stat: str, index: int, values: dict[str, int]) -> None:
        with self._open(node, instance) as opened:
            spec, m, members, _ = self._registers(opened, stat)
            if not 0 <= index < m.max_entries:
                raise EntryError(f"{instance}.{stat}: cell {index} is out of range [0, {m.max_entries})")
            key = struct.pack("=I", index)
            cell = bytearray(m.lookup(key)[:m.value_size])
            for name, value in values.items():
                f, mem = spec.field(name), members[name]
                order = "big" if f.type in ADDRESS_TYPES else "little"
                try:
                    cell[mem.offset:mem.offset + mem.size] = int(value).to_bytes(mem.size, order)
                except OverflowError:
                    raise EntryError(f"{instance}.{stat}.{name}={value} does not fit in {mem.size} bytes") from None
            if m.per_cpu:   # the value on the first CPU, zero on the others
                cell = cell.ljust(m.stride, b"\0").ljust(m.read_size, b"\0")
            m.update(key, bytes(cell))

    def reset_registers(self, node: Node, instance: str, stat: str, start: int = 0, count: int | None = None) -> None:
        with self._open(node, instance) as opened:
            _, m, _, _ = self._registers(opened, stat)
            count = m.max_entries - start if count is None else count
            if start < 0 or count < 0 or start + count > m.max_entries:
                raise EntryError(f"{instance}.{stat}: cells [{start}, {start + count}) are out of range "
                                 f"[0, {m.max_entries})")
            if count:
                m.update_range(start, bytes(count * m.read_size))

    # ---- priority queues (an HTB tree per interface, see controller.qos) ---------------
    @staticmethod
    def _check_queue_interface(node: Node, instance: str, meta: dict, interface: str) -> None:
        if interface not in meta["interfaces"]:
            raise QueueError(f"{instance} does not run on {node.name}:{interface}, so it classifies nothing there",
                             hint=f"it runs on: {', '.join(meta['interfaces'])}")

    def configure_queues(self, node: Node, instance: str, interface: str, link_rate_bps: int,
                         levels: list[QueueLevel]) -> list[QueueLevel]:
        with self._open(node, instance) as opened:
            meta, nf = opened.meta, opened.nf
            self._check_queue_interface(node, instance, meta, interface)
            where = f"{node.name}:{interface}"
            checked = check_levels(nf, meta["params"], where, link_rate_bps, levels)
            if "classes_map" not in nf.programs["xdp"]:
                raise QueueError(f"{nf.name}'s XDP program has no level -> class map", hint=f"fix {nf.source}")
            previous = meta["queues"].get(interface)
            ifindex = meta["ifindexes"][interface]
            classes_map = opened.maps[nf.programs["xdp"]["classes_map"]]
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
                        if not meta["queues"]:
                            self._write_classes(classes_map, {})
                    raise
            meta["queues"][interface] = {"link_rate_bps": link_rate_bps,
                                         "levels": [[q.level, q.rate_bps, q.ceil_bps] for q in checked]}
            self._put(node, instance, meta)
        log.info("%s: %d priority levels on %s at %d bit/s", instance, len(checked), where, link_rate_bps)
        return checked

    @staticmethod
    def _write_classes(classes_map: libbpf.BpfMap, classes: dict[int, int]) -> None:
        """level -> class id for the classifier; levels not given get 0 (leave the packet's priority)."""
        for level in range(classes_map.max_entries):
            classes_map.update(struct.pack("=I", level), struct.pack("=I", classes.get(level, 0)))

    def queue_stats(self, node: Node, instance: str, interface: str) -> list[QueueStats]:
        meta = self._deployed(node, instance)
        self._check_queue_interface(node, instance, meta, interface)
        if interface not in meta["queues"]:
            raise QueueError(f"no queues are configured for {instance} on {node.name}:{interface}",
                             hint=f"configure them first: innet queues {node.name} {interface} --link-rate RATE "
                                  f"--level RATE[:CEIL] ...")
        with netns(node.netns), IPRoute() as ipr:
            return qos.read_stats(ipr, meta["ifindexes"][interface], meta["params"]["levels"])

    @staticmethod
    def _remove_queues(node: Node, meta: dict, interfaces: list[str]) -> None:
        if not interfaces:
            return
        try:
            with netns(node.netns), IPRoute() as ipr:
                for ifname in interfaces:
                    qos.remove(ipr, meta["ifindexes"][ifname])
        except TopologyError:
            pass   # the namespace is gone, and its queues with it


def _classes(queues: dict) -> dict[int, int]:
    """level -> HTB class id of configured queues (the same on every interface)."""
    return {level[0]: qos.level_classid(level[0]) for q in queues.values() for level in q["levels"]}


# ---- the NF specs instances were deployed from -----------------------------------------------
def _nf_of(meta: dict) -> NFSpec:
    """The NF spec an instance was deployed from, parsed again only when its file changed."""
    path = Path(meta["source"])
    try:
        nf = load_nf_cached(path)
    except FileNotFoundError as exc:
        raise TargetError(f"the catalog entry of {meta['nf']}, {path}, is gone ({exc.strerror})",
                          hint="deploy the instance again from an existing catalog entry") from None
    if nf.name != meta["nf"]:
        raise TargetError(f"{path} now holds NF {nf.name}, not {meta['nf']}",
                          hint="deploy the instance again")
    return nf


# ---- table entries as map keys and values ------------------------------------------------------
@dataclass
class _Batch:
    """One table's share of a write or delete: encoded keys (and values), the counter-slot
    holders, and what a failed write puts back."""
    codec: "_Codec"
    keys: list[bytes]
    values: bytearray | None
    old: dict[bytes, bytes]          # key -> value before, for keys that existed
    fresh_slots: list[int]           # slots of new entries: their counters start at zero

    @cached_property
    def holders(self) -> list[str]:
        name = self.codec.table_map.name
        return [f"{name}/{key.hex()}" for key in self.keys]

    def assign_slots(self, slots: dict[str, int], held: dict[str, int]) -> None:
        """Put each entry's slot in its value; sort out the entries that exist (their old value
        is kept, to put back) from the new ones (their slot's counters are zeroed)."""
        codec, size = self.codec, self.codec.value_size
        for i, (key, holder) in enumerate(zip(self.keys, self.holders)):
            slot = slots[holder]
            struct.pack_into("=I", self.values, i * size + codec.slot_offset, slot)
            old = codec.table_map.lookup(key) if holder in held else None
            # the exact key is there only if the value found holds its own slot: for an absent
            # key (a slot leaked by a crash) an LPM lookup returns a covering prefix's value
            if old is not None and codec.slot_of(old) == slot:
                self.old[key] = old
            else:
                self.fresh_slots.append(slot)

    def find_existing(self) -> None:
        """Without counters the table is a hash map, whose lookup is exact."""
        for key in self.keys:
            old = self.codec.table_map.lookup(key)
            if old is not None:
                self.old[key] = old

    def apply(self) -> None:
        codec = self.codec
        if self.fresh_slots:
            counters = codec.counters_map
            counters.update_many(struct.pack(f"={len(self.fresh_slots)}I", *self.fresh_slots),
                                 bytes(counters.read_size * len(self.fresh_slots)))
        codec.table_map.update_many(b"".join(self.keys), self.values)

    def undo(self) -> None:
        table = self.codec.table_map
        added = [k for k in self.keys if k not in self.old]
        if added:
            table.delete_many(b"".join(added))
        if self.old:
            table.update_many(b"".join(self.old), b"".join(self.old.values()))


def _set_gate(opened: _Opened, table: Table, open_: bool) -> None:
    """Set the table's gate (catalog xdp `gate`: a one-cell array the program reads before it
    looks the table up), where it has one."""
    gate = table.xdp.get("gate")
    if gate:
        opened.maps[gate].update(struct.pack("=I", 0), struct.pack("=I", int(open_)))


def _encode(opened: _Opened, entries: list[TableEntry], with_action: bool) -> list[_Batch]:
    """The entries as one batch per table, in the order the tables first appear."""
    by_table: dict[str, list[TableEntry]] = {}
    for e in entries:
        by_table.setdefault(e.table, []).append(e)
    batches = []
    for name, group in by_table.items():
        codec = _Codec(opened.nf.table(name), opened)
        keys, values = codec.encode(group, with_action)
        batches.append(_Batch(codec, keys, values, {}, []))
    return batches


@dataclass(frozen=True)
class _Layout:
    """Where one table's fields sit in its map's keys and values (from the object's BTF) and
    its action codes: the same for every write, so worked out once per object and table."""
    key_fields: dict[str, Member]
    value_fields: dict[str, Member]
    actions: dict[str, int]                     # action -> its code in the value's `action` field
    counter_fields: dict[str, Member] | None    # of the counters map's value


_LAYOUTS: dict[tuple[Path, str], tuple[Table, _Layout]] = {}


def _layout(obj: Path, table: Table) -> _Layout:
    hit = _LAYOUTS.get((obj, table.name))
    if hit is None or hit[0] is not table:   # a catalog entry parsed again may bind the table otherwise
        btf, binding = Btf(obj), table.xdp
        key_id, value_id = _map_type_ids(obj, binding["map"])
        actions = {}
        if "action_enum" in binding:
            prefix = binding["action_enum"].upper() + "_"
            actions = {n[len(prefix):].lower(): v for n, v in btf.enum(binding["action_enum"]).items()
                       if n.startswith(prefix)}
        counters = binding.get("counters_map")
        counter_fields = btf.members(_map_type_ids(obj, counters)[1]) if counters else None
        hit = _LAYOUTS[(obj, table.name)] = (table, _Layout(btf.members(key_id), btf.members(value_id), actions,
                                                            counter_fields))
    return hit[1]


class _Codec:
    """Encodes one logical table's entries as its map's keys and values, by BTF field name, and back."""

    def __init__(self, table: Table, opened: _Opened):
        self.table = table
        self.layout = layout = _layout(opened.obj, table)
        self.table_map = opened.maps[table.xdp["map"]]
        self.counters_name = table.xdp.get("counters_map")
        self.counters_map = opened.maps.get(self.counters_name) if self.counters_name else None
        self.value_size = self.table_map.value_size
        self.slot_offset = layout.value_fields["stats_slot"].offset if self.counters_map is not None else None
        self.params = opened.meta["params"]
        self.ports = opened.meta["ifindexes"]
        self.port_names = {v: k for k, v in self.ports.items()}
        # per field: where its bytes go and how plain values become them (see _fast_encoder)
        self._match_names = {f.name for f in table.match}
        self._key_plan = [(f.name, layout.key_fields[f.name].offset, f.kind == "lpm",
                           _fast_encoder(f, layout.key_fields[f.name].size, self.params, self.ports))
                          for f in table.match]
        self._value_plans = {action: ({f.name for f in fields},
                                      [(f.name, layout.value_fields[f.name].offset,
                                        _fast_encoder(f, layout.value_fields[f.name].size, self.params, self.ports))
                                       for f in fields])
                             for action, fields in table.actions.items()}

    # ---- encoding --------------------------------------------------------------------------
    def encode(self, entries: list[TableEntry], with_action: bool) -> tuple[list[bytes], bytearray | None]:
        """Keys, and values with their counter slot left 0, of the entries: straight from plain,
        well-formed values, else through tables.normalize, which checks every field and says
        what does not fit."""
        size = self.value_size
        keys = []
        values = bytearray(size * len(entries)) if with_action else None
        for i, e in enumerate(entries):
            try:
                key = self._fast_key(e.match)
                if with_action:
                    self._fast_value(e, values, i * size)
            except Exception:   # noqa: BLE001 - anything unusual takes the checked way
                e = normalize(self.table, e, with_action=with_action, nf_params=self.params)
                key = self.key(e)
                if with_action:
                    values[i * size:(i + 1) * size] = self.value(e)
            keys.append(key)
        return keys, values

    def _fast_key(self, match: dict) -> bytes:
        if match.keys() != self._match_names:
            raise KeyError("match fields")
        buf = bytearray(self.table_map.key_size)
        for name, offset, lpm, encode in self._key_plan:
            if lpm:
                raw, plen = encode(match[name])
                struct.pack_into("=I", buf, self.layout.key_fields["prefixlen"].offset, plen)
            else:
                raw = encode(match[name])
            buf[offset:offset + len(raw)] = raw
        return bytes(buf)

    def _fast_value(self, e: TableEntry, buf: bytearray, at: int) -> None:
        names, plan = self._value_plans[e.action]
        if e.params.keys() != names:
            raise KeyError("action parameters")
        if self.layout.actions:
            struct.pack_into("=I", buf, at + self.layout.value_fields["action"].offset, self.layout.actions[e.action])
        for name, offset, encode in plan:
            raw = encode(e.params[name])
            buf[at + offset:at + offset + len(raw)] = raw

    def _put(self, buf: bytearray, member: Member, field_type: str, value, where: str) -> None:
        if field_type in ADDRESS_TYPES:
            raw = address_bytes(field_type, value)
        elif field_type == "port":
            if value not in self.ports:
                raise EntryError(f"{where}: interface '{value}' does not run this NF",
                                 hint=f"its interfaces: {', '.join(self.ports)}")
            raw = struct.pack("=I", self.ports[value])
        else:
            raw = value.to_bytes(member.size, "little")
        buf[member.offset:member.offset + len(raw)] = raw

    def key(self, e: TableEntry) -> bytes:
        """The key of a normalized entry."""
        buf = bytearray(self.table_map.key_size)
        for f in self.table.match:
            self._put(buf, self.layout.key_fields[f.name], f.type, e.match[f.name], f"table {self.table.name} {f.name}")
            if f.kind == "lpm":
                plen = self.layout.key_fields["prefixlen"]
                struct.pack_into("=I", buf, plen.offset, ipaddress.ip_network(e.match[f.name]).prefixlen)
        return bytes(buf)

    def value(self, e: TableEntry) -> bytes:
        """The value of a normalized entry, its counter slot left 0."""
        buf = bytearray(self.value_size)
        if self.layout.actions:
            struct.pack_into("=I", buf, self.layout.value_fields["action"].offset, self.layout.actions[e.action])
        for f in self.table.action(e.action):
            self._put(buf, self.layout.value_fields[f.name], f.type, e.params[f.name],
                      f"table {self.table.name} action {e.action} {f.name}")
        return bytes(buf)

    # ---- decoding --------------------------------------------------------------------------
    def _get(self, raw: bytes, member: Member, field_type: str):
        chunk = raw[member.offset:member.offset + member.size]
        if field_type in ADDRESS_TYPES:
            return address_text(field_type, int.from_bytes(chunk, "big"))
        if field_type == "port":
            idx = struct.unpack("=I", chunk[:4])[0]
            return self.port_names.get(idx, f"ifindex{idx}")
        return int.from_bytes(chunk, "little")

    def decode(self, key: bytes, value: bytes, totals: tuple[np.ndarray, np.ndarray] | None) -> EntryCounters:
        match = {}
        for f in self.table.match:
            v = self._get(key, self.layout.key_fields[f.name], f.type)
            if f.kind == "lpm":
                plen = struct.unpack_from("=I", key, self.layout.key_fields["prefixlen"].offset)[0]
                v = str(ipaddress.ip_network(f"{v}/{plen}", strict=False))
            match[f.name] = v
        action = next(iter(self.table.actions))
        if self.layout.actions:
            code = struct.unpack_from("=I", value, self.layout.value_fields["action"].offset)[0]
            action = next((a for a, c in self.layout.actions.items() if c == code), f"action{code}")
        params = {f.name: self._get(value, self.layout.value_fields[f.name], f.type)
                  for f in self.table.actions.get(action, ())}
        packets = nbytes = 0
        if totals is not None and self.slot_of(value) < len(totals[0]):
            packets, nbytes = int(totals[0][self.slot_of(value)]), int(totals[1][self.slot_of(value)])
        return EntryCounters(TableEntry(self.table.name, match, action, params), packets, nbytes)

    def slot_of(self, value: bytes) -> int:
        return struct.unpack_from("=I", value, self.slot_offset)[0]

    def counter_totals(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Packets and bytes of every counter slot, summed over CPUs, in one batched read."""
        m = self.counters_map
        if m is None:
            return None
        raw = np.frombuffer(m.lookup_all(), dtype=np.uint8).reshape(m.max_entries, -1, m.stride if m.per_cpu
                                                                      else m.value_size)

        def total(member: Member) -> np.ndarray:
            chunk = np.ascontiguousarray(raw[:, :, member.offset:member.offset + member.size])
            return chunk.view(f"<u{member.size}")[:, :, 0].sum(axis=1, dtype=np.uint64)

        return total(self.layout.counter_fields["packets"]), total(self.layout.counter_fields["bytes"])


def _fast_encoder(f: Field, size: int, params: dict, ports: dict[str, int]):
    """A function giving a field's bytes (an LPM field's: bytes and prefix length) straight from
    a plain, well-formed value, and raising on anything else, which then goes through
    tables.normalize to be checked and explained. It accepts nothing normalize refuses, and
    encodes as _Codec.key and value encode what normalize returns (tests/test_xdp_target.py
    checks both), without normalize's parsing the value twice."""
    if f.type == "ipv4":
        return _ipv4_prefix if f.kind == "lpm" else _ipv4_address
    if f.type == "ipv6":
        return _ipv6_prefix if f.kind == "lpm" else _remembered(_ipv6_address)
    if f.type == "ip":
        return _remembered(_ip_address)
    if f.type == "mac":
        return _remembered(_mac)
    if f.type == "port":
        return lambda value: struct.pack("=I", ports[value])
    bound = f.below if not isinstance(f.below, str) else params.get(f.below)
    limit = 1 << f.width

    def integer(value) -> bytes:
        if type(value) is not int or not 0 <= value < limit or (bound is not None and value >= bound):
            raise ValueError(f.name)
        return value.to_bytes(size, "little")
    return integer


def _remembered(encode):
    """`encode` remembering its answers: next hops and peers repeat across a table's entries."""
    seen: dict[str, bytes] = {}

    def remembered(value) -> bytes:
        raw = seen.get(_text(value))
        if raw is None:
            raw = seen[value] = encode(value)
        return raw
    return remembered


def _text(value) -> str:
    if type(value) is not str:
        raise TypeError("not text")
    return value


def _ipv4_address(value) -> bytes:
    return socket.inet_pton(socket.AF_INET, _text(value))   # dotted quads only, as ipaddress takes them


def _ipv4_prefix(value) -> tuple[bytes, int]:
    address, slash, length = _text(value).partition("/")
    if not slash or not length.isascii() or not length.isdigit() or len(length) > 2 or int(length) > 32:
        raise ValueError("not a plain prefix length")
    raw, plen = socket.inet_pton(socket.AF_INET, address), int(length)
    if int.from_bytes(raw, "big") & (0xFFFFFFFF >> plen):
        raise ValueError("host bits set")
    return raw, plen


def _ipv6_address(value) -> bytes:
    return ipaddress.IPv6Address(_text(value)).packed


def _ipv6_prefix(value) -> tuple[bytes, int]:
    net = ipaddress.IPv6Network(_text(value))   # strict: host bits set raise
    return net.network_address.packed, net.prefixlen


def _ip_address(value) -> bytes:
    return ip_packed(_text(value))


def _mac(value) -> bytes:
    return bytes.fromhex(parse_mac(value, "mac").replace(":", ""))


# ---- the compiled objects' maps ----------------------------------------------------------------
_OBJECT_MAPS: dict[Path, dict[str, tuple[int, int]]] = {}


def _object_maps(obj: Path) -> dict[str, tuple[int, int]]:
    """The object's maps, each with its key and value BTF type ids (opened, not loaded: BTF only).
    Objects are named by the digest of their inputs, so the answer never changes."""
    if obj not in _OBJECT_MAPS:
        with libbpf.BpfObject(str(obj)) as o:
            _OBJECT_MAPS[obj] = {name: o.btf_type_ids(name) for name in o.map_names}
    return _OBJECT_MAPS[obj]


def _map_type_ids(obj: Path, map_name: str) -> tuple[int, int]:
    return _object_maps(obj)[map_name]
