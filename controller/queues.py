"""Priority queues on an egress interface, target-neutral: what each level gets and what it did.

A queueing NF (one with a `levels` parameter, such as prio) classifies packets into levels;
the target serves the levels of an interface in strict priority (level 0 first), each level
guaranteed `rate_bps` and allowed to borrow up to `ceil_bps` of the link. XDP targets build
this as an HTB tree (controller.qos); BMv2 targets use the switch's priority queues.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from controller.catalog import NFSpec
from controller.errors import QueueError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps)?\s*$", re.IGNORECASE)
_UNITS = {"bit": 1, "bps": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


@dataclass(frozen=True)
class QueueLevel:
    level: int
    rate_bps: int                 # guaranteed
    ceil_bps: int | None = None   # at most this, borrowing; None: the link rate


@dataclass(frozen=True)
class QueueStats:
    level: int
    rate_bps: int
    ceil_bps: int
    packets: int          # sent
    bytes: int
    drops: int
    backlog_packets: int  # queued now
    backlog_bytes: int


def parse_rate(text: str | int, what: str = "rate") -> int:
    """Bits per second from 2500000, "2.5mbit", "500kbit", "1gbit" (SI units, as tc writes them)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _RATE.match(str(text))
    if not m:
        raise QueueError(f"{what} {text!r} is not a rate", hint="write it as bits/s: 20mbit, 500kbit, 1gbit, 2500000")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "bit").lower()])


def nf_levels(nf: NFSpec, params: dict) -> int:
    """How many levels the deployed NF classifies into."""
    if "levels" not in nf.parameters:
        raise QueueError(f"NF {nf.name} has no priority levels, so it has no queues",
                         hint="queues go with a queueing NF such as prio")
    return params["levels"]


def check_levels(nf: NFSpec, params: dict, where: str, link_rate_bps: int,
                 levels: list[QueueLevel]) -> list[QueueLevel]:
    """The levels in order with ceilings filled in, or a QueueError saying what does not fit."""
    count = nf_levels(nf, params)
    if link_rate_bps <= 0:
        raise QueueError(f"{where}: link rate {link_rate_bps} bit/s must be positive")
    seen = {}
    for q in levels:
        if not isinstance(q.level, int) or not 0 <= q.level < count:
            raise QueueError(f"{where}: unknown level {q.level}; {nf.name} runs with levels 0..{count - 1}",
                             hint="level 0 is served first, the last level is the default")
        if q.level in seen:
            raise QueueError(f"{where}: level {q.level} is given twice")
        seen[q.level] = q
    if len(seen) != count:
        missing = sorted(set(range(count)) - set(seen))
        raise QueueError(f"{where}: {len(seen)} levels given, {nf.name} runs with {count} (missing {missing})",
                         hint=f"give a rate for every level 0..{count - 1}, or redeploy with levels={len(seen)}")
    out = []
    for level in range(count):
        q = seen[level]
        ceil = link_rate_bps if q.ceil_bps is None else q.ceil_bps
        if q.rate_bps <= 0:
            raise QueueError(f"{where}: level {level} rate {q.rate_bps} bit/s must be positive")
        if q.rate_bps > link_rate_bps or ceil > link_rate_bps:
            raise QueueError(f"{where}: level {level} rate {q.rate_bps} / ceil {ceil} bit/s exceeds the link "
                             f"rate {link_rate_bps} bit/s", hint="lower it to the link rate at most")
        if ceil < q.rate_bps:
            raise QueueError(f"{where}: level {level} ceil {ceil} bit/s is below its rate {q.rate_bps} bit/s")
        out.append(QueueLevel(level, q.rate_bps, ceil))
    total = sum(q.rate_bps for q in out)
    if total > link_rate_bps:
        raise QueueError(f"{where}: the guaranteed rates add up to {total} bit/s, more than the link's "
                         f"{link_rate_bps} bit/s", hint="lower some levels' rates; ceilings may each reach the link rate")
    return out
