"""Several NFs on one XDP hook: chains of tail calls through each NF's `chain_next`.

An interface's XDP hook holds one program. A pass-through NF (catalog `programs.xdp.chain:
pass`: it hands every packet on, like cms or precision) ends in ebpf/include/chain.h's
chain_pass, a tail call through its one-slot program array `chain_next`; a terminal NF
(nfrouter: it forwards, drops or hands packets to the kernel itself) cannot be followed.

Order: the hook runs the chain's head; pass-through NFs come first, the most recently
deployed one at the head, and a terminal NF last. Deploying a pass-through NF puts it at
the head; deploying a terminal NF appends it behind the last pass-through NF.

Bookkeeping: each NF's deployment metadata (XdpTarget's, /run/innet/xdp/<node>/<nf>.json)
records `next`, the NF its chain_next calls (None: the chain ends there), and `chain`, its
catalog kind. Which program each interface's hook runs is read from the kernel, so an
interface's chain is the walk from that program along `next`. One rule keeps every chain
within the interfaces its NFs were deployed on: when A's next is B, B runs on every
interface of A.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from controller.bpf import libbpf
from controller.errors import BpfError, TargetError

NEXT_MAP = "chain_next"
PASS = "pass"   # programs.xdp.chain of an NF that can be followed


def passes(program: dict, nf: str) -> bool:
    """Whether the NF's XDP program hands packets on through chain_next (catalog `chain: pass`)."""
    kind = program.get("chain")
    if kind not in (None, PASS):
        raise TargetError(f"NF {nf}: programs.xdp.chain is '{kind}'",
                          hint=f"use `chain: {PASS}` for an NF that passes every packet on, or leave it out")
    return kind == PASS


@dataclass
class Placement:
    """Where a newly deployed NF goes in the chains of its interfaces."""
    next: str | None = None                         # the NF its chain_next calls
    attach: list[str] = field(default_factory=list)  # interfaces whose hook will run it (as head)
    after: list[str] = field(default_factory=list)   # NFs whose chain_next will call it (it is their tail)


class NodeChains:
    """The NFs deployed on one node's hooks, read from their metadata and pins."""

    def __init__(self, node: str, state_dir: Path, pin_dir: Path):
        self.node, self.state_dir, self.pin_dir = node, state_dir, pin_dir
        self.metas = {p.stem: json.loads(p.read_text()) for p in sorted(state_dir.glob("*.json"))} \
            if state_dir.exists() else {}

    def owner(self, prog_id: int | None) -> str | None:
        """The NF whose program has this id, if an innet NF's."""
        return next((n for n, m in self.metas.items() if prog_id and m.get("prog_id") == prog_id), None)

    def passes(self, name: str) -> bool:
        return self.metas[name].get("chain") == PASS

    def walk(self, prog_id: int | None) -> list[str]:
        """The NFs a packet meets on a hook running `prog_id`, in order ([] for no innet NF)."""
        names, name = [], self.owner(prog_id)
        while name and name not in names:
            names.append(name)
            name = self.metas.get(name, {}).get("next")
        return names

    def describe(self, prog_id: int | None) -> str:
        return " -> ".join(self.walk(prog_id)) or ("nothing" if not prog_id else f"program id {prog_id}")

    def predecessors(self, name: str) -> list[str]:
        return [n for n, m in self.metas.items() if m.get("next") == name]

    # ---- placing a new NF ----------------------------------------------------------------
    def place(self, nf: str, pass_through: bool, attached: dict[str, int | None]) -> Placement:
        """Where NF `nf` goes, given what each of its interfaces' hook runs now (innet NFs only)."""
        if pass_through:
            heads = set(attached.values())
            if len(heads) > 1:
                runs = "; ".join(f"{i} runs {self.describe(a)}" for i, a in sorted(attached.items()))
                raise TargetError(f"{nf} on {self.node} would join different chains: {runs}",
                                  hint=f"deploy {nf} on interfaces that run the same NFs (or none)")
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
                    f"{self.node}:{ifname} already runs {last}, which cannot be followed: {nf} and {last} both "
                    f"decide where packets go, and one XDP hook can run only one such NF",
                    hint=f"remove {last} first (innet nf remove {self.node} {last}), or deploy {nf} on other "
                         f"interfaces")
            if last not in placement.after:
                placement.after.append(last)
        for last in placement.after:
            beyond = sorted(set(self.metas[last]["interfaces"]) - set(attached))
            if beyond:
                raise TargetError(f"{nf} would follow {last} on {self.node}, which runs on {', '.join(beyond)} too",
                                  hint=f"deploy {nf} on {', '.join(sorted({*attached, *beyond}))}")
        return placement

    # ---- program arrays --------------------------------------------------------------------
    def program_fd(self, name: str) -> int:
        """A new fd of NF `name`'s pinned program (the caller closes it)."""
        return libbpf.get_pinned(str(self.pin_dir / name / "prog"))

    def next_id(self, name: str) -> int | None:
        """The program id in NF `name`'s chain_next slot (None: empty)."""
        m = self._next_map(name)
        try:
            raw = m.lookup(struct.pack("=I", 0))
        finally:
            m.close()
        return struct.unpack("=I", raw[:4])[0] if raw else None

    def set_next(self, name: str, prog_fd: int | None, next_map: libbpf.BpfMap | None = None) -> None:
        """Point NF `name`'s chain_next (or `next_map`, the same map opened by its loader) at a
        program; None empties it, ending the chain there."""
        m = next_map or self._next_map(name)
        try:
            if prog_fd is None:
                m.delete(struct.pack("=I", 0))
            else:
                m.update(struct.pack("=I", 0), struct.pack("=I", prog_fd))
        finally:
            if next_map is None:
                m.close()

    def link(self, name: str, next_name: str | None, next_map: libbpf.BpfMap | None = None) -> None:
        """Point NF `name`'s chain_next at NF `next_name`'s pinned program (None: empty it)."""
        if next_name is None:
            self.set_next(name, None, next_map)
            return
        fd = self.program_fd(next_name)
        try:
            self.set_next(name, fd, next_map)
        finally:
            os.close(fd)

    def restore_next(self, name: str, prog_id: int | None) -> None:
        """Put back a chain_next slot as it was: empty, or the program of the NF owning `prog_id`."""
        self.link(name, self.owner(prog_id) if prog_id else None)

    def _next_map(self, name: str) -> libbpf.BpfMap:
        path = self.pin_dir / name / NEXT_MAP
        if not path.exists():
            raise BpfError(f"{name} on {self.node} has no {NEXT_MAP} map pinned at {path}",
                           hint=f"its program must end in chain_pass (ebpf/include/chain.h) to be followed")
        return libbpf.BpfMap.from_pin(str(path))

    def write_meta(self, name: str) -> None:
        (self.state_dir / f"{name}.json").write_text(json.dumps(self.metas[name], indent=1))
