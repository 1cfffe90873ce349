"""Which flows are elephants, with hysteresis, and what they would take if the network let them.

A flow becomes an elephant in the epoch its rate reaches the threshold: an absolute rate, or a
share of the smallest capacity on its current path (Hedera's 10% of a link). It stays one until
its rate has stayed below `leave_ratio` times the threshold for `hold` epochs in a row, so a
flow that hovers around the threshold is not moved back and forth.

Demand: a measured rate is what the network gave, not what the flow wants. An elephant whose
current path has a saturated arc (the elephants crossing it fill `saturation` of its capacity)
is network-limited; like Hedera's estimator for flows limited by the network rather than by
their hosts, innet assumes it is elastic (TCP) and would take its path's whole bottleneck
capacity on a path of its own. An elephant on a path with room is taken at its measured rate.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from controller.stats import Flow as FlowKey
from controller.te.errors import TeError

SATURATION = 0.9


@dataclass(frozen=True)
class ElephantPolicy:
    mbps: float | None = None        # an absolute threshold, Mbit/s
    share: float | None = 0.1        # or a share of the smallest capacity on the flow's path
    leave_ratio: float = 0.5
    hold: int = 3

    def __post_init__(self):
        if (self.mbps is None) == (self.share is None):
            raise TeError("an elephant threshold is either a rate (e.g. 20mbit) or a share of link capacity (e.g. 10%)")
        if self.mbps is not None and not self.mbps > 0:
            raise TeError(f"an elephant threshold must be a positive rate, got {self.mbps!r} Mbit/s")
        if self.share is not None and not 0 < self.share <= 1:
            raise TeError(f"an elephant threshold share must lie in (0, 1], got {self.share!r}")
        if not 0 < self.leave_ratio <= 1:
            raise TeError(f"leave_ratio must lie in (0, 1], got {self.leave_ratio!r}")
        if self.hold < 1:
            raise TeError(f"hold must be at least one epoch, got {self.hold!r}")

    def threshold(self, bottleneck_mbps: float | None) -> float | None:
        """The flow's threshold in Mbit/s, given its path's bottleneck (None: no threshold applies,
        a share of an unconstrained path)."""
        if self.mbps is not None:
            return self.mbps
        return None if bottleneck_mbps is None else self.share * bottleneck_mbps

    def describe(self) -> str:
        rule = f"{self.mbps:g} Mbit/s" if self.mbps is not None else f"{self.share:.0%} of the path's bottleneck"
        return f"rate >= {rule}; leaves below {self.leave_ratio:.0%} of it for {self.hold} epochs"


def parse_threshold(text: str) -> ElephantPolicy:
    """'10%' (share of the path's bottleneck) or '20mbit' / '20' (Mbit/s) as a policy."""
    value = text.strip().lower()
    try:
        if value.endswith("%"):
            return ElephantPolicy(share=float(value[:-1]) / 100)
        for unit, scale in (("gbit", 1000.0), ("mbit", 1.0), ("kbit", 0.001)):
            if value.endswith(unit):
                return ElephantPolicy(mbps=float(value[:-len(unit)]) * scale, share=None)
        return ElephantPolicy(mbps=float(value), share=None)
    except ValueError:
        raise TeError(f"elephant threshold '{text}' is neither a share like 10% nor a rate like 20mbit") from None


@dataclass
class ElephantTracker:
    """The elephant set across epochs."""
    policy: ElephantPolicy
    quiet: dict[FlowKey, int] = field(default_factory=dict)   # elephant -> epochs below its leave rate

    @property
    def elephants(self) -> list[FlowKey]:
        """The elephants, the longest-standing first."""
        return list(self.quiet)

    def update(self, rates: dict[FlowKey, float], thresholds: dict[FlowKey, float | None]) -> tuple[set, set]:
        """Fold in one epoch's rates (Mbit/s; flows not listed ran at 0); returns (joined, left)."""
        joined, left = set(), set()
        for flow in sorted(rates, key=FlowKey.sort_key):
            limit = thresholds.get(flow)
            if flow not in self.quiet and limit is not None and rates[flow] >= limit:
                self.quiet[flow] = 0
                joined.add(flow)
        for flow in list(self.quiet):
            if flow in joined:
                continue
            limit = thresholds.get(flow)
            if limit is not None and rates.get(flow, 0.0) >= self.policy.leave_ratio * limit:
                self.quiet[flow] = 0
                continue
            self.quiet[flow] += 1
            if self.quiet[flow] >= self.policy.hold:
                del self.quiet[flow]
                left.add(flow)
        return joined, left


def estimate_demands(rates: dict[FlowKey, float], arcs: dict[FlowKey, list[int]], capacity,
                     bottleneck: dict[FlowKey, float | None]) -> dict[FlowKey, float]:
    """Each elephant's demand in Mbit/s: its rate, or its path's bottleneck capacity when an arc
    of its path is saturated by the elephants crossing it (`capacity(arc)` in Mbit/s)."""
    load: dict[int, float] = defaultdict(float)
    for flow, rate in rates.items():
        for arc in arcs[flow]:
            load[arc] += rate
    demands = {}
    for flow, rate in rates.items():
        limited = any(load[a] >= SATURATION * capacity(a) for a in arcs[flow])
        cap = bottleneck[flow]
        demands[flow] = max(rate, cap) if limited and cap is not None else rate
    return demands
