"""The node kernel's own FIB: the slow path that must agree with the fast path.

Each route goes in with a permanent neighbour entry for its next hop, carrying the same MAC
the fast path writes, so packets the fast path hands up leave the same way.

Routes are written in batches: thousands of netlink requests per send on one NETLINK_ROUTE
socket, each with its own sequence number and ack, so a refusal maps back to its route without
a round trip per route. innet's routes carry their own protocol number (INNET_PROTO, which
`ip route` shows as "proto 73"), telling them apart from the kernel's and the administrator's.

Per route, Python's share has to stay near the kernel's (~4 µs) for 100,000 routes/s: hence
addresses parsed with inet_pton rather than ipaddress, requests stamped from templates pyroute2
encoded (_Stamp), and dumps scanned for the few messages worth decoding.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator, NamedTuple, Sequence

from pyroute2.netlink import (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
                              NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, SOL_NETLINK, nlmsg,
                              nlmsgerr)
from pyroute2.netlink.rtnl import (RTM_DELNEIGH, RTM_DELROUTE, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWNEIGH,
                                   RTM_NEWROUTE)
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE, RTNH_F_ONLINK, rtmsg

from controller.errors import EntryError, TargetError
from controller.netns import netns as entered
from controller.tables import mac_bytes, mac_str, parse_mac

INNET_PROTO = 0x49          # rtm_protocol of innet's routes ('I'); unassigned in the kernel's rtnetlink.h
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
IPV6_DEFAULT_METRIC = 1024  # what the kernel gives an IPv6 route without RTA_PRIORITY; IPv4's is 0

# The kernel handles a whole send before it returns, queueing one ack per request: the receive
# buffer must hold a send's acks (0.5-1 KiB of socket memory each), or the kernel drops them.
# Larger sends gain nothing measurable; 32768 requests overflow the buffer below.
REQUESTS_PER_SEND = 4096
SEND_BUFFER = 1 << 20       # doubled by the kernel: 2 MiB, > REQUESTS_PER_SEND requests of < 200 bytes
RECEIVE_BUFFER = 1 << 23    # doubled by the kernel: 16 MiB, 4x what a send's acks take
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33   # <asm-generic/socket.h>; Python's socket does not export them

# netlink's fixed layout (<linux/netlink.h>, <linux/rtnetlink.h>, <linux/neighbour.h>); offsets
# count from the start of a message, past its 16-byte nlmsghdr
ACK = struct.Struct("IHHIIi")   # nlmsghdr (length, type, flags, seq, pid), then nlmsgerr's error code
ATTRS_START = 16 + 12           # nlmsghdr, then struct rtmsg or struct ndmsg: both 12 bytes
RTM_FAMILY, RTM_DST_LEN, RTM_TOS = 16, 17, 19
NDM_IFINDEX, NDM_STATE = 20, 24
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH = 1, 4, 5, 6, 9
NDA_DST, NDA_LLADDR = 1, 2
NLA_TYPE_MASK = 0x3fff          # an attribute's type, without the nested and byte-order flags

STAMPS = 4096                # request templates kept: one per (length, gateway, interface) in use
MISSING = (errno.ESRCH, errno.ENOENT)     # no such route, no such neighbour
SHOWN_REFUSALS = 5


@dataclass(frozen=True)
class KernelRoute:
    prefix: str            # canonical prefix, IPv4 or IPv6
    ifindex: int           # egress interface in the node's namespace
    via: str | None        # gateway; None: the prefix is one host, on-link
    mac: str | None        # next hop's MAC for the permanent neighbour entry (gateway, or the host itself)


class _Checked(NamedTuple):
    """A route with its addresses packed once, as netlink carries them."""
    route: KernelRoute
    key: tuple[int, bytes, int]     # (family, destination, length): the prefix, whatever its spelling
    hop: bytes                      # the gateway, or the host itself
    mac: bytes | None

    @property
    def neighbour(self) -> tuple[int, bytes]:
        return self.route.ifindex, self.hop

    def describe_route(self) -> str:
        return f"route {self.route.prefix}"

    def describe_neighbour(self) -> str:
        return f"neighbour {socket.inet_ntop(self.key[0], self.hop)} on ifindex {self.route.ifindex}"


@dataclass(frozen=True)
class _Refusal:
    code: int
    reason: str            # the kernel's extended ack, and the errno's text

    def __str__(self) -> str:
        return self.reason


class _Phase(NamedTuple):
    """Requests of one kind, one per item, and how to undo an accepted one (built only for a
    rollback: most calls never need it)."""
    items: list[_Checked]
    requests: list[bytes]
    undo: Callable[[_Checked], bytes]
    describe: Callable[[_Checked], str]


# ---- checking the caller's routes ----

def _family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _check(routes: Sequence[KernelRoute], where: str) -> list[_Checked]:
    """Every route parsed, one route per prefix and one MAC per next hop."""
    checked, prefixes, hop_macs, macs = [], set(), {}, {}
    for route in routes:
        item = _check_one(route, where, macs)
        if item.key in prefixes:
            raise EntryError(f"{where}: route {route.prefix} appears twice in one batch", hint="give each prefix once")
        prefixes.add(item.key)
        neighbour = item.neighbour
        if item.mac is not None and hop_macs.setdefault(neighbour, item.mac) != item.mac:
            raise EntryError(f"{where}: {item.describe_neighbour()} is given two MACs, "
                             f"{mac_str(hop_macs[neighbour])} and {mac_str(item.mac)}",
                             hint="one neighbour entry per next hop: give every route through it the same MAC")
        checked.append(item)
    return checked


def _check_one(route: KernelRoute, where: str, macs: dict[str, bytes]) -> _Checked:
    """`macs` caches parsed MACs: many routes share a next hop."""
    family, dst, dst_len = _parse_prefix(route.prefix, where)
    if route.via is None:
        if dst_len != len(dst) * 8:
            raise EntryError(f"{where}: route {route.prefix} has no gateway but is not one host",
                             hint="give via=<next-hop address>; only a host route can be on-link")
        hop = dst
    else:
        hop = _parse_address(route.via, f"{where}: route {route.prefix}: gateway")
        if len(hop) != len(dst):
            raise EntryError(f"{where}: route {route.prefix}: gateway {route.via} is not of the prefix's family")
    if route.mac is not None and route.mac not in macs:
        macs[route.mac] = mac_bytes(parse_mac(route.mac, f"{where}: route {route.prefix} next-hop MAC"))
    return _Checked(route, (family, dst, dst_len), hop, macs.get(route.mac))


def _parse_prefix(text: str, where: str) -> tuple[int, bytes, int]:
    address, _, length = text.partition("/")
    family = _family_of(address)
    try:
        dst = socket.inet_pton(family, address)
    except OSError:
        dst = b""
    host_bits = len(dst) * 8 - int(length) if length.isdigit() else -1
    if not dst or host_bits < 0 or int.from_bytes(dst, "big") & ((1 << host_bits) - 1):
        raise EntryError(f"{where}: route {text!r} is not a canonical prefix",
                         hint="write address/length with the host bits zero, e.g. 10.1.0.0/16 or 2001:db8::/32")
    return family, dst, len(dst) * 8 - host_bits


def _parse_address(text: str, what: str) -> bytes:
    try:
        return socket.inet_pton(_family_of(text), text)
    except (OSError, TypeError):
        raise EntryError(f"{what} {text!r} is not an IPv4 or IPv6 address") from None


# ---- encoding requests ----

class _Stamp:
    """A request pyroute2 encoded once, copied for each use with the values of its leading
    attributes swapped in (a destination, a MAC): encoding each request with pyroute2 costs
    ~45 µs, a copy ~1 µs."""

    def __init__(self, message: nlmsg, swapped: int):
        message.encode()
        self.data = bytes(message.data)
        self.slots = []
        offset = ATTRS_START
        for _ in range(swapped):
            (length,) = struct.unpack_from("H", self.data, offset)
            self.slots.append(slice(offset + 4, offset + length))    # 4: the attribute's own header
            offset += (length + 3) & ~3

    def __call__(self, *values: bytes) -> bytes:
        request = bytearray(self.data)
        for slot, value in zip(self.slots, values):
            request[slot] = value
        return request


def _unspecified(family: int) -> str:
    return "0.0.0.0" if family == socket.AF_INET else "::"


@lru_cache(maxsize=STAMPS)
def _replace_route_stamp(family: int, dst_len: int, via: str | None, ifindex: int) -> _Stamp:
    msg = rtmsg()
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    msg["family"], msg["dst_len"], msg["table"] = family, dst_len, RT_TABLE_MAIN
    msg["proto"], msg["type"] = INNET_PROTO, RTN_UNICAST
    msg["scope"] = RT_SCOPE_UNIVERSE if via else RT_SCOPE_LINK
    msg["attrs"] = [("RTA_DST", _unspecified(family)), *([("RTA_GATEWAY", via)] if via else []),
                    ("RTA_OIF", ifindex)]
    return _Stamp(msg, swapped=1)


@lru_cache(maxsize=STAMPS)
def _delete_route_stamp(family: int, dst_len: int) -> _Stamp:
    """Deletes innet's route for the prefix, whatever its next hop: the protocol number keeps
    the kernel's and the administrator's routes out of reach."""
    msg = rtmsg()
    msg["header"]["type"] = RTM_DELROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["family"], msg["dst_len"], msg["table"] = family, dst_len, RT_TABLE_MAIN
    msg["proto"], msg["type"], msg["scope"] = INNET_PROTO, RTN_UNICAST, RT_SCOPE_NOWHERE  # NOWHERE: any scope
    msg["attrs"] = [("RTA_DST", _unspecified(family))]
    return _Stamp(msg, swapped=1)


@lru_cache(maxsize=STAMPS)
def _neighbour_stamp(msg_type: int, family: int, ifindex: int) -> _Stamp:
    msg = ndmsg()
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["family"], msg["ifindex"] = family, ifindex
    msg["attrs"] = [("NDA_DST", _unspecified(family))]
    if msg_type == RTM_NEWNEIGH:
        msg["header"]["flags"] |= NLM_F_CREATE | NLM_F_REPLACE
        msg["state"] = NUD_PERMANENT
        msg["attrs"].append(("NDA_LLADDR", "00:00:00:00:00:00"))
    return _Stamp(msg, swapped=len(msg["attrs"]))


def _replace_route(r: _Checked) -> bytes:
    family, dst, dst_len = r.key
    return _replace_route_stamp(family, dst_len, r.route.via, r.route.ifindex)(dst)


def _delete_route(r: _Checked) -> bytes:
    family, dst, dst_len = r.key
    return _delete_route_stamp(family, dst_len)(dst)


def _replace_neighbour(r: _Checked) -> bytes:
    return _neighbour_stamp(RTM_NEWNEIGH, r.key[0], r.route.ifindex)(r.hop, r.mac)


def _delete_neighbour(r: _Checked) -> bytes:
    return _neighbour_stamp(RTM_DELNEIGH, r.key[0], r.route.ifindex)(r.hop)


def _restore(old: bytes, cls: type[nlmsg], msg_type: int) -> bytes:
    """A request that writes back a message of an earlier dump, as pyroute2's route_load does."""
    msg = cls(old)
    msg.decode()
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    if msg_type == RTM_NEWROUTE:
        msg["flags"] &= RTNH_F_ONLINK   # a dump also reports state (dead, linkdown) the kernel refuses as input
    msg.reset()
    msg.encode()
    return bytes(msg.data)


# ---- reading dumped messages ----
# Only a few fields of most dumped messages matter (which prefix, which metric), and
# pyroute2 decodes a whole message in ~15 µs: these read the fields in place.

def _attr(msg: bytes, kind: int) -> bytes | None:
    at = ATTRS_START
    while at + 4 <= len(msg):
        length, found = struct.unpack_from("HH", msg, at)
        if found & NLA_TYPE_MASK == kind:
            return msg[at + 4:at + length]
        at += max((length + 3) & ~3, 4)
    return None


def _route_key(msg: bytes) -> tuple[int, bytes, int]:
    """As _Checked.key; a default route has no RTA_DST."""
    family, dst_len = msg[RTM_FAMILY], msg[RTM_DST_LEN]
    return family, _attr(msg, RTA_DST) or bytes(4 if family == socket.AF_INET else 16), dst_len


def _metric(msg: bytes) -> int:
    value = _attr(msg, RTA_PRIORITY)
    return struct.unpack("I", value)[0] if value else 0


def _has_gateway(msg: bytes) -> bool:
    return _attr(msg, RTA_GATEWAY) is not None or _attr(msg, RTA_MULTIPATH) is not None


def _neighbour_key(msg: bytes) -> tuple[int, bytes]:
    """As _Checked.neighbour."""
    (ifindex,) = struct.unpack_from("i", msg, NDM_IFINDEX)
    return ifindex, _attr(msg, NDA_DST)


# ---- the socket ----

class _Rtnl:
    """One NETLINK_ROUTE socket in the node's namespace: batched requests and dumps."""

    def __init__(self, path: str | None, where: str):
        self.where = where
        with entered(path):   # a socket stays in the namespace it was made in
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)          # refusals say why
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)   # dumps filtered by the kernel
        except PermissionError as exc:
            self.sock.close()
            raise TargetError(f"{where}: cannot set up a netlink socket for the kernel FIB ({exc.strerror})",
                              hint="run as root (CAP_NET_ADMIN)") from exc
        self.buffer = bytearray(1 << 20)
        self.seq = 0

    def __enter__(self) -> _Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _broken(self, exc: OSError) -> TargetError:
        """Requests or acks lost midway (ENOBUFS: the receive buffer overflowed): what the kernel
        applied is unknown, so nothing can be rolled back."""
        return TargetError(f"{self.where}: netlink to the kernel FIB failed ({exc.strerror}); "
                           f"the FIB may be half written", hint="compare routes() with what you meant to write and "
                           "write again; if it says 'No buffer space', lower fib.REQUESTS_PER_SEND")

    def _receive(self) -> int:
        """One message buffer from the kernel into self.buffer; its size."""
        try:
            return self.sock.recv_into(self.buffer)
        except OSError as exc:
            raise self._broken(exc) from exc

    def apply(self, requests: Sequence[bytes]) -> list[_Refusal | None]:
        """Send every request; per request, None if the kernel accepted it, else its refusal."""
        results: list[_Refusal | None] = []
        for start in range(0, len(requests), REQUESTS_PER_SEND):
            results += self._apply_chunk(requests[start:start + REQUESTS_PER_SEND])
        return results

    def _apply_chunk(self, requests: Sequence[bytes]) -> list[_Refusal | None]:
        chunk = bytearray(b"".join(requests))
        first = self.seq + 1
        offset = 0
        for i, request in enumerate(requests):
            struct.pack_into("I", chunk, offset + 8, first + i)    # nlmsghdr.nlmsg_seq
            offset += len(request)
        self.seq += len(requests)
        try:
            self.sock.send(chunk)
        except OSError as exc:
            raise self._broken(exc) from exc
        results: list[_Refusal | None] = [None] * len(requests)
        pending = len(requests)
        while pending:
            size, offset = self._receive(), 0
            while offset + ACK.size <= size:
                length, msg_type, _, seq, _, error = ACK.unpack_from(self.buffer, offset)
                if msg_type == NLMSG_ERROR and first <= seq <= self.seq:
                    if error:
                        results[seq - first] = self._refusal(bytes(self.buffer[offset:offset + length]), -error)
                    pending -= 1
                offset += (length + 3) & ~3
        return results

    @staticmethod
    def _refusal(ack: bytes, code: int) -> _Refusal:
        msg = nlmsgerr(ack)
        msg.decode()
        text = msg.get_attr("NLMSGERR_ATTR_MSG")
        return _Refusal(code, f"{text} ({os.strerror(code)})" if text else os.strerror(code))

    def dump(self, request: nlmsg, msg_type: int) -> Iterator[bytes]:
        """Each message of the kernel's answer, undecoded."""
        self.seq += 1
        wanted = self.seq
        request["header"]["type"] = msg_type
        request["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        request["header"]["sequence_number"] = wanted
        request.encode()
        self.sock.send(request.data)
        while True:
            size, offset = self._receive(), 0
            while offset + 16 <= size:
                length, reply_type, _, seq = struct.unpack_from("IHHI", self.buffer, offset)
                message = bytes(self.buffer[offset:offset + length])
                offset += (length + 3) & ~3
                if seq != wanted:
                    continue
                if reply_type == NLMSG_DONE:
                    return
                if reply_type == NLMSG_ERROR:
                    raise TargetError(f"{self.where}: the kernel refused to list its FIB: "
                                      f"{self._refusal(message, -ACK.unpack_from(message)[-1])}")
                yield message

    def routes(self, family: int, proto: int = 0, rtm_type: int = 0) -> Iterator[bytes]:
        """The main table's routes of one family (proto, type 0: any)."""
        request = rtmsg()
        request["family"], request["table"], request["proto"], request["type"] = \
            family, RT_TABLE_MAIN, proto, rtm_type
        return self.dump(request, RTM_GETROUTE)

    def neighbours(self, family: int) -> Iterator[bytes]:
        request = ndmsg()
        request["family"] = family
        return self.dump(request, RTM_GETNEIGH)


# ---- the API ----

def replace(netns: str | None, routes: list[KernelRoute], where: str) -> None:
    """Install or replace every route, then its neighbour entry, all or none: on any refusal, every
    route this call replaced is put back as it was (old route restored, or deleted if new) and no
    neighbour it added is left; raises TargetError naming each refused prefix and the kernel's reason
    (first few), with a hint. Neighbour entries are written only after the routes are accepted."""
    checked = _check(routes, where)
    if not checked:
        return
    with _Rtnl(netns, where) as rtnl:
        phases = (_route_phase(rtnl, checked), _neighbour_phase(rtnl, checked))
        done: list[tuple[_Phase, list[_Checked]]] = []
        for phase in phases:   # neighbours only once every route is in
            results = rtnl.apply(phase.requests)
            done.append((phase, [item for item, refusal in zip(phase.items, results) if refusal is None]))
            refused = [(phase.describe(item), refusal) for item, refusal in zip(phase.items, results)
                       if refusal is not None]
            if refused:
                raise _refused(where, refused, len(phase.items), _undo(rtnl, done))


def _route_phase(rtnl: _Rtnl, checked: list[_Checked]) -> _Phase:
    displaced = _displaced_routes(rtnl, checked)

    def undo(r: _Checked) -> bytes:
        old = displaced.get(r.key)
        return _restore(old, rtmsg, RTM_NEWROUTE) if old else _delete_route(r)

    return _Phase(checked, [_replace_route(r) for r in checked], undo, _Checked.describe_route)


def _displaced_routes(rtnl: _Rtnl, checked: list[_Checked]) -> dict[tuple, bytes]:
    """key -> the route a replace of ours takes the place of, from one dump per family: the
    kernel replaces the first route of the prefix and table with the same metric and TOS, whatever
    its protocol; for IPv6, preferably one with the same kind of next hop (gateway or on-link)."""
    via = {r.key: r.route.via is not None for r in checked}
    displaced: dict[tuple, bytes] = {}
    for family in {r.key[0] for r in checked}:
        metric = 0 if family == socket.AF_INET else IPV6_DEFAULT_METRIC
        for old in rtnl.routes(family):
            key = _route_key(old)
            if key not in via or old[RTM_TOS] != 0 or _metric(old) != metric:
                continue
            if key not in displaced or (family == socket.AF_INET6 and _has_gateway(old) == via[key]
                                        and _has_gateway(displaced[key]) != via[key]):
                displaced[key] = old
    return displaced


def _neighbour_phase(rtnl: _Rtnl, checked: list[_Checked]) -> _Phase:
    wanted = {r.neighbour: r for r in checked if r.mac is not None}
    before = {}
    for family in {r.key[0] for r in wanted.values()}:
        for old in rtnl.neighbours(family):
            if _neighbour_key(old) in wanted:
                before[_neighbour_key(old)] = old

    def undo(r: _Checked) -> bytes:
        old = before.get(r.neighbour)
        # put back the entry there was, unless it had no MAC yet (still resolving): then none
        return _restore(old, ndmsg, RTM_NEWNEIGH) if old and _attr(old, NDA_LLADDR) else _delete_neighbour(r)

    items = list(wanted.values())
    return _Phase(items, [_replace_neighbour(r) for r in items], undo, _Checked.describe_neighbour)


def _undo(rtnl: _Rtnl, done: list[tuple[_Phase, list[_Checked]]]) -> list[tuple[str, _Refusal]]:
    """Put back, newest first, what the accepted requests changed; the undos the kernel refused."""
    undone = [(phase, item) for phase, items in reversed(done) for item in reversed(items)]
    results = rtnl.apply([phase.undo(item) for phase, item in undone])
    return [(phase.describe(item), refusal) for (phase, item), refusal in zip(undone, results)
            if refusal is not None and refusal.code not in MISSING]


def _listed(refused: list[tuple[str, _Refusal]]) -> str:
    shown = "; ".join(f"{what}: {refusal}" for what, refusal in refused[:SHOWN_REFUSALS])
    return shown + (f" (and {len(refused) - SHOWN_REFUSALS} more)" if len(refused) > SHOWN_REFUSALS else "")


def _refused(where: str, refused: list, total: int, not_undone: list) -> TargetError:
    outcome = (f"; rolling back failed too, the FIB is left changed: {_listed(not_undone)}" if not_undone
               else "; the FIB is back as it was before the call")
    return TargetError(f"{where}: the kernel refused {len(refused)} of {total} writes: {_listed(refused)}{outcome}",
                       hint="the kernel's reason says what it would not take: most often a gateway outside "
                            "every subnet of its egress interface (`ip addr` in the node), or an interface "
                            "that is gone")


def delete(netns: str | None, routes: list[KernelRoute], where: str, keep_neighbours: set[tuple[int, str]]) -> int:
    """Delete the routes (missing ones ignored) and the neighbour entries of their next hops unless
    (ifindex, address) is in keep_neighbours (still used by other routes). Returns how many existed."""
    macs: dict[str, bytes] = {}
    checked = [_check_one(route, where, macs) for route in routes]
    if not checked:
        return 0
    keep = {(ifindex, _parse_address(address, f"{where}: neighbour to keep")) for ifindex, address in keep_neighbours}
    with _Rtnl(netns, where) as rtnl:
        results = rtnl.apply([_delete_route(r) for r in checked])
        existed = sum(refusal is None for refusal in results)
        refused = [(r.describe_route(), refusal) for r, refusal in zip(checked, results)
                   if refusal is not None and refusal.code not in MISSING]
        # the next hop of a route the kernel kept keeps its neighbour entry
        gone = {r.neighbour: r for r, refusal in zip(checked, results) if refusal is None or refusal.code in MISSING}
        drop = [r for key, r in gone.items() if key not in keep]
        results = rtnl.apply([_delete_neighbour(r) for r in drop])
        refused += [(r.describe_neighbour(), refusal) for r, refusal in zip(drop, results)
                    if refusal is not None and refusal.code not in MISSING]
    if refused:
        raise TargetError(f"{where}: the kernel refused to delete {len(refused)} entries: {_listed(refused)}",
                          hint="the others are deleted; look at `ip route` and `ip neigh` in the node")
    return existed


def routes(netns: str | None, where: str) -> list[KernelRoute]:
    """The unicast routes innet installed, with their neighbours' MACs, IPv4 and IPv6 (mac None:
    no permanent neighbour entry for the next hop)."""
    families = (socket.AF_INET, socket.AF_INET6)
    with _Rtnl(netns, where) as rtnl:
        macs = {_neighbour_key(msg): mac_str(_attr(msg, NDA_LLADDR)) for family in families
                for msg in rtnl.neighbours(family)
                if struct.unpack_from("H", msg, NDM_STATE)[0] & NUD_PERMANENT and _attr(msg, NDA_LLADDR)}
        found = [msg for family in families for msg in rtnl.routes(family, INNET_PROTO, RTN_UNICAST)]
    listed = []
    for msg in found:
        (family, dst, dst_len), gateway, oif = _route_key(msg), _attr(msg, RTA_GATEWAY), _attr(msg, RTA_OIF)
        if oif is None:
            continue    # a multipath route: innet writes none, someone borrowed its protocol number
        (ifindex,) = struct.unpack("I", oif)
        route = KernelRoute(f"{socket.inet_ntop(family, dst)}/{dst_len}", ifindex,
                            socket.inet_ntop(family, gateway) if gateway else None,
                            macs.get((ifindex, gateway or dst)))
        listed.append(((family, dst, dst_len), route))
    return [route for _, route in sorted(listed, key=lambda item: item[0])]
