"""The composed pipeline (p4/innet.p4): every NF of a switch in one P4 program.

Its own contract is p4/innet.yaml, in the catalog's format: the table `nf_enable` maps an
ingress port to the bitmask of the NFs that see its packets (action `enable`, parameter
`nfs`); an NF's bit is `enable_mask` under its catalog entry's programs.bmv2. The program
holds one copy of each NF's control and tables, so a switch runs at most one instance of an
NF type in it. Parameters are the program's -D defines, so the defines of every NF go into
one build: deployed NFs with their instance's parameters, the others at their defaults. Two
NFs that share a define (such as FLOW_KEY_MODE) must agree on it.
"""
from __future__ import annotations

from pathlib import Path

from controller.catalog import NFSpec, load_catalog, load_nf
from controller.errors import TargetError
from controller.p4.build import REPO_ROOT

SOURCE = REPO_ROOT / "p4" / "innet.p4"
CONTRACT = REPO_ROOT / "p4" / "innet.yaml"
ENABLE_TABLE, ENABLE_ACTION, ENABLE_MATCH, ENABLE_PARAM = "nf_enable", "enable", "ingress_port", "nfs"


def runs(nf: NFSpec) -> bool:
    """Whether `nf` runs in the composed pipeline (it exists and gives the NF a bit)."""
    return SOURCE.exists() and CONTRACT.exists() and "enable_mask" in nf.programs.get("bmv2", {})


def contract() -> NFSpec:
    return load_nf(CONTRACT)


def defines(params: dict[str, dict[str, int]], catalog_dir: Path | None = None) -> dict[str, int]:
    """The -D defines of the composed build: `params` (NF name -> its one instance's parameters)
    for the NFs given, defaults for every other NF with a BMv2 program."""
    catalog = load_catalog(catalog_dir) if catalog_dir else load_catalog()
    out: dict[str, int] = {}
    owner: dict[str, str] = {}
    for name, nf in sorted(catalog.items()):
        if not runs(nf):
            continue
        values = nf.resolve_parameters(params.get(name))
        for p in nf.parameters.values():
            define = p.bmv2.get("define")
            if define is None:
                continue
            if define in out and out[define] != values[p.name]:
                raise TargetError(f"{name}.{p.name}={values[p.name]} and {owner[define]}={out[define]} set the same "
                                  f"define {define} of the composed pipeline",
                                  hint="give both the same value (one switch runs one build of p4/innet.p4)")
            out[define], owner[define] = values[p.name], f"{name}.{p.name}"
    return out


def fits(build_defines: dict[str, int], params: dict[str, dict[str, int]], catalog_dir: Path | None = None) -> bool:
    """Whether a build with `build_defines` serves the NFs given (NF name -> its one instance's
    parameters): each of their defines has their value in it. The defines of NFs that run no
    instance do not matter: their code sees no packet."""
    catalog = load_catalog(catalog_dir) if catalog_dir else load_catalog()
    for name, values in params.items():
        nf = catalog[name]
        resolved = nf.resolve_parameters(values)
        if any(build_defines.get(p.bmv2["define"]) != resolved[p.name]
               for p in nf.parameters.values() if "define" in p.bmv2):
            return False
    return True


def masks(records: dict[str, dict]) -> dict[str, int]:
    """interface -> OR of the enable bits of the instances deployed on it, from their deployment
    records (instance -> record with `interfaces`, `enable_mask`; standalone NFs have no mask)."""
    out: dict[str, int] = {}
    for record in records.values():
        for ifname in record["interfaces"]:
            out[ifname] = out.get(ifname, 0) | (record.get("enable_mask") or 0)
    return {i: m for i, m in out.items() if m}
