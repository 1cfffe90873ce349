"""Flow statistics from heavy-hitter NFs (cms, precision), through the target-neutral interface.

An NF's flow table is a `registers` statistic whose cells hold a flow key (src_addr,
dst_addr, src_port, dst_port, proto) and a packet estimate (and maybe bytes); the cms
candidates and the precision key table both are one. The pure functions here take register
arrays as `Controller.read_registers` returns them (field -> numpy array), so a benchmark
that reads maps itself can use them too. `SketchEpochs` closes the epochs of an NF with
two banks (cms): it flips the bank, waits for packets in flight, then reads and resets
the closed bank. Closing is destructive, so an instance's epochs have one owner at a time
across every process of the scope (`EpochOwner`): a second one is refused, naming the first.

Any flow's Count-Min estimate, held as a candidate or not: `flow_estimate` (the epoch so
far) and `Epoch.estimate` (a closed one); they find the flow's cells with the data plane's
own hashes (`sketch_columns`). What an instance's state really costs: `state_memory`.
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import time
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from controller.catalog import NFSpec
from controller.errors import StatsError

FLOW_FIELDS = ("src_addr", "dst_addr", "src_port", "dst_port", "proto")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
# A packet that read the old bank before the flip is done with it well within this (XDP
# runs a packet in microseconds; a software switch's pipeline in milliseconds).
DEFAULT_GRACE_S = 0.05


@dataclass(frozen=True)
class Flow:
    """A flow's identity as the data plane keys it (ports 0 when it keys address pairs)."""
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dport: int
    proto: int

    @classmethod
    def of(cls, src, dst, sport: int = 0, dport: int = 0, proto: int = 0) -> "Flow":
        """From addresses as text, address objects or 128-bit `ip` register values (IPv4-mapped
        IPv6 becomes IPv4)."""
        return cls(_address(src), _address(dst), int(sport), int(dport), int(proto))

    def sort_key(self) -> tuple:
        """A total order over IPv4 and IPv6 flows alike (for stable rankings)."""
        return (self.src.version, int(self.src), self.dst.version, int(self.dst), self.sport, self.dport, self.proto)

    def __str__(self) -> str:
        proto = PROTO_NAMES.get(self.proto, f"proto {self.proto}")
        if not (self.sport or self.dport):
            return f"{self.src} -> {self.dst} {proto}"
        return f"{_endpoint(self.src, self.sport)} -> {_endpoint(self.dst, self.dport)} {proto}"


def _address(value) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, (int, np.integer)):
        addr = ipaddress.IPv6Address(int(value))
    else:
        addr = ipaddress.ip_address(value)
    if addr.version == 6 and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _endpoint(addr, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


@dataclass(frozen=True)
class FlowCount:
    flow: Flow
    packets: int
    bytes: int | None = None   # None when the NF counts packets only


@dataclass(frozen=True)
class FlowRate:
    flow: Flow
    packets: int
    bytes: int | None
    packets_per_s: float
    bytes_per_s: float | None

    @property
    def bits_per_s(self) -> float | None:
        return None if self.bytes_per_s is None else 8 * self.bytes_per_s


def flow_counts(registers: dict[str, np.ndarray]) -> list[FlowCount]:
    """The flows held in a flow table's cells (any shape), one per flow with its largest count."""
    missing = [f for f in (*FLOW_FIELDS, "packets") if f not in registers]
    if missing:
        raise StatsError(f"register arrays lack the flow table field(s) {', '.join(missing)}",
                         hint="pass the arrays of a flow table: cms candidates or precision flows")
    packets = np.asarray(registers["packets"]).reshape(-1)
    used = np.flatnonzero(packets)
    columns = {f: np.asarray(registers[f]).reshape(-1)[used] for f in (*FLOW_FIELDS, "packets")}
    has_bytes = "bytes" in registers
    nbytes = np.asarray(registers["bytes"]).reshape(-1)[used] if has_bytes else None
    best: dict[Flow, FlowCount] = {}
    for i in range(len(used)):
        flow = Flow.of(*(columns[f][i] for f in FLOW_FIELDS))
        count = FlowCount(flow, int(columns["packets"][i]), int(nbytes[i]) if has_bytes else None)
        if flow not in best or count.packets > best[flow].packets:
            best[flow] = count
    return list(best.values())


def top_k(counts: list[FlowCount], k: int, by: str = "packets") -> list[FlowCount]:
    """The k largest flows by packets or bytes; ties broken by flow for a stable order."""
    if k < 1:
        raise StatsError(f"top-k needs k >= 1, got {k}")
    if by not in ("packets", "bytes"):
        raise StatsError(f"cannot rank flows by '{by}'", hint="rank by packets or bytes")
    if by == "bytes" and counts and counts[0].bytes is None:
        raise StatsError("this flow table counts packets only", hint="rank by packets")
    return sorted(counts, key=lambda c: (-getattr(c, by), c.flow.sort_key()))[:k]


def heavy_hitters(registers: dict[str, np.ndarray], k: int, by: str = "packets") -> list[FlowCount]:
    """Top-k straight from a flow table's register arrays."""
    return top_k(flow_counts(registers), k, by)


def rates(counts: list[FlowCount], duration_s: float) -> list[FlowRate]:
    """Each flow's packets/s and bytes/s over an epoch of `duration_s` seconds."""
    if not duration_s > 0:
        raise StatsError(f"an epoch's duration must be positive, got {duration_s} s")
    return [FlowRate(c.flow, c.packets, c.bytes, c.packets / duration_s,
                     None if c.bytes is None else c.bytes / duration_s) for c in counts]


def elephant_threshold(bytes_per_s: float | None = None, link_bps: float | None = None,
                       fraction: float | None = None) -> float:
    """The elephant threshold in bytes/s: given directly, or as a fraction of a link's bit/s."""
    if bytes_per_s is not None:
        if link_bps is not None or fraction is not None:
            raise StatsError("give the elephant threshold either in bytes/s or as a fraction of a link, not both")
        if not bytes_per_s > 0:
            raise StatsError(f"elephant threshold must be positive, got {bytes_per_s} bytes/s")
        return float(bytes_per_s)
    if link_bps is None or fraction is None:
        raise StatsError("no elephant threshold given",
                         hint="give bytes_per_s, or link_bps (the link's capacity in bit/s) and a fraction")
    if not link_bps > 0:
        raise StatsError(f"link capacity must be positive, got {link_bps} bit/s")
    if not 0 < fraction <= 1:
        raise StatsError(f"elephant fraction must be in (0, 1], got {fraction}",
                         hint="e.g. 0.1 flags flows above a tenth of the link")
    return link_bps * fraction / 8


def elephants(flow_rates: list[FlowRate], threshold_bytes_per_s: float) -> list[FlowRate]:
    """Flows at or above the threshold (bytes/s), largest first."""
    if any(r.bytes_per_s is None for r in flow_rates):
        raise StatsError("elephant detection needs byte counts, which this flow table lacks",
                         hint="use the cms NF, or rank precision flows with top_k")
    big = [r for r in flow_rates if r.bytes_per_s >= threshold_bytes_per_s]
    return sorted(big, key=lambda r: (-r.bytes_per_s, r.flow.sort_key()))


def flow_table(nf: NFSpec) -> str:
    """The NF's registers statistic that holds flows: the one with the flow key fields."""
    for stat in nf.stats.values():
        names = {f.name for f in stat.fields}
        if stat.kind == "registers" and set(FLOW_FIELDS) | {"packets"} <= names:
            return stat.name
    raise StatsError(f"NF {nf.name} has no flow table (a registers statistic with "
                     f"{', '.join(FLOW_FIELDS)} and packets)", hint="use a heavy-hitter NF: cms or precision")


def has_epochs(nf: NFSpec) -> bool:
    """True when the NF keeps two banks switched by control.active_bank."""
    return "control" in nf.stats and any(f.name == "active_bank" for f in nf.stats["control"].fields)


@dataclass
class Epoch:
    """One closed epoch of a banked NF: its sketch and flow table, and how long it ran."""
    bank: int
    started: float   # time.monotonic()
    ended: float
    sketch: dict[str, np.ndarray]    # [row][column]
    flows: dict[str, np.ndarray]     # [slot]
    totals: dict[str, int] | None = None   # every packet and byte of the epoch, when the NF counts them apart
    columns: Callable[["Flow"], list[int]] | None = None   # a flow's column in each row (sketch_columns)

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def packets(self) -> int:
        """Every packet counted in the epoch (without totals: a plain sketch adds each packet to
        exactly one cell of each row)."""
        if self.totals is not None:
            return self.totals["packets"]
        return int(self.sketch["packets"][0].sum())

    @property
    def bytes(self) -> int:
        if self.totals is not None:
            return self.totals["bytes"]
        return int(self.sketch["bytes"][0].sum())

    def top(self, k: int, by: str = "packets") -> list[FlowCount]:
        return heavy_hitters(self.flows, k, by)

    def rates(self, k: int | None = None, by: str = "packets") -> list[FlowRate]:
        """Rates of the top-k flows, or of every flow the epoch kept (k None)."""
        counts = flow_counts(self.flows) if k is None else self.top(k, by)
        return rates(counts, self.duration)

    def estimate(self, flow: "Flow") -> FlowCount:
        """The sketch's estimate of any flow in this epoch (candidate or not): never below its
        true count."""
        if self.columns is None:
            raise StatsError("this epoch does not know its sketch's hashes",
                             hint="close epochs with SketchEpochs, which gives them")
        return sketch_estimate(self.sketch, self.columns(flow), flow)


class EpochOwner:
    """The right to close an instance's epochs: an flock on a file in the scope's run
    directory, held until release() (or the process ends: a killed owner frees it)."""

    def __init__(self, scope, node: str, instance: str):
        directory = scope.run_dir / "epochs"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{node}--{instance}.owner"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StatsError(f"{instance} on {node}: another reader (pid {holder}) closes its epochs, and closing "
                             "is destructive, so this one would steal half of every epoch",
                             hint="read that reader's results (innet api: GET /flows/top; innet te run: innet te "
                                  "status), or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._release = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._release()


class SketchEpochs:
    """Epochs of a banked NF (cms) on a node: each close() returns the epoch just ended.

    The first epoch runs from this object's creation; what the bank held before is
    dropped by restart(), which a caller wanting exact rates runs first. It owns the
    instance's epochs until release()."""

    def __init__(self, controller, node: str, instance: str = "cms", grace_s: float = DEFAULT_GRACE_S):
        self.ctl, self.node, self.nf = controller, node, instance
        spec = controller.spec(node, instance)
        if not has_epochs(spec):
            raise StatsError(f"NF {spec.name} (instance {instance}) has no epochs (no control.active_bank)",
                             hint="read its flow table with read_flows instead")
        self.owner = EpochOwner(controller.scope, node, instance)
        self.flow_stat = flow_table(spec)
        row = controller.instance(node, instance)
        self.columns = sketch_hash(row.target, row.params)
        # cells per bank of each banked statistic: the shape after its leading [bank] axis
        banked = ("sketch", self.flow_stat, *(["totals"] if "totals" in spec.stats else []))
        self.per_bank = {stat: int(np.prod(spec.stat(stat).shape(row.params)[1:])) for stat in banked}
        self.grace_s = grace_s
        self.started = time.monotonic()

    def _reset_bank(self, bank: int) -> None:
        for stat, cells in self.per_bank.items():
            self.ctl.reset_registers(self.node, self.nf, stat, bank * cells, cells)

    def active_bank(self) -> int:
        return int(self.ctl.read_registers(self.node, self.nf, "control")["active_bank"].reshape(-1)[0]) & 1

    def close(self) -> Epoch:
        """Flip the bank, wait out packets in flight, read the closed bank and zero it."""
        bank = self.active_bank()
        self.ctl.write_registers(self.node, self.nf, "control", 0, {"active_bank": 1 - bank})
        ended = time.monotonic()
        time.sleep(self.grace_s)
        sketch = self.ctl.read_registers(self.node, self.nf, "sketch")
        flows = self.ctl.read_registers(self.node, self.nf, self.flow_stat)
        totals = None
        if "totals" in self.per_bank:
            totals = {f: int(a[bank]) for f, a in self.ctl.read_registers(self.node, self.nf, "totals").items()}
        sketch_bank = {f: a[bank].copy() for f, a in sketch.items()}
        flows_bank = {f: a[bank].copy() for f, a in flows.items()}
        self._reset_bank(bank)
        epoch = Epoch(bank, self.started, ended, sketch_bank, flows_bank, totals, self.columns)
        self.started = ended
        return epoch

    def release(self) -> None:
        """Let another reader own the instance's epochs."""
        self.owner.release()

    def restart(self) -> None:
        """Drop what the active bank holds and start the first epoch now."""
        self._reset_bank(1 - self.active_bank())   # zero already, unless a close() was cut short
        self.close()


@dataclass
class Sample:
    """One interval of a FlowMonitor: the top flows and, for banked NFs, the interval's totals."""
    duration: float
    flows: list[FlowRate]
    packets: int | None = None   # every packet of the interval (None: the NF cannot tell)
    bytes: int | None = None


class FlowMonitor:
    """Top-k flows of a heavy-hitter NF, interval by interval.

    A banked NF (cms) gives each interval as an epoch: counts and rates of that interval.
    A flow table without epochs (precision) keeps counting: a flow's `packets` is its counter
    and its rate the counter's growth over the interval."""

    def __init__(self, controller, node: str, instance: str, k: int = 10, by: str = "packets",
                 grace_s: float = DEFAULT_GRACE_S):
        if k < 1:
            raise StatsError(f"top-k needs k >= 1, got {k}")
        self.ctl, self.node, self.nf, self.k, self.by = controller, node, instance, k, by
        spec = controller.spec(node, instance)
        self.epochs = SketchEpochs(controller, node, instance, grace_s) if has_epochs(spec) else None
        self.flow_stat = flow_table(spec)
        self.counts_bytes = any(f.name == "bytes" for f in spec.stat(self.flow_stat).fields)
        self._last: dict[Flow, int] = {}
        self._at = time.monotonic()

    def start(self) -> None:
        """Begin the first interval now."""
        if self.epochs:
            self.epochs.restart()
        else:
            self._last = {c.flow: c.packets for c in read_flows(self.ctl, self.node, self.nf)}
            self._at = time.monotonic()

    def close(self) -> None:
        """Give up the instance's epochs (a banked NF's), for another reader to own."""
        if self.epochs:
            self.epochs.release()

    def sample(self) -> Sample:
        """Close the current interval and report it."""
        if self.epochs:
            epoch = self.epochs.close()
            return Sample(epoch.duration, epoch.rates(self.k, self.by), epoch.packets, epoch.bytes)
        counts = read_flows(self.ctl, self.node, self.nf)
        now = time.monotonic()
        duration, self._at = now - self._at, now
        last, self._last = self._last, {c.flow: c.packets for c in counts}
        flows = [FlowRate(c.flow, c.packets, c.bytes, max(0, c.packets - last.get(c.flow, 0)) / duration, None)
                 for c in top_k(counts, self.k, self.by)]
        return Sample(duration, flows)


def read_flows(controller, node: str, instance: str) -> list[FlowCount]:
    """Every flow an NF instance's flow table holds now (both banks of a banked NF)."""
    return flow_counts(controller.read_registers(node, instance, flow_table(controller.spec(node, instance))))


# ---- any flow's Count-Min estimate ---------------------------------------------------------

U32 = 0xFFFFFFFF
# The seeds and multipliers of ebpf/cms.bpf.c (CMS_ROW_SEED) and p4/cms.p4 (count rows), row by row.
XDP_ROW_SEEDS = tuple((0x9E3779B9 * (2 * r + 1)) & U32 for r in range(8))
BMV2_ROW_MULTIPLIERS = (0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1, 0xD3A2646D, 0xFD7046C5, 0xB55A4F09)


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & U32


def murmur3_flow(words: tuple[int, ...], seed: int) -> int:
    """flow_key_hash of ebpf/include/flowkey.h: MurmurHash3_x86_32 over the key's ten 32-bit words."""
    h = seed
    for w in words:
        k = _rotl32((w * 0xCC9E2D51) & U32, 15) * 0x1B873593 & U32
        h = (_rotl32(h ^ k, 13) * 5 + 0xE6546B64) & U32
    h ^= 4 * len(words)
    h ^= h >> 16
    h = h * 0x85EBCA6B & U32
    h ^= h >> 13
    h = h * 0xC2B2AE35 & U32
    return h ^ (h >> 16)


def _key_fields(flow: Flow, key_mode: int) -> tuple[int, int, int, int, int]:
    """The flow as the data plane keys it: IPv4 as IPv4-mapped IPv6, no ports in key mode 1."""
    def addr128(a) -> int:
        return int(a) | 0xFFFF00000000 if a.version == 4 else int(a)
    sport, dport = (0, 0) if key_mode == 1 else (flow.sport, flow.dport)
    return addr128(flow.src), addr128(flow.dst), sport, dport, flow.proto


def xdp_flow_words(flow: Flow, key_mode: int = 0) -> tuple[int, ...]:
    """struct flow_key as ten little-endian 32-bit words: addresses in network order, ports in
    host order, the protocol, three zero bytes."""
    src, dst, sport, dport, proto = _key_fields(flow, key_mode)
    raw = (src.to_bytes(16, "big") + dst.to_bytes(16, "big") + sport.to_bytes(2, "little")
           + dport.to_bytes(2, "little") + bytes([proto, 0, 0, 0]))
    return tuple(int.from_bytes(raw[i:i + 4], "little") for i in range(0, 40, 4))


def bmv2_fingerprint(flow: Flow, key_mode: int = 0) -> int:
    """flow_fingerprint of p4/include/pipeline.p4: CRC-32 of the key's fields, concatenated."""
    src, dst, sport, dport, proto = _key_fields(flow, key_mode)
    return zlib.crc32(src.to_bytes(16, "big") + dst.to_bytes(16, "big") + sport.to_bytes(2, "big")
                      + dport.to_bytes(2, "big") + bytes([proto]))


def sketch_hash(target: str, params: dict) -> Callable[[Flow], list[int]]:
    """A flow's column in each row of a cms instance's sketch, as the data plane picks it."""
    rows, columns, key_mode = params["rows"], params["columns"], params.get("key_mode", 0)
    if target == "bmv2":
        def columns_of(flow: Flow) -> list[int]:
            fp = bmv2_fingerprint(flow, key_mode)
            return [((fp * m) >> 32) & (columns - 1) for m in BMV2_ROW_MULTIPLIERS[:rows]]
    else:
        def columns_of(flow: Flow) -> list[int]:
            words = xdp_flow_words(flow, key_mode)
            return [murmur3_flow(words, seed) & (columns - 1) for seed in XDP_ROW_SEEDS[:rows]]
    return columns_of


def sketch_columns(controller, node: str, instance: str, flow: Flow) -> list[int]:
    """The flow's column in each row of the instance's sketch."""
    row = controller.instance(node, instance)
    return sketch_hash(row.target, row.params)(flow)


def sketch_estimate(sketch: dict[str, np.ndarray], columns: list[int], flow: Flow) -> FlowCount:
    """A flow's estimate in one bank's sketch ([row][column] arrays): the minimum over its cells."""
    cells = (np.arange(len(columns)), np.asarray(columns))
    return FlowCount(flow, int(np.asarray(sketch["packets"])[cells].min()),
                     int(np.asarray(sketch["bytes"])[cells].min()) if "bytes" in sketch else None)


def flow_estimate(controller, node: str, instance: str, flow: Flow, bank: int | None = None) -> FlowCount:
    """Any flow's Count-Min estimate in a bank of a cms instance (default: the active bank, the
    epoch so far), whether the candidates hold it or not; never below its true count there."""
    spec = controller.spec(node, instance)
    if not has_epochs(spec) or "sketch" not in spec.stats:
        raise StatsError(f"NF {spec.name} (instance {instance}) has no Count-Min sketch to estimate flows from",
                         hint="estimate flows of a cms instance; read precision's tracked flows with read_flows")
    if bank is None:
        bank = int(controller.read_registers(node, instance, "control")["active_bank"].reshape(-1)[0]) & 1
    if bank not in (0, 1):
        raise StatsError(f"a sketch has banks 0 and 1, not {bank}")
    sketch = {f: a[bank] for f, a in controller.read_registers(node, instance, "sketch").items()}
    return sketch_estimate(sketch, sketch_columns(controller, node, instance, flow), flow)


# ---- real state memory -------------------------------------------------------------------

@dataclass(frozen=True)
class StateMap:
    """One map (XDP) or register array (BMv2) of an instance: entries x bytes per entry."""
    name: str
    entries: int
    entry_bytes: int   # as the target stores it: XDP rounds a value up to 8 bytes, per CPU for per-CPU maps

    @property
    def bytes(self) -> int:
        return self.entries * self.entry_bytes


@dataclass(frozen=True)
class StateMemory:
    node: str
    instance: str
    target: str
    maps: tuple[StateMap, ...] = field(default_factory=tuple)

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.maps)


def state_memory(controller, node: str, instance: str) -> StateMemory:
    """What a deployed instance's state really takes: on XDP every map the instance pinned (its
    program excluded), max_entries x the value size as the kernel stores it; on BMv2 the
    register arrays its catalog statistics bind, cells x bitwidth in whole bytes."""
    row = controller.instance(node, instance)
    if row.target == "bmv2":
        maps = _bmv2_registers(controller, node, instance)
    else:
        maps = _xdp_maps(controller, node, instance)
    return StateMemory(node, instance, row.target, tuple(maps))


def _xdp_maps(controller, node: str, instance: str) -> list[StateMap]:
    from controller.bpf import libbpf
    from controller.targets.chain import PROG_PIN

    pins = controller.target("xdp").pin_dir(controller.node(node), instance)
    if not pins.is_dir():
        raise StatsError(f"instance {instance} on {node} has no pinned maps at {pins}",
                         hint=f"is it running? innet nf list {node}; innet reconcile repairs it")
    out = []
    for pin in sorted(pins.iterdir()):
        if pin.name == PROG_PIN:
            continue
        m = libbpf.BpfMap.from_pin(str(pin))
        try:
            out.append(StateMap(pin.name, m.max_entries, m.read_size if m.per_cpu else m.stride))
        finally:
            m.close()
    return out


def _bmv2_registers(controller, node: str, instance: str) -> list[StateMap]:
    import json
    from pathlib import Path

    from controller.targets.bmv2 import RECORD_PREFIX

    record = controller.target("bmv2").records.get(node, RECORD_PREFIX + instance)
    if record is None:
        raise StatsError(f"instance {instance} is not deployed on the BMv2 switch of {node}",
                         hint=f"innet nf list {node}")
    arrays = {r["name"]: r for r in json.loads(Path(record["json"]).read_text()).get("register_arrays", [])}
    wanted = []
    for stat in controller.spec(node, instance).stats.values():
        for names in stat.bmv2.get("registers", {}).values():
            wanted += names if isinstance(names, list) else [names]
    out = []
    for name in dict.fromkeys(wanted):
        found = [r for full, r in arrays.items() if full == name or full.endswith("." + name)]
        if len(found) != 1:
            raise StatsError(f"{instance} on {node}: the P4 program has {'no' if not found else 'several'} "
                             f"register '{name}'", hint="the program and the catalog disagree: fix one of them")
        out.append(StateMap(name, found[0]["size"], (found[0]["bitwidth"] + 7) // 8))
    return out
