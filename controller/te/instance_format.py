"""The JSON instance format: what allocators and the twin read and write, and other tools can.

    {
      "format": "innet-te-instance", "version": 1, "name": "iab20",
      "nodes": ["d0", "d1", "d2", "n3", ...],
      "links": [{"a": "d0", "b": "n3", "capacity": 912.5, "technology": "mmwave"}, ...],
      "flows": [{"name": "n3", "source": "n3", "destinations": ["d0", "d1", "d2"], "demand": 312.0,
                 "paths": [{"technology": "mmwave", "nodes": ["n3", "d0"]}, ...],
                 "path": 0}, ...]
    }

Units are Mbit/s. A link's capacity holds in each direction (full duplex); null means the link is
no constraint; "technology" defaults to "wired". A flow goes to any one of its destinations;
"paths" are its candidates, each a technology and the nodes it crosses, source first. "path" is
optional: the index of the candidate an allocation gave the flow; a document with it on every
flow carries an allocation, so its twin figures can be reproduced from the file alone. Floats
are written exactly (Python's shortest round-trip form), so a read-back instance rates alike.
"""
from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any, Sequence

import numpy as np

from controller.te.errors import TeError
from controller.te.network import WIRED, Flow, Instance, Link, Network, Path

FORMAT, VERSION = "innet-te-instance", 1


def to_document(instance: Instance, choice: Sequence[int] | None = None) -> dict[str, Any]:
    network = instance.network
    flows = []
    for i, (flow, paths) in enumerate(zip(instance.flows, instance.paths)):
        entry = {"name": flow.name, "source": flow.source, "destinations": list(flow.destinations),
                 "demand": flow.demand,
                 "paths": [{"technology": p.technology, "nodes": list(p.nodes)} for p in paths]}
        if choice is not None:
            entry["path"] = int(choice[i])
        flows.append(entry)
    return {"format": FORMAT, "version": VERSION, "name": network.name, "nodes": list(network.nodes),
            "links": [{"a": link.a, "b": link.b, "capacity": link.capacity, "technology": link.technology}
                      for link in network.links],
            "flows": flows}


def from_document(doc: Any, source: str = "instance") -> tuple[Instance, np.ndarray | None]:
    """The instance a document describes, and its allocation when every flow carries one."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TeError(f"{source}: not an instance document (format must be '{FORMAT}')")
    if doc.get("version") != VERSION:
        raise TeError(f"{source}: instance format version {doc.get('version')!r}; this reads version {VERSION}")
    nodes = _strings(doc, "nodes", source)
    links = []
    for i, spec in enumerate(_list(doc, "links", source)):
        where = f"{source}: links[{i}]"
        capacity = _dict(spec, where).get("capacity")
        if capacity is not None and not isinstance(capacity, (int, float)):
            raise TeError(f"{where}: capacity must be a number of Mbit/s or null, got {capacity!r}")
        links.append(Link(_string(spec, "a", where), _string(spec, "b", where),
                          None if capacity is None else float(capacity), spec.get("technology", WIRED)))
    network = Network(tuple(nodes), tuple(links), name=str(doc.get("name", source)))
    flows, candidates, chosen = [], [], []
    for i, spec in enumerate(_list(doc, "flows", source)):
        where = f"{source}: flows[{i}]"
        demand = _dict(spec, where).get("demand")
        if isinstance(demand, bool) or not isinstance(demand, (int, float)):
            raise TeError(f"{where}: demand must be a number of Mbit/s, got {demand!r}")
        flows.append(Flow(_string(spec, "name", where), _string(spec, "source", where),
                          tuple(_strings(spec, "destinations", where)), float(demand)))
        candidates.append(tuple(Path(_dict(p, f"{where}.paths[{j}]").get("technology", WIRED),
                                     tuple(_strings(p, "nodes", f"{where}.paths[{j}]")))
                                for j, p in enumerate(_list(spec, "paths", where))))
        chosen.append(spec.get("path"))
    instance = Instance(network, tuple(flows), tuple(candidates))
    if all(c is None for c in chosen):
        return instance, None
    for flow, paths, c in zip(flows, candidates, chosen):
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < len(paths):
            raise TeError(f"{source}: {flow.label}: path must index one of its {len(paths)} candidates "
                          f"on every flow or on none, got {c!r}")
    return instance, np.array(chosen, dtype=np.int64)


def write_instance(file: str | FilePath, instance: Instance, choice: Sequence[int] | None = None) -> None:
    FilePath(file).write_text(json.dumps(to_document(instance, choice), indent=1) + "\n")


def read_instance(file: str | FilePath) -> tuple[Instance, np.ndarray | None]:
    try:
        doc = json.loads(FilePath(file).read_text())
    except OSError as exc:
        raise TeError(f"cannot read instance {file}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TeError(f"{file}: not valid JSON: {exc}") from exc
    return from_document(doc, str(file))


def _dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise TeError(f"{where}: expected an object, got {value!r}")
    return value


def _list(doc: Any, key: str, where: str) -> list:
    value = _dict(doc, where).get(key)
    if not isinstance(value, list):
        raise TeError(f"{where}: '{key}' must be a list, got {value!r}")
    return value


def _string(doc: Any, key: str, where: str) -> str:
    value = _dict(doc, where).get(key)
    if not isinstance(value, str) or not value:
        raise TeError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _strings(doc: Any, key: str, where: str) -> list[str]:
    values = _list(doc, key, where)
    if not all(isinstance(v, str) and v for v in values):
        raise TeError(f"{where}: '{key}' must be a list of non-empty strings, got {values!r}")
    return values
