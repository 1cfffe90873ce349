"""The tc egress hook: an eBPF program as a cls_bpf direct-action filter on clsact egress.

XdpTarget attaches NFs whose catalog entry says `hook: tc_egress` through this hook
instead of IFLA_XDP; both hooks offer the same three steps (prog_id, attach, detach) to
its deploy, rollback and remove. The filter's name carries the NF and the program id
(innet-<nf>-<id>), so the hook finds its own filter among any others on the interface
and can tell which program it runs.
"""
from __future__ import annotations

import errno
import logging

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


class TcEgressHook:
    """One NF's filter on the clsact egress of interfaces."""

    what = "tc egress"

    def __init__(self, nf: str):
        self.prefix = f"innet-{nf}-"

    def detach_hint(self, ifname: str) -> str:
        return f"delete its filter: tc filter del dev {ifname} egress"

    def _ours(self, ipr: IPRoute, ifindex: int) -> tuple[dict, int] | None:
        """The NF's filter on the interface's egress and the program id in its name."""
        try:
            filters = ipr.get_filters(ifindex, parent=EGRESS)
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT):   # no clsact qdisc: no filters
                return None
            raise
        for f in filters:
            options = f.get_attr("TCA_OPTIONS")
            name = options.get_attr("TCA_BPF_NAME") if options else None
            if f.get_attr("TCA_KIND") == "bpf" and name and name.startswith(self.prefix):
                return f, int(name[len(self.prefix):])
        return None

    def prog_id(self, ipr: IPRoute, ifindex: int) -> int | None:
        ours = self._ours(ipr, ifindex)
        return ours[1] if ours else None

    def attach(self, ipr: IPRoute, node: Node, ifname: str, ifindex: int, prog_fd: int) -> str:
        """Add the filter, or swap the program of the one there in place (no unclassified gap)."""
        name = f"{self.prefix}{libbpf.prog_id(prog_fd)}"
        try:
            try:
                ipr.tc("add", "clsact", ifindex)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            ours = self._ours(ipr, ifindex)
            if ours:
                pref = ours[0]["info"] >> 16
                ipr.tc("replace-filter", "bpf", ifindex, FILTER_HANDLE, fd=prog_fd, name=name, parent=EGRESS,
                       prio=pref, direct_action=True)
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
        """Delete the filter; drop the clsact qdisc too once no filter is left on it."""
        if ifindex is None:
            return
        try:
            ours = self._ours(ipr, ifindex)
        except NetlinkError:
            return   # the interface is gone, and its filters with it
        if not ours or (only_prog_id is not None and ours[1] != only_prog_id):
            return
        f = ours[0]
        ipr.tc("del-filter", "bpf", ifindex, f["handle"], parent=EGRESS, prio=f["info"] >> 16)
        if not ipr.get_filters(ifindex, parent=EGRESS) and not ipr.get_filters(ifindex, parent=INGRESS):
            ipr.tc("del", "clsact", ifindex)
