"""The logical table model: entries of an NF's tables, target-neutral.

An entry is match fields, an action and its parameters, written in plain values
("10.0.2.0/24", "02:00:00:00:00:01", "r1-eth1"). `normalize` checks an entry against
its catalog table and returns it in canonical form, or says exactly what does not fit.
Both targets encode canonical entries: map keys/values on XDP, P4Runtime entries on BMv2.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from controller.catalog import Field, Table
from controller.errors import CatalogError, EntryError

_MAC = re.compile(r"^([0-9a-fA-F]{2})([:-][0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class TableEntry:
    table: str
    match: dict = field(hash=False)
    action: str
    params: dict = field(default_factory=dict, hash=False)

    def key(self) -> tuple:
        return (self.table, tuple(sorted(self.match.items())))


@dataclass(frozen=True)
class EntryCounters:
    entry: TableEntry
    packets: int
    bytes: int


def parse_mac(value, where: str) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise EntryError(f"{where}: '{value}' is not a MAC address", hint="write it as 02:00:00:00:00:01")
    return value.lower().replace("-", ":")


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ip_packed(value: str) -> bytes:
    """An `ip` field's 16 bytes: IPv6 as is, IPv4 as its IPv4-mapped IPv6 address."""
    addr = ipaddress.ip_address(value)
    return addr.packed if addr.version == 6 else ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed).packed


def ip_str(value: int | bytes) -> str:
    """An `ip` field's address as text: IPv4-mapped addresses come back as plain IPv4."""
    addr = ipaddress.IPv6Address(value)
    return str(addr.ipv4_mapped or addr)


def address_bytes(field_type: str, value: str) -> bytes:
    """An address field's value (an `ip`, an ipv4/ipv6 address or a prefix's network address, a
    MAC) as its bytes in network order, as both targets store it."""
    if field_type == "ip":
        return ip_packed(value)
    if field_type == "mac":
        return mac_bytes(value)
    return ipaddress.ip_network(value).network_address.packed


def address_text(field_type: str, number: int) -> str:
    """An address field read back from a target, as the integer its bytes make, as text."""
    if field_type == "ip":
        return ip_str(number)
    if field_type == "mac":
        return mac_str(number.to_bytes(6, "big"))
    return str(ipaddress.IPv4Address(number) if field_type == "ipv4" else ipaddress.IPv6Address(number))


def _normalize_value(f: Field, value, where: str, nf_params: dict | None = None):
    if f.type == "ip":
        try:
            return ip_str(ip_packed(str(value)))
        except ValueError as exc:
            raise EntryError(f"{where}: '{value}' is not an IPv4 or IPv6 address", hint=str(exc)) from exc
    if f.type in ("ipv4", "ipv6"):
        version = 4 if f.type == "ipv4" else 6
        try:
            if f.kind == "lpm":
                net = ipaddress.ip_network(str(value), strict=True)
            else:
                net = ipaddress.ip_address(str(value))
        except ValueError as exc:
            raise EntryError(f"{where}: '{value}' is not a valid {f.type} {'prefix' if f.kind == 'lpm' else 'address'}",
                             hint=str(exc)) from exc
        if net.version != version:
            raise EntryError(f"{where}: '{value}' is IPv{net.version}, the field wants IPv{version}")
        return str(net)
    if f.type == "mac":
        return parse_mac(value, where)
    if f.type == "port":
        if not isinstance(value, str) or not value:
            raise EntryError(f"{where}: a port is an interface name, got {value!r}")
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << f.width):
        raise EntryError(f"{where}: {value!r} is not an unsigned {f.width}-bit integer")
    # a bound named by a parameter is known once the NF runs with its parameters
    bound = f.below if not isinstance(f.below, str) else (nf_params or {}).get(f.below)
    if bound is not None and value >= bound:
        name = f" ({f.below})" if isinstance(f.below, str) else ""
        raise EntryError(f"{where}: {value} is out of range; it must be below {bound}{name}",
                         hint=f"use 0..{bound - 1}")
    return value


def normalize(table: Table, entry: TableEntry, with_action: bool = True, nf_params: dict | None = None) -> TableEntry:
    """The entry in canonical form, checked field by field against the catalog table (and
    against the bounds that name parameters, given the NF's `nf_params`)."""
    where = f"table {table.name}"
    names = {f.name for f in table.match}
    if set(entry.match) != names:
        missing, extra = names - set(entry.match), set(entry.match) - names
        raise EntryError(f"{where}: match fields {sorted(entry.match)} do not fit; "
                         f"missing {sorted(missing)}, unknown {sorted(extra)}",
                         hint=f"the table matches on {', '.join(f'{f.name} ({f.kind} {f.type})' for f in table.match)}")
    match = {f.name: _normalize_value(f, entry.match[f.name], f"{where} match {f.name}", nf_params)
             for f in table.match}
    if not with_action:
        return TableEntry(table.name, match, entry.action, {})
    try:
        fields = table.action(entry.action)
    except CatalogError as exc:
        raise EntryError(f"{where}: unknown action '{entry.action}'", hint=exc.hint) from None
    given = set(entry.params)
    wanted = {f.name for f in fields}
    if given != wanted:
        raise EntryError(f"{where} action {entry.action}: parameters {sorted(given)} do not fit",
                         hint=f"it takes {', '.join(f'{f.name} ({f.type})' for f in fields) or 'no parameters'}")
    params = {f.name: _normalize_value(f, entry.params[f.name], f"{where} action {entry.action} {f.name}", nf_params)
              for f in fields}
    return TableEntry(table.name, match, entry.action, params)
