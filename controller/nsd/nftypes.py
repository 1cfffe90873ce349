"""A descriptor's NF id (DESIRE6G `id`, SOL006 `vnfd-id`) -> a catalog NF type, and a target.

In order: the caller's explicit mapping (nf_map), the id itself when the catalog has it, then
the DESIRE6G image naming `<nf>-bmv2` / `<nf>-xdp`, which also asks for that target. Anything
else is passed on as it is, for the model to refuse with the catalog's list.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping

from controller.catalog import service_nfs
from controller.nsd.draft import Draft
from controller.nsd.model import Target
from controller.nsd.paths import Point
from controller.nsd.reader import At

TARGET_SUFFIXES: dict[str, Target] = {"-bmv2": "bmv2", "-xdp": "xdp"}


def catalog_type(descriptor_id: str, nf_map: Mapping[str, str]) -> tuple[str, Target | None]:
    if descriptor_id in nf_map:
        return nf_map[descriptor_id], None
    catalog = service_nfs()
    if descriptor_id not in catalog:
        for suffix, target in TARGET_SUFFIXES.items():
            base = descriptor_id.removesuffix(suffix)
            if base != descriptor_id and base in catalog:
                return base, target
    return descriptor_id, None


def add_nf_instance(draft: Draft, entry: At, name: At, nf_id: At, nf_map: Mapping[str, str],
                    default_target: At | None = None) -> str:
    """Reads one NF instance: its type from `nf_id`, and innet's `parameters`, `node`, `target` keys.

    The target is the entry's own, else the one its type's name asks for, else the descriptor's
    default (DESIRE6G default-nfrouter-mode).
    """
    nf, named_target = catalog_type(nf_id.name(), nf_map)
    target = entry.field("target", required=False) or (nf_id if named_target else default_target)
    fields = {"name": name.name(), "nf": nf, "parameters": entry.value_of("parameters", default={}),
              "node": entry.value_of("node"),
              "target": named_target if target is nf_id else (target.value if target else None)}
    draft.add("nf_instances", entry, fields, {"name": name, "nf": nf_id, "target": target,
                                              "parameters": entry.field("parameters", required=False),
                                              "node": entry.field("node", required=False)})
    return fields["name"]


class ImplicitNFRouter:
    """The nfrouter instance a descriptor gets when a link names no NF between two endpoints
    ("through an NFRouter", in the Smart-Orchestrator's and the IML's reading); one per service,
    shared by every such graph, added at the first."""

    def __init__(self, draft: Draft, target: At | None = None):
        self.draft, self.target, self.name = draft, target, None

    def hop(self, at: At) -> Point:
        if self.name is None:
            taken = {*self.draft.names("endpoints"), *self.draft.names("nf_instances")}
            candidates = itertools.chain(["nfrouter"], (f"nfrouter-{i}" for i in itertools.count(2)))
            self.name = next(n for n in candidates if n not in taken)
            self.draft.add("nf_instances", at, {"name": self.name, "nf": "nfrouter", "implicit": True,
                                                "target": self.target.value if self.target else None},
                           {"target": self.target})
        return Point(self.name, at)
