"""An HTB tree on a Linux egress interface: one class per priority level.

    root htb 1:  (default: the lowest level's class)
      └── 1:1  the link: rate = ceil = link rate
            ├── 1:10  level 0: rate/ceil of the level, HTB prio 0 (served first)
            ├── 1:11  level 1: prio 1
            └── ...

HTB serves the classes under their guaranteed rate first, then lends the spare link
rate by `prio`, so level 0 goes first whenever it has packets. A classifier picks a
level's class by setting skb->priority to its class id (HTB reads a priority whose
major number is its handle as a class id). Callers run these inside the node's
namespace with an IPRoute socket.
"""
from __future__ import annotations

import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller.errors import QueueError
from controller.queues import QueueLevel, QueueStats

ROOT = 0x10000          # 1:
LINK_CLASS = 0x10001    # 1:1
FIRST_LEVEL_MINOR = 0x10
# Bytes a level may send per round among equal-priority classes; set so the kernel
# does not derive it from the rate (and warn for very low or high rates).
QUANTUM = 1600


def level_classid(level: int) -> int:
    return ROOT | (FIRST_LEVEL_MINOR + level)


def _root(ipr: IPRoute, ifindex: int) -> tuple[str, int] | None:
    """Kind and handle of the interface's root qdisc."""
    for q in ipr.get_qdiscs(ifindex):
        if q["parent"] == 0xFFFFFFFF:
            return q.get_attr("TCA_KIND"), q["handle"]
    return None


def check_free(ipr: IPRoute, ifindex: int, where: str) -> None:
    """The interface's root qdisc must be the kernel's default (handle 0:), not one set up by someone else."""
    root = _root(ipr, ifindex)
    if root and root[1] != 0:
        raise QueueError(f"{where} already has a root qdisc ({root[0]} {root[1] >> 16:x}:) that innet did not set up",
                         hint="remove it first (tc qdisc del dev IFACE root) or pick another interface")


def install(ipr: IPRoute, ifindex: int, link_rate_bps: int, levels: list[QueueLevel]) -> dict[int, int]:
    """Build the tree for checked `levels` (see queues.check_levels) in place of the root
    qdisc; returns level -> class id. On failure the interface is left with no tree."""
    remove(ipr, ifindex)
    try:
        ipr.tc("add", "htb", ifindex, ROOT, default=FIRST_LEVEL_MINOR + len(levels) - 1)
        ipr.tc("add-class", "htb", ifindex, LINK_CLASS, parent=ROOT, rate=f"{link_rate_bps}bit",
               ceil=f"{link_rate_bps}bit", quantum=QUANTUM)
        for q in levels:
            ipr.tc("add-class", "htb", ifindex, level_classid(q.level), parent=LINK_CLASS, rate=f"{q.rate_bps}bit",
                   ceil=f"{q.ceil_bps}bit", prio=q.level, quantum=QUANTUM)
    except BaseException as exc:
        remove(ipr, ifindex)
        if isinstance(exc, NetlinkError):
            raise QueueError(f"cannot set up the HTB tree on interface {ifindex}: {exc}",
                             hint="check that the kernel has sch_htb and the rates are sane") from exc
        raise
    return {q.level: level_classid(q.level) for q in levels}


def remove(ipr: IPRoute, ifindex: int) -> bool:
    """Delete the tree (the kernel puts its default qdisc back); False if there was none."""
    root = _root(ipr, ifindex)
    if not root or root != ("htb", ROOT):
        return False
    try:
        ipr.tc("del", index=ifindex, handle=ROOT, parent=0xFFFFFFFF)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.EINVAL):
            raise
        return False
    return True


def read_stats(ipr: IPRoute, ifindex: int, count: int) -> list[QueueStats]:
    """Per-level class statistics, level order; a level whose class is missing is an error."""
    classes = {c["handle"]: c for c in ipr.get_classes(ifindex)}
    out = []
    for level in range(count):
        c = classes.get(level_classid(level))
        if c is None:
            raise QueueError(f"interface {ifindex} has no HTB class for level {level}",
                             hint="configure the queues again")
        options = c.get_attr("TCA_OPTIONS")
        parms = options.get_attr("TCA_HTB_PARMS")
        # rates of 2^32 bytes/s and more come in the 64-bit attributes
        rate = options.get_attr("TCA_HTB_RATE64") or parms["rate"]
        ceil = options.get_attr("TCA_HTB_CEIL64") or parms["ceil"]
        stats = c.get_attr("TCA_STATS2")
        basic, queue = stats.get_attr("TCA_STATS_BASIC"), stats.get_attr("TCA_STATS_QUEUE")
        out.append(QueueStats(level, rate * 8, ceil * 8, basic["packets"], basic["bytes"],
                              queue["drops"], queue["qlen"], queue["backlog"]))
    return out
