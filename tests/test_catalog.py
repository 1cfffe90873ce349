"""The catalog is the contract: each compiled program exposes what its entry says."""
import math
import re
from pathlib import Path

import pytest

from controller.bpf.btf import Btf
from controller.bpf.build import compile_program
from controller.bpf.libbpf import BpfObject, map_info
from controller.catalog import BEHIND, load_catalog, get_nf, load_nf
from controller.errors import CatalogError
from controller.targets.xdp import PORT_MAC_SLOTS, PORT_MACS_MAP

CATALOG = load_catalog()
BPF_MAP_TYPE_PROG_ARRAY = 3


# (NF, behind) of every XDP program: programs.xdp, and programs.xdp.behind where an NF has one
XDP_PROGRAMS = [pytest.param(n, behind, id=f"{n}-{BEHIND}" if behind else n)
                for n, nf in CATALOG.items() if "xdp" in nf.programs
                for behind in (False, True) if not behind or BEHIND in nf.programs["xdp"]]


def _layout(program):
    obj = compile_program(program["source"])
    btf = Btf(obj)
    with BpfObject(str(obj)) as o:
        ids = {name: o.btf_type_ids(name) for name in o._map_ptrs}
    return btf, ids


def _max_entries(btf, map_name):
    """A map's max_entries as its BTF definition in SEC(".maps") declares it (an array's length)."""
    for t in btf.types.values():
        if t["kind"] == "VAR" and t["name"] == map_name:
            for m in btf._resolve(t["type_id"])["members"]:
                if m["name"] == "max_entries":
                    return btf.types[btf.types[m["type_id"]]["type_id"]]["nr_elems"]
    raise AssertionError(f"no BTF definition of map {map_name}")


def _source_text(source: Path) -> str:
    """A C source and, recursively, the local headers it #includes."""
    text = source.read_text()
    return text + "".join(_source_text(source.parent / h) for h in re.findall(r'#include "([^"]+)"', text))


@pytest.mark.parametrize("name, behind", XDP_PROGRAMS)
def test_xdp_program_exposes_catalog(name, behind):
    """Either program an instance may run (on interfaces, or behind a forwarder) holds every
    table and statistic of the NF, as XdpTarget writes and reads them by map name."""
    nf = CATALOG[name]
    program = nf.xdp_program(behind)
    btf, ids = _layout(program)
    for table in nf.tables.values():
        m = table.xdp["map"]
        assert m in ids, f"{name}: table {table.name} has no map {m}"
        if "gate" in table.xdp:   # a one-cell u32 array the program reads before the table
            assert _max_entries(btf, table.xdp["gate"]) == 1, f"{name}: {table.name}'s gate is no one-cell map"
        key, value = (btf.members(i) for i in ids[m])
        for f in table.match:
            assert f.name in key, f"{name}.{table.name}: key lacks match field {f.name}"
            assert key[f.name].size * 8 == f.width, f"{name}.{table.name}.{f.name} width"
            if f.kind == "lpm":
                assert "prefixlen" in key and key["prefixlen"].offset == 0
        for action, params in table.actions.items():
            for p in params:
                assert p.name in value, f"{name}.{table.name}: value lacks {action} parameter {p.name}"
                assert value[p.name].size * 8 == p.width
        if len(table.actions) > 1:
            enum = btf.enum(table.xdp["action_enum"])
            prefix = table.xdp["action_enum"].upper() + "_"
            assert {n[len(prefix):].lower() for n in enum} == set(table.actions)
        if table.counters:
            counters = btf.members(ids[table.xdp["counters_map"]][1])
            assert set(table.counters) <= set(counters)
            assert "stats_slot" in value
    for stat in nf.stats.values():
        fields = btf.members(ids[stat.xdp["map"]][1])
        if stat.kind == "registers":
            for f in stat.fields:
                assert f.name in fields, f"{name}: stat {stat.name} lacks field {f.name}"
                assert fields[f.name].size * 8 == f.width, f"{name}.{stat.name}.{f.name} width"
            cells = math.prod(stat.shape(nf.resolve_parameters({})))
            assert _max_entries(btf, stat.xdp["map"]) == cells, \
                f"{name}: map {stat.xdp['map']} is not sized {stat.cells} for the default parameters"
        elif fields:
            assert list(fields) == list(stat.index), f"{name}: stat {stat.name} fields differ from the catalog"
    if "port_macs" in program:   # the interfaces' MACs, as XdpTarget writes them
        m = program["port_macs"]
        assert m == PORT_MACS_MAP and m in ids, f"{name}: port_macs is the map {PORT_MACS_MAP} (include/port_macs.h)"
        key, value = (btf.members(i) for i in ids[m])
        assert value["ifindex"].size == 4 and value["addr"].size == 6, f"{name}: {m} holds (ifindex, 6-byte MAC)"
        assert _max_entries(btf, m) == PORT_MAC_SLOTS, f"{name}: {m} has the PORT_MAC_SLOTS XdpTarget places into"
    if "classes_map" in program:   # queueing NFs: one class id per level
        assert program["classes_map"] in ids, f"{name}: no map {program['classes_map']}"
    source = _source_text(nf.source.parent.parent / program["source"])
    for p in nf.parameters.values():
        if "define" in p.xdp:
            assert p.xdp["define"] in source, f"{program['source']} never uses -D{p.xdp['define']}"


@pytest.mark.needs_root   # loads the programs
@pytest.mark.parametrize("name, behind", XDP_PROGRAMS)
def test_chain_kind_matches_the_program(name, behind):
    """`chain: pass` programs own a one-slot program array to call the next NF through; others have none."""
    program = CATALOG[name].xdp_program(behind)
    assert program.get("chain") in (None, "pass"), f"{name}: programs.xdp.chain is pass or absent"
    with BpfObject(str(compile_program(program["source"]))).load() as o:
        m = o.maps.get("chain_next")
        if program.get("chain") == "pass":
            assert program.get("hook", "xdp") == "xdp", f"{name}: only XDP programs chain"
            assert m is not None and map_info(m.fd).type == BPF_MAP_TYPE_PROG_ARRAY and m.max_entries == 1, \
                f"{name}: a one-slot chain_next program array (ebpf/include/chain.h)"
        else:
            assert m is None, f"{name} calls a next NF, so its catalog entry says `chain: pass`"


P4_KINDS = {"exact": "EXACT", "lpm": "LPM", "ternary": "TERNARY"}


@pytest.mark.parametrize("name", [n for n, nf in CATALOG.items() if "bmv2" in nf.programs])
def test_bmv2_program_exposes_catalog(name):
    """The p4info (tables, match fields, actions, counters) and the BMv2 JSON (registers) say
    what the catalog says, compiled with every parameter at its default."""
    from controller.p4.build import P4_HOME, compile_p4, find_tool
    from controller.p4.p4info import P4Info, load
    from controller.targets.bmv2 import _registers

    if not find_tool("p4c"):
        pytest.skip(f"p4c not found on PATH or in {P4_HOME}/bin: the BMv2 programs cannot be compiled here")
    nf = CATALOG[name]
    params = nf.resolve_parameters({})
    build = compile_p4(nf.programs["bmv2"]["source"],
                       {p.bmv2["define"]: params[p.name] for p in nf.parameters.values() if "define" in p.bmv2})
    info = P4Info(load(build.p4info))
    for table in nf.tables.values():
        where = f"{name}.{table.name}"
        t = info.table(table.bmv2.get("table", table.name), where)
        assert {f.name for f in t.table.match_fields} == {f.name for f in table.match}, f"{where}: match fields"
        for f in table.match:
            mf = t.match_field(f.name)
            # a field whose 0 is a wildcard is ternary on BMv2 (Bmv2Target writes 0 as don't-care)
            kind = "ternary" if f.name in table.bmv2.get("zero_wildcards", {}) else f.kind
            assert p4info_kind(mf) == P4_KINDS[kind], f"{where}.{f.name}: match kind"
            assert mf.bitwidth == f.width, f"{where}.{f.name}: {mf.bitwidth} bits, the catalog says {f.width}"
        runtime_actions = {a for a, ref in zip(t.actions, t.table.action_refs) if ref.scope != ref.DEFAULT_ONLY}
        assert runtime_actions == set(table.actions), f"{where}: actions"
        for action, fields in table.actions.items():
            p4_params = {p.name: p.bitwidth for p in t.actions[action].params}
            assert p4_params == {f.name: f.width for f in fields}, f"{where} action {action}: parameters"
        assert t.has_counters == bool(table.counters), f"{where}: direct counters"
        assert t.table.size == nf.table_size(table, params), f"{where}: size"
    from controller.targets.bmv2 import OWN_IPV4, PORT_MACS
    for binding, written in (("port_macs", PORT_MACS), ("own_ipv4", OWN_IPV4)):   # tables Bmv2Target fills
        if binding not in nf.programs["bmv2"]:
            continue
        where = f"{name} {binding}"
        t = info.table(nf.programs["bmv2"][binding], where)
        assert {f.name: (p4info_kind(f), f.bitwidth) for f in t.table.match_fields} == \
            {f.name: ("EXACT", f.width) for f in written.match}, f"{where}: match fields"
        for action, fields in written.actions.items():
            assert action in t.actions, f"{where}: no action {action}"
            assert {p.name: p.bitwidth for p in t.actions[action].params} == {f.name: f.width for f in fields}
    registers = _registers(build.json)
    for stat in nf.stats.values():
        where = f"{name} statistic {stat.name}"
        if stat.kind == "counters":
            assert "counter" in stat.bmv2, f"{where}: no bmv2 counter"
            counter = info.counter(stat.bmv2["counter"], where)
            assert counter.size == len(stat.index), f"{where}: {counter.size} cells for {len(stat.index)} names"
            continue
        cells = math.prod(stat.shape(params))
        for f in stat.fields:
            assert f.name in stat.bmv2.get("registers", {}), f"{where}: no bmv2 register for field {f.name}"
            names = stat.bmv2["registers"][f.name]
            names = names if isinstance(names, list) else [names]
            found = [r for n in names for full, r in registers.items() if full == n or full.endswith("." + n)]
            assert len(found) == len(names), f"{where}.{f.name}: registers {names} not all in the program"
            assert all(r["size"] == cells for r in found), f"{where}.{f.name}: register size != {cells}"
            assert sum(r["bitwidth"] for r in found) >= f.width, f"{where}.{f.name}: narrower than {f.width} bits"
    source = nf.source.parent.parent / nf.programs["bmv2"]["source"]
    text = "".join(p.read_text() for p in [source, *sorted((source.parent / "include").glob("*.p4"))])
    for p in nf.parameters.values():
        if "define" in p.bmv2:
            assert p.bmv2["define"] in text, f"{name}: the program never uses -D{p.bmv2['define']}"


def p4info_kind(match_field) -> str:
    return match_field.MatchType.Name(match_field.match_type)


def test_unknown_nf_is_named():
    with pytest.raises(CatalogError, match="unknown NF 'nosuch'.*") as exc:
        get_nf("nosuch")
    assert "nfrouter" in str(exc.value)


def test_malformed_catalog_entry_says_where(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntables:\n  t:\n    match: [{name: x, type: ipv5}]\n    actions: {a: []}\n")
    with pytest.raises(CatalogError, match=r"bad.yaml: table t match.x: unknown type 'ipv5'"):
        load_nf(bad)


def test_chain_hops_per_target():
    """Which NFs a service chain may place as hops: never a forwarder; on XDP, those whose program
    behind a forwarder hands packets back (prio through its own programs.xdp.behind); on BMv2,
    those of the composed pipeline that hand packets on (not the router, which decides where they go)."""
    xdp = {n for n, nf in CATALOG.items() if nf.chain_hop("xdp")}
    assert {"cms", "precision", "prio"} <= xdp and not {"nfrouter", "sff"} & xdp
    assert CATALOG["prio"].xdp_program(behind=True)["source"] == "ebpf/prio_chain.bpf.c"
    assert CATALOG["prio"].xdp_program()["hook"] == "tc_egress", "on interfaces prio stays a tc classifier"
    assert CATALOG["cms"].xdp_program(behind=True) is CATALOG["cms"].xdp_program(), "one program both ways"
    bmv2 = {n for n, nf in CATALOG.items() if nf.chain_hop("bmv2")}
    assert bmv2 == {"cms", "precision", "prio"}, "the composed pipeline's NFs but its forwarder and router"
    with pytest.raises(CatalogError, match="unknown target 'tofino'"):
        CATALOG["prio"].chain_hop("tofino")


@pytest.mark.parametrize("behind, message", [
    pytest.param("{entry: x, chain: pass}", r"programs.xdp.behind is a program entry with at least a source",
                 id="no-source"),
    pytest.param("{source: ebpf/x.bpf.c}",
                 r"programs.xdp.behind runs behind a forwarder, so it is an XDP program with `chain: pass`",
                 id="not-pass"),
    pytest.param("{source: ebpf/x.bpf.c, chain: pass, hook: tc_egress}",
                 r"programs.xdp.behind runs .*, so it is an XDP program", id="tc-hook"),
])
def test_a_behind_program_must_hand_packets_back(tmp_path, behind, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nprograms:\n  xdp: {{source: ebpf/prio.bpf.c, hook: tc_egress, behind: {behind}}}\n")
    with pytest.raises(CatalogError, match=f"bad.yaml: {message}"):
        load_nf(bad)


def test_parameters_are_bounded():
    nf = CATALOG["nfrouter"]
    assert nf.resolve_parameters({}) == {"max_routes": 1024, "max_flow_routes": 1024}
    with pytest.raises(CatalogError, match="out of range"):
        nf.resolve_parameters({"max_routes": 0})
    with pytest.raises(CatalogError, match="no parameter"):
        nf.resolve_parameters({"routes": 5})
