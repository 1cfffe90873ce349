"""Flow statistics from heavy-hitter NFs (cms, precision), through the target-neutral interface.

An NF's flow table is a `registers` statistic whose cells hold a flow key (src_addr,
dst_addr, src_port, dst_port, proto) and a packet estimate (and maybe bytes); the cms
candidates and the precision flows both are one. The pure functions here take register
arrays as `Controller.read_registers` returns them (field -> numpy array), so a benchmark
that reads maps itself can use them too. `SketchEpochs` closes the epochs of an NF with
two banks (cms): it flips the bank, waits for packets in flight, then reads and resets
the closed bank.
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

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

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def packets(self) -> int:
        """Every packet counted in the epoch: each one adds 1 to exactly one cell of each row."""
        return int(self.sketch["packets"][0].sum())

    @property
    def bytes(self) -> int:
        return int(self.sketch["bytes"][0].sum())

    def top(self, k: int, by: str = "packets") -> list[FlowCount]:
        return heavy_hitters(self.flows, k, by)

    def rates(self, k: int | None = None, by: str = "packets") -> list[FlowRate]:
        """Rates of the top-k flows, or of every flow the epoch kept (k None)."""
        counts = flow_counts(self.flows) if k is None else self.top(k, by)
        return rates(counts, self.duration)


class SketchEpochs:
    """Epochs of a banked NF (cms) on a node: each close() returns the epoch just ended.

    The first epoch runs from this object's creation; what the bank held before is
    dropped by restart(), which a caller wanting exact rates runs first."""

    def __init__(self, controller, node: str, instance: str = "cms", grace_s: float = DEFAULT_GRACE_S):
        self.ctl, self.node, self.nf = controller, node, instance
        spec = controller.spec(node, instance)
        if not has_epochs(spec):
            raise StatsError(f"NF {spec.name} (instance {instance}) has no epochs (no control.active_bank)",
                             hint="read its flow table with read_flows instead")
        self.flow_stat = flow_table(spec)
        params = controller.instance(node, instance).params
        # cells per bank of each banked statistic: the shape after its leading [bank] axis
        self.per_bank = {stat: int(np.prod(spec.stat(stat).shape(params)[1:]))
                         for stat in ("sketch", self.flow_stat)}
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
        sketch_bank = {f: a[bank].copy() for f, a in sketch.items()}
        flows_bank = {f: a[bank].copy() for f, a in flows.items()}
        self._reset_bank(bank)
        epoch = Epoch(bank, self.started, ended, sketch_bank, flows_bank)
        self.started = ended
        return epoch

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
