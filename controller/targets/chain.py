"""Several NF instances on one XDP hook: chains of tail calls through each instance's `chain_next`.

An interface's XDP hook holds one program. A pass-through NF (catalog `programs.xdp.chain:
pass`: it hands every packet on, like cms or precision) ends in ebpf/include/chain.h's
chain_pass, a tail call through its one-slot program array `chain_next`; a terminal NF
(nfrouter: it forwards, drops or hands packets to the kernel itself) cannot be followed.

Order: the hook runs the chain's head; pass-through instances come first, the most recently
deployed one at the head, and a terminal instance last. Deploying a pass-through instance puts
it at the head; deploying a terminal one appends it behind the last pass-through instance.

Bookkeeping: each instance's deployment record (XdpTarget's, DataplaneRecords key
`xdp/<instance>`) holds `next`, the instance its chain_next calls (None: the chain ends there),
`chain`, its catalog kind, `prog_id`, and `pin`, its directory under the node's pin directory.
Which program each interface's hook runs is read from the kernel, so an interface's chain is
the walk from that program along `next`. One rule keeps every chain within the interfaces its
instances were deployed on: when A's next is B, B runs on every interface of A.

Behind a forwarder: a service function forwarder (sff; catalog `programs.xdp.nf_slots_map`)
runs NF instances of its own, in the slots of a program array (`sfc_nfs`), choosing one per
packet by the packet's (SPI, SI). Such an instance has no interfaces and no place on any hook:
its record's `behind` is [forwarder, slot], its program sits in that slot, and its `next` is
the forwarder, whose program its chain_next calls, so the forwarder dispatches the packet again
after the NF. It is no predecessor of the forwarder in the hook's chain: taking the forwarder
out of a chain does not relink it, and a new forwarder program takes it back
(XdpTarget._link_behind).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from controller.bpf import libbpf
from controller.errors import BpfError, TargetError
from controller.store import DataplaneRecords

NEXT_MAP = "chain_next"
PASS = "pass"           # programs.xdp.chain of an NF that can be followed
PROG_PIN = "prog"       # the program's pin, beside its maps
RECORDS = "xdp/"        # the key prefix of XdpTarget's deployment records


def record_key(instance: str) -> str:
    return RECORDS + instance


def passes(program: dict, nf: str) -> bool:
    """Whether the NF's XDP program hands packets on through chain_next (catalog `chain: pass`)."""
    kind = program.get("chain")
    if kind not in (None, PASS):
        raise TargetError(f"NF {nf}: programs.xdp.chain is '{kind}'",
                          hint=f"use `chain: {PASS}` for an NF that passes every packet on, or leave it out")
    return kind == PASS


def read_slot(pin: Path, map_name: str, index: int) -> int | None:
    """The program id in slot `index` of the program array `map_name` pinned in `pin` (None:
    empty, or no such map)."""
    path = pin / map_name
    if not path.exists():
        return None
    m = libbpf.BpfMap.from_pin(str(path))
    try:
        raw = m.lookup(struct.pack("=I", index))
    finally:
        m.close()
    return struct.unpack("=I", raw[:4])[0] if raw else None


def write_slot(pin: Path, map_name: str, index: int, prog_fd: int | None,
               opened: libbpf.BpfMap | None = None) -> None:
    """Put a program in slot `index` of the program array `map_name` pinned in `pin` (or
    `opened`, the same map opened by its loader); None empties the slot."""
    if opened is None and not (pin / map_name).exists():
        raise BpfError(f"{pin.name} has no {map_name} map pinned at {pin / map_name}",
                       hint="its program must end in chain_pass (ebpf/include/chain.h) to be followed"
                       if map_name == NEXT_MAP else f"is {pin.name} a service function forwarder?")
    m = opened or libbpf.BpfMap.from_pin(str(pin / map_name))
    key = struct.pack("=I", index)
    try:
        if prog_fd is None:
            m.delete(key)
        else:
            m.update(key, struct.pack("=I", prog_fd))
    finally:
        if opened is None:
            m.close()


def program_slots(pin: Path, map_name: str) -> dict[int, int]:
    """The filled slots of the program array `map_name` pinned in `pin`: index -> program id."""
    path = pin / map_name
    if not path.exists():
        return {}
    m = libbpf.BpfMap.from_pin(str(path))
    try:
        found = {}
        for index in range(m.max_entries):
            raw = m.lookup(struct.pack("=I", index))
            if raw:
                found[index] = struct.unpack("=I", raw[:4])[0]
        return found
    finally:
        m.close()


def read_next(pin: Path) -> int | None:
    """The program id in the chain_next slot pinned in `pin` (None: empty, or no such map)."""
    return read_slot(pin, NEXT_MAP, 0)


def write_next(pin: Path, prog_fd: int | None, next_map: libbpf.BpfMap | None = None) -> None:
    """Point the chain_next slot pinned in `pin` (or `next_map`, the same map opened by its
    loader) at a program; None empties it, ending the chain there."""
    write_slot(pin, NEXT_MAP, 0, prog_fd, next_map)


@dataclass
class Placement:
    """Where a newly deployed instance goes in the chains of its interfaces."""
    next: str | None = None                         # the instance its chain_next calls
    attach: list[str] = field(default_factory=list)  # interfaces whose hook will run it (as head)
    after: list[str] = field(default_factory=list)   # instances whose chain_next will call it (it is their tail)


class NodeChains:
    """The instances deployed on one node's hooks, read from their records."""

    def __init__(self, node: str, records: DataplaneRecords, pin_dir: Path):
        self.node, self.records, self.pin_dir = node, records, pin_dir
        self.metas = {key[len(RECORDS):]: meta for key, meta in records.items(node, RECORDS).items()}

    def owner(self, prog_id: int | None) -> str | None:
        """The instance whose program has this id, if an innet instance's."""
        return next((n for n, m in self.metas.items() if prog_id and m.get("prog_id") == prog_id), None)

    def passes(self, name: str) -> bool:
        return self.metas[name].get("chain") == PASS

    def walk(self, prog_id: int | None) -> list[str]:
        """The instances a packet meets on a hook running `prog_id`, in order ([] for none of innet's)."""
        names, name = [], self.owner(prog_id)
        while name and name not in names:
            names.append(name)
            name = self.metas.get(name, {}).get("next")
        return names

    def describe(self, prog_id: int | None) -> str:
        return " -> ".join(self.walk(prog_id)) or ("nothing" if not prog_id else f"program id {prog_id}")

    def predecessors(self, name: str) -> list[str]:
        """The instances whose chain_next calls `name` on a hook (not those behind it, if a forwarder)."""
        return [n for n, m in self.metas.items() if m.get("next") == name and not m.get("behind")]

    def behind(self, forwarder: str) -> dict[str, int]:
        """The instances that run behind `forwarder`, with their slots."""
        return {n: m["behind"][1] for n, m in self.metas.items()
                if m.get("behind") and m["behind"][0] == forwarder}

    # ---- placing a new instance --------------------------------------------------------------
    def place(self, name: str, pass_through: bool, attached: dict[str, int | None]) -> Placement:
        """Where instance `name` goes, given what each of its interfaces' hook runs now (innet's only)."""
        if pass_through:
            heads = set(attached.values())
            if len(heads) > 1:
                runs = "; ".join(f"{i} runs {self.describe(a)}" for i, a in sorted(attached.items()))
                raise TargetError(f"{name} on {self.node} would join different chains: {runs}",
                                  hint=f"deploy {name} on interfaces that run the same NFs (or none)")
            head = heads.pop()
            return Placement(next=self.owner(head), attach=list(attached))
        placement = Placement()
        for ifname, prog_id in attached.items():
            if not prog_id:
                placement.attach.append(ifname)
                continue
            last = self.walk(prog_id)[-1]
            if not self.passes(last):
                raise TargetError(
                    f"{self.node}:{ifname} already runs {last}, which cannot be followed: {name} and {last} both "
                    f"decide where packets go, and one XDP hook can run only one such NF",
                    hint=f"remove {last} first (innet nf remove {self.node} {last}), or deploy {name} on other "
                         f"interfaces")
            if last not in placement.after:
                placement.after.append(last)
        for last in placement.after:
            beyond = sorted(set(self.metas[last]["interfaces"]) - set(attached))
            if beyond:
                raise TargetError(f"{name} would follow {last} on {self.node}, which runs on {', '.join(beyond)} too",
                                  hint=f"deploy {name} on {', '.join(sorted({*attached, *beyond}))}")
        return placement

    # ---- program arrays ------------------------------------------------------------------------
    def pins(self, name: str) -> Path:
        """Where instance `name`'s program and maps are pinned."""
        return self.pin_dir / self.metas[name]["pin"]

    def program_fd(self, name: str) -> int:
        """A new fd of instance `name`'s program (the caller closes it): its pin, else the
        program by its recorded id, which a hook or a chain_next slot may keep alive."""
        try:
            return libbpf.get_pinned(str(self.pins(name) / PROG_PIN))
        except BpfError:
            return libbpf.prog_fd_by_id(self.metas[name]["prog_id"])

    def next_id(self, name: str) -> int | None:
        """The program id in instance `name`'s chain_next slot (None: empty)."""
        return read_next(self.pins(name))

    def set_next(self, name: str, prog_fd: int | None) -> None:
        write_next(self.pins(name), prog_fd)

    def link(self, pin: Path, next_name: str | None, next_map: libbpf.BpfMap | None = None) -> None:
        """Point the chain_next pinned in `pin` (or `next_map`, the same map opened by its loader)
        at instance `next_name`'s program; None empties it, if there is one (a terminal NF has none)."""
        if next_name is None:
            if next_map is not None or (pin / NEXT_MAP).exists():
                write_next(pin, None, next_map)
            return
        fd = self.program_fd(next_name)
        try:
            write_next(pin, fd, next_map)
        finally:
            os.close(fd)

    def write_meta(self, name: str) -> None:
        self.records.put(self.node, record_key(name), self.metas[name])
