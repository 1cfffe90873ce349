"""The tc egress hook: an eBPF program as a cls_bpf direct-action filter on clsact egress.

XdpTarget attaches NF instances whose catalog entry says `hook: tc_egress` through this hook
instead of IFLA_XDP; both hooks offer the same three steps (prog_id, attach, detach) to its
deploy, rollback and remove. The filter's name carries the instance and the program id
(innet-<instance>-<id>), so the hook finds its own filter among any others on the interface
and can tell which program it runs, and a cleanup finds every filter innet left behind.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller.bpf import libbpf
from controller.errors import BpfError, TargetError
from controller.node import Node

log = logging.getLogger("innet.tc")

CLSACT = 0xFFFF0000
EGRESS = 0xFFFFFFF3    # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
INGRESS = 0xFFFFFFF2
FILTER_HANDLE = 1
PREFIX = "innet-"


@dataclass(frozen=True)
class InnetFilter:
    """A filter innet put on an interface's egress: the instance it was for and the program it runs."""
    msg: object     # the filter as dumped (its handle and pref delete it)
    instance: str
    prog_id: int


def _parse_name(name: str | None) -> tuple[str, int] | None:
    """(instance, program id) from a filter name innet-<instance>-<id>."""
    if not name or not name.startswith(PREFIX):
        return None
    instance, _, prog_id = name[len(PREFIX):].rpartition("-")
    return (instance, int(prog_id)) if instance and prog_id.isdigit() else None


def innet_filters(ipr: IPRoute, ifindex: int) -> list[InnetFilter]:
    """innet's filters on the interface's egress ([] with no clsact qdisc or no interface)."""
    try:
        filters = ipr.get_filters(ifindex, parent=EGRESS)
    except NetlinkError as exc:
        if exc.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):   # no clsact qdisc (or interface): no filters
            return []
        raise
    out = []
    for f in filters:
        options = f.get_attr("TCA_OPTIONS")
        parsed = _parse_name(options.get_attr("TCA_BPF_NAME") if options else None)
        if f.get_attr("TCA_KIND") == "bpf" and parsed:
            out.append(InnetFilter(f, *parsed))
    return out


def delete_filter(ipr: IPRoute, ifindex: int, f: InnetFilter) -> None:
    """Delete the filter; drop the clsact qdisc too once no filter is left on it."""
    ipr.tc("del-filter", "bpf", ifindex, f.msg["handle"], parent=EGRESS, prio=f.msg["info"] >> 16)
    if not ipr.get_filters(ifindex, parent=EGRESS) and not ipr.get_filters(ifindex, parent=INGRESS):
        ipr.tc("del", "clsact", ifindex)


class TcEgressHook:
    """One instance's filter on the clsact egress of interfaces."""

    what = "tc egress"

    def __init__(self, instance: str):
        self.instance = instance

    def detach_hint(self, ifname: str) -> str:
        return f"delete its filter: tc filter del dev {ifname} egress"

    def _ours(self, ipr: IPRoute, ifindex: int) -> InnetFilter | None:
        return next((f for f in innet_filters(ipr, ifindex) if f.instance == self.instance), None)

    def prog_id(self, ipr: IPRoute, ifindex: int) -> int | None:
        ours = self._ours(ipr, ifindex)
        return ours.prog_id if ours else None

    def others(self, ipr: IPRoute, ifindex: int) -> list[str]:
        """Other instances whose filters run on the interface's egress."""
        return [f.instance for f in innet_filters(ipr, ifindex) if f.instance != self.instance]

    def attach(self, ipr: IPRoute, node: Node, ifname: str, ifindex: int, prog_fd: int) -> str:
        """Add the filter, or swap the program of the one there in place (no unclassified gap)."""
        name = f"{PREFIX}{self.instance}-{libbpf.prog_id(prog_fd)}"
        try:
            try:
                ipr.tc("add", "clsact", ifindex)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            ours = self._ours(ipr, ifindex)
            if ours:
                ipr.tc("replace-filter", "bpf", ifindex, FILTER_HANDLE, fd=prog_fd, name=name, parent=EGRESS,
                       prio=ours.msg["info"] >> 16, direct_action=True)
            else:
                ipr.tc("add-filter", "bpf", ifindex, FILTER_HANDLE, fd=prog_fd, name=name, parent=EGRESS,
                       direct_action=True)
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                raise BpfError(f"attaching a tc filter to {node.name}:{ifname}: permission denied", errno=exc.code)
            raise TargetError(f"cannot attach the tc egress program to {node.name}:{ifname}: {exc}",
                              hint="check that the interface exists and the kernel has clsact and cls_bpf") from exc
        return self.what

    def detach(self, ipr: IPRoute, ifindex: int | None, only_prog_id: int | None) -> None:
        if ifindex is None:
            return
        try:
            ours = self._ours(ipr, ifindex)
        except NetlinkError:
            return   # the interface is gone, and its filters with it
        if not ours or (only_prog_id is not None and ours.prog_id != only_prog_id):
            return
        delete_filter(ipr, ifindex, ours)
