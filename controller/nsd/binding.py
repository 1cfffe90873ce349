"""Endpoints to testbed hosts: by an explicit NAME=HOST, else the host the descriptor names,
else the host of the endpoint's own name.

Resolving against a topology also fills in the addresses a descriptor left out (the host's),
so placement gets a service whose classifiers match concrete addresses.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.nsd.errors import NSDError
from controller.nsd.model import Service
from controller.topology import Topology


def parse_bindings(options: Iterable[str]) -> dict[str, str]:
    """["src=h1", "dst=h2"] (the --bind options) -> {"src": "h1", "dst": "h2"}."""
    bindings: dict[str, str] = {}
    for option in options:
        name, equals, host = (part.strip() for part in option.partition("="))
        if not equals or not name or not host:
            raise NSDError(f"--bind {option}", "expected NAME=HOST, e.g. --bind src=h1")
        if name in bindings:
            raise NSDError(f"--bind {option}", f"'{name}' is already bound to {bindings[name]}")
        bindings[name] = host
    return bindings


def bind_hosts(service: Service, bindings: Mapping[str, str]) -> Service:
    names = [e.name for e in service.endpoints]
    for name, host in bindings.items():
        if name not in names:
            raise NSDError(f"bind {name}={host}", f"no endpoint '{name}' (endpoints: {', '.join(names)})")
    endpoints = tuple(e.model_copy(update={"host": bindings[e.name]}) if e.name in bindings else e
                      for e in service.endpoints)
    return service.model_copy(update={"endpoints": endpoints})


def resolve_endpoints(service: Service, topology: Topology, bindings: Mapping[str, str] | None = None) -> Service:
    """Every endpoint on a host of `topology`, with that host's addresses where it gave none."""
    service = bind_hosts(service, bindings or {})
    hosts = ", ".join(h.name for h in topology.hosts)
    taken: dict[str, str] = {}
    endpoints = []
    for e in service.endpoints:
        where, host = f"endpoint '{e.name}'", e.host or e.name
        node = topology.nodes.get(host)
        if node is None:
            raise NSDError(where, f"binds to no host: topology {topology.name} has no node '{host}' (hosts: {hosts})",
                           hint=f"bind it to a host: --bind {e.name}=HOST")
        if node.role != "host":
            raise NSDError(where, f"'{host}' is a {node.role} of topology {topology.name}; an endpoint runs on a host "
                                  f"(hosts: {hosts})")
        if host in taken:
            raise NSDError(where, f"host {host} already carries endpoint '{taken[host]}'",
                           hint="classifiers tell endpoints apart by address: bind each to a host of its own")
        taken[host] = e.name
        own = [a for i in node.interfaces for a in (i.ipv4.ip, i.ipv6.ip)]
        stray = [a for a in e.addresses if a not in own]
        if stray:
            raise NSDError(where, f"address {stray[0]} is not host {host}'s (it has {', '.join(map(str, own))})",
                           hint="fix the descriptor's address, or bind the endpoint to the host that has it")
        endpoints.append(e.model_copy(update={"host": host, "addresses": e.addresses or tuple(own)}))
    return Service.model_validate({**service.model_dump(), "endpoints": [e.model_dump() for e in endpoints]})
