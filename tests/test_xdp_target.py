"""XdpTarget on its own, keyed by NF instance: records and counter slots in the scope's
database, pins under <scope pin root>/<node>/<instance>@<generation>.

Each test gets a fresh scope (its database and run directory in a temporary directory of this
module, its pins under the default pin root) and a throwaway namespace holding two veth pairs
xa-xb and xc-xd; the test ends with prune(node, {}) and checks that nothing is left: no pins,
no records, no XDP program on any interface. Crashes are real: a forked child SIGKILLs itself
at a chosen line of a deploy.
"""
import ipaddress
import multiprocessing
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from controller.bpf import libbpf
from controller.bpf.build import compile_program
from controller.catalog import get_nf
from controller.errors import BpfError, EntryError, TargetError
from controller.netns import netns
from controller.node import Node
from controller.queues import QueueLevel
from controller.scope import Scope
from controller.store import DataplaneRecords, Store
from controller.tables import TableEntry, address_bytes, ip_packed, mac_bytes, normalize
from controller.targets import chain, tc, xdp
from controller.targets.chain import NodeChains
from controller.targets.xdp import XdpHook, XdpTarget
from testbed.scratch import Netns, Veth, namespace

NFROUTER, CMS, PRIO = get_nf("nfrouter"), get_nf("cms"), get_nf("prio")
NEXT_HOP, OWN = "02:00:00:00:0e:01", "02:00:00:00:0e:02"


def route(i: int, port: str = "xc") -> TableEntry:
    return TableEntry("ipv4_routes", {"dst_addr": f"10.{i >> 8 & 255}.{i & 255}.0/24"}, "forward",
                      {"egress_port": port, "dst_mac": NEXT_HOP, "src_mac": OWN})


def route6(i: int) -> TableEntry:
    return TableEntry("ipv6_routes", {"dst_addr": f"2001:db8:{i:x}::/48"}, "forward",
                      {"egress_port": "xc", "dst_mac": NEXT_HOP, "src_mac": OWN})


def canonical(entries: list[TableEntry]) -> list[tuple]:
    return sorted((e.table, sorted(e.match.items()), e.action, sorted(e.params.items()))
                  for e in (normalize(NFROUTER.table(e.table), e) for e in entries))


pytestmark = pytest.mark.usefixtures("private_state_dirs")


@dataclass
class Rig:
    scope: Scope
    target: XdpTarget
    node: Node
    ns: Netns

    @property
    def records(self) -> DataplaneRecords:
        return self.target.records

    def xdp_ids(self) -> dict[str, int | None]:
        """The XDP program on every interface of the namespace."""
        with netns(self.ns.path), IPRoute() as ipr:
            return {link.get("ifname"): XdpHook.attached(link) for link in ipr.get_links()}

    def chains(self) -> NodeChains:
        return NodeChains(self.node.name, self.records, self.target.node_pins(self.node.name))

    def chain_on(self, ifname: str) -> list[str]:
        return self.chains().walk(self.xdp_ids()[ifname])

    def prog_id(self, instance: str) -> int:
        return self.records.get(self.node.name, chain.record_key(instance))["prog_id"]

    def pins(self) -> list[str]:
        root = self.target.node_pins(self.node.name)
        return sorted(p.name for p in root.iterdir()) if root.exists() else []

    def problems(self) -> dict[str, str | None]:
        return {d.instance: d.problem for d in self.target.deployments(self.node)}

    def run_head(self, ifname: str) -> int:
        """Run the program on `ifname`'s hook on one UDP frame (BPF_PROG_TEST_RUN, tail calls
        and all); its verdict."""
        frame = bytes(Ether(src=NEXT_HOP, dst=OWN) / IP(src="10.61.1.2", dst="10.62.0.5") / UDP(sport=1000, dport=7)
                      / b"chain")
        fd = libbpf.prog_fd_by_id(self.xdp_ids()[ifname])
        try:
            return libbpf.test_run(fd, frame).retval
        finally:
            os.close(fd)

    def counted(self, cms: str) -> int:
        """Packets a cms instance counted: the sum of one row of its sketch, both banks."""
        return int(self.target.read_registers(self.node, cms, "sketch")["packets"][:, 0, :].sum())

    def verdicts(self) -> int:
        return sum(self.target.read_stat(self.node, "nfrouter", "verdicts").values())


@pytest.fixture
def rig():
    scope = Scope(f"t-xdp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    with namespace("xdpt", [Veth("xa", "xb"), Veth("xc", "xd")], ipv6=False) as ns:   # no frames but the tests'
        r = Rig(scope, XdpTarget(scope, DataplaneRecords(Store(scope.db_path))), Node(ns.name, ns.path), ns)
        try:
            yield r
        finally:
            r.target.prune(r.node, set())
            assert r.pins() == [] and not r.target.node_pins(r.node.name).exists(), "prune leaves no pins"
            assert not any(r.xdp_ids().values()), "prune leaves no XDP program attached"
            assert r.records.items(r.node.name) == {}, "prune leaves no records"
            r.records.store.close()
            if scope.pin_root.exists():
                scope.pin_root.rmdir()


def forked(work, *args) -> int:
    """Run `work(*args)` in a forked child; its exit code (-9: it SIGKILLed itself)."""
    proc = multiprocessing.get_context("fork").Process(target=work, args=args)
    proc.start()
    proc.join(timeout=120)
    return proc.exitcode


def _kill_me(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _fail(*_args, **_kwargs):
    raise TargetError("injected failure")


# ---- tables --------------------------------------------------------------------------------------
@pytest.mark.needs_root
def test_routes_are_written_read_and_deleted(rig):
    t, node = rig.target, rig.node
    d = t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    assert (d.instance, d.nf, d.interfaces, d.cleared, d.problem) == \
        ("nfrouter", "nfrouter", ("xa", "xc"), ("nfrouter",), None)
    assert rig.pins() == ["nfrouter@1"] and rig.xdp_ids()["xa"] == rig.xdp_ids()["xc"] == rig.prog_id("nfrouter")
    entries = [route(i) for i in range(100)] + [route6(i) for i in range(10)]
    t.write(node, "nfrouter", entries)
    got = t.read(node, "nfrouter", "ipv4_routes") + t.read(node, "nfrouter", "ipv6_routes")
    assert canonical(got) == canonical(entries)
    assert all(c.packets == 0 for c in t.read_counters(node, "nfrouter", "ipv4_routes"))

    again = t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    assert again.cleared == () and rig.pins() == ["nfrouter@1"], "an identical redeploy is a no-op"
    assert len(t.read(node, "nfrouter", "ipv4_routes")) == 100

    assert t.delete(node, "nfrouter", entries[:50]) == 50
    assert t.delete(node, "nfrouter", entries[:50]) == 0
    inside = TableEntry("ipv4_routes", {"dst_addr": "10.0.60.0/25"}, "local", {})
    assert t.delete(node, "nfrouter", [inside]) == 0, "a prefix inside a route is no entry"
    slots = rig.records.slots(node.name, "nfrouter", "route_stats")
    held = t.entry_slots(node, "nfrouter", "ipv4_routes") + t.entry_slots(node, "nfrouter", "ipv6_routes")
    assert len(held) == 60 and len(set(held)) == 60 and set(slots.values()) == set(held)


@pytest.mark.needs_root
def test_a_refused_batch_writes_nothing_and_says_what_is_wrong(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 4})
    t.write(node, "nfrouter", [route(1)])
    bad = [TableEntry("ipv4_routes", {"dst_addr": "10.1.2.3/24"}, "forward",
                      {"egress_port": "xc", "dst_mac": NEXT_HOP, "src_mac": OWN}),
           TableEntry("ipv4_routes", {"dst_addr": "10.1.2.0/24"}, "forward",
                      {"egress_port": "xc", "dst_mac": "02:00:00:00:01", "src_mac": OWN}),
           TableEntry("ipv4_routes", {"dst_addr": "10.1.2.0/24"}, "drop", {}),
           TableEntry("ipv4_routes", {"dst": "10.1.2.0/24"}, "local", {})]
    for e in bad:
        with pytest.raises(EntryError) as exc:
            t.write(node, "nfrouter", [route(2), e])
        with pytest.raises(EntryError) as expected:
            normalize(NFROUTER.table("ipv4_routes"), e, nf_params={"max_routes": 4})
        assert str(exc.value) == str(expected.value)
    with pytest.raises(EntryError, match="interface 'xb' does not run this NF"):
        t.write(node, "nfrouter", [route(2), route(3, port="xb")])
    with pytest.raises(BpfError, match="ipv4_routes is full \\(4 entries\\)"):
        t.write(node, "nfrouter", [route(i) for i in range(2, 7)])   # 1 + 5 do not fit in 4
    assert canonical(t.read(node, "nfrouter", "ipv4_routes")) == canonical([route(1)]), "all or nothing"
    assert len(rig.records.slots(node.name, "nfrouter", "route_stats")) == 1, "refused entries hold no slot"
    with pytest.raises(TargetError, match="cms is not deployed on"):
        t.write(node, "cms", [route(1)])


# The fast encoders take plain values without tables.normalize; they must accept nothing it
# refuses, and encode what they accept as the checked path encodes its canonical form.
FAST_CASES = [
    ("ipv4_routes", "dst_addr", ["10.1.0.0/16", "10.1.2.0/24", "0.0.0.0/0", "255.255.255.255/32", "10.1.2.3/24",
                                 "10.1.0.0/33", "10.1.0.0/08", "010.1.0.0/16", "10.1.0.0", "10.1.0.0/255.255.0.0",
                                 "10.1.0/16", " 10.1.0.0/16", "10.1.0.0/16 ", "10.1.0.0/+16", "10.1.0.0/\u0661\u0666",
                                 "10.1.0.0/", "1.2.3.256/32", "::/0", 167772160, None, b"10.1.0.0/16"]),
    ("ipv6_routes", "dst_addr", ["2001:db8::/32", "2001:db8::1/32", "2001:db8::/129", "::ffff:10.0.0.0/104",
                                 "10.0.0.0/8", "2001:DB8::/32", "::/0", 5]),
    ("ipv4_routes", "dst_mac", ["02:00:00:00:00:01", "02-00-00-00-00-01", "02:00:00:00:00:0A", "02:00:00:00:01",
                                "zz:00:00:00:00:01", 5, None]),
    ("ipv4_routes", "egress_port", ["xc", "xa", "xb", "", 3]),
]


@pytest.mark.parametrize("table, field, values", FAST_CASES)
def test_the_fast_encoders_accept_only_what_normalize_accepts(table, field, values):
    t = NFROUTER.table(table)
    f = next(f for f in (*t.match, *t.action("forward")) if f.name == field)
    encode = xdp._fast_encoder(f, 16, {"max_routes": 1024}, {"xa": 7, "xc": 9})
    for value in values:
        try:
            fast = encode(value)
        except Exception:   # noqa: BLE001 - refused: the checked path decides
            continue
        normal = _checked(t, f, value)   # raises EntryError if normalize refuses what the fast path took
        if f.kind == "lpm":
            assert fast == (address_bytes(f.type, normal), ipaddress.ip_network(normal).prefixlen), value
        elif f.type == "mac":
            assert fast == mac_bytes(normal), value
        elif f.type == "port":
            assert fast == {"xa": 7, "xc": 9}[normal].to_bytes(4, "little"), value


def _checked(table, f, value):
    """normalize's canonical value of one field (EntryError if it refuses it)."""
    if f in table.match:
        return normalize(table, TableEntry(table.name, {f.name: value}, "local", {}), with_action=False).match[f.name]
    params = {"egress_port": "xc", "dst_mac": NEXT_HOP, "src_mac": OWN, f.name: value}
    return normalize(table, TableEntry(table.name, {"dst_addr": "10.0.0.0/8"}, "forward", params)).params[f.name]


def test_the_fast_encoders_of_prio_fields_agree_with_normalize():
    t = PRIO.table("flow_levels")
    for f in t.match:
        encode = xdp._fast_encoder(f, 16 if f.type == "ip" else f.width // 8, {"levels": 3}, {})
        values = {"ip": ["10.0.0.1", "::1", "::ffff:10.0.0.1", "010.0.0.1", "10.0.0.1/32", 5],
                  "u16": [0, 65535, 65536, -1, True, "80"], "u8": [6, 255, 256]}[f.type]
        for value in values:
            try:
                fast = encode(value)
            except Exception:   # noqa: BLE001
                continue
            key = {g.name: 0 for g in t.match} | {g.name: "::1" for g in t.match if g.type == "ip"} | {f.name: value}
            normal = normalize(t, TableEntry(t.name, key, "set_level", {}), with_action=False).match[f.name]
            assert fast == (ip_packed(normal) if f.type == "ip" else normal.to_bytes(f.width // 8, "little")), value
    level = PRIO.table("dscp_levels").action("set_level")[0]
    encode = xdp._fast_encoder(level, 1, {"levels": 3}, {})
    assert encode(2) == b"\x02"
    for refused in (3, 256, -1, True):   # 3: not below `levels`
        with pytest.raises(ValueError):
            encode(refused)


@pytest.mark.needs_root
def test_a_batched_write_of_20000_routes(rig, capsys):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 32768})
    entries = [route(i) for i in range(20000)]
    started = time.perf_counter()
    t.write(node, "nfrouter", entries)
    wrote = time.perf_counter() - started
    started = time.perf_counter()
    assert t.delete(node, "nfrouter", entries[:10000]) == 10000
    deleted = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[xdp] 20,000 routes written in {wrote * 1000:.0f} ms ({20000 / wrote:,.0f}/s); "
              f"10,000 deleted in {deleted * 1000:.0f} ms ({10000 / deleted:,.0f}/s)")
    assert len(t.read(node, "nfrouter", "ipv4_routes")) == 10000
    assert 20000 / wrote > 20000, "batched: one-by-one writes managed about 1,250 routes/s"


def _write_routes(scope_name: str, node_name: str, netns_path: str, first: int, count: int) -> None:
    scope = Scope(scope_name)
    target = XdpTarget(scope, DataplaneRecords(Store(scope.db_path)))
    target.write(Node(node_name, netns_path), "nfrouter", [route(i) for i in range(first, first + count)])


@pytest.mark.needs_root
def test_four_writer_processes_lose_nothing_and_share_no_counter_slot(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 8192})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_routes, args=(rig.scope.name, node.name, rig.ns.path, w * 1000, 1000))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert canonical(t.read(node, "nfrouter", "ipv4_routes")) == canonical([route(i) for i in range(4000)])
    held = t.entry_slots(node, "nfrouter", "ipv4_routes")
    assert len(held) == 4000 and len(set(held)) == 4000, "no two entries share a counter slot"
    assert sorted(rig.records.slots(node.name, "nfrouter", "route_stats").values()) == sorted(held)


# ---- chains of instances ---------------------------------------------------------------------------
@pytest.mark.needs_root
def test_two_cms_instances_in_front_of_the_router_and_one_removed(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    t.deploy(node, "cms-a", CMS, ["xa", "xc"])
    t.deploy(node, "cms-b", CMS, ["xa", "xc"], {"columns": 1024})
    assert rig.chain_on("xa") == rig.chain_on("xc") == ["cms-b", "cms-a", "nfrouter"]
    assert rig.problems() == {"cms-a": None, "cms-b": None, "nfrouter": None}
    before = rig.verdicts()
    assert rig.run_head("xa") == 2   # XDP_PASS: nfrouter has no route for it
    assert (rig.counted("cms-a"), rig.counted("cms-b"), rig.verdicts() - before) == (1, 1, 1), \
        "every instance of the chain saw the frame"

    assert t.remove(node, "cms-a")
    assert rig.chain_on("xa") == rig.chain_on("xc") == ["cms-b", "nfrouter"]
    assert rig.chains().next_id("cms-b") == rig.prog_id("nfrouter")
    assert rig.pins() == ["cms-b@1", "nfrouter@1"] and not t.remove(node, "cms-a")
    rig.run_head("xc")
    assert (rig.counted("cms-b"), rig.verdicts() - before) == (2, 2)
    assert rig.problems() == {"cms-b": None, "nfrouter": None}


@pytest.mark.needs_root
def test_one_nf_on_different_interfaces_in_front_of_the_router(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    t.deploy(node, "cms-in", CMS, ["xa"])
    t.deploy(node, "cms-out", CMS, ["xc"])
    assert (rig.chain_on("xa"), rig.chain_on("xc")) == (["cms-in", "nfrouter"], ["cms-out", "nfrouter"])
    rig.run_head("xa")
    rig.run_head("xc")
    rig.run_head("xc")
    assert (rig.counted("cms-in"), rig.counted("cms-out")) == (1, 2)
    assert t.remove(node, "nfrouter")
    assert (rig.chain_on("xa"), rig.chain_on("xc")) == (["cms-in"], ["cms-out"])
    assert rig.chains().next_id("cms-in") is None and rig.chains().metas["cms-out"]["next"] is None
    assert rig.problems() == {"cms-in": None, "cms-out": None}


@pytest.mark.needs_root
def test_a_foreign_program_and_a_second_terminal_nf_are_refused(rig, tmp_path):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xc"])
    obj = libbpf.BpfObject(str(compile_program("ebpf/xdp_pass.bpf.c"))).load()
    try:
        with netns(node.netns), IPRoute() as ipr:
            XdpHook.attach(ipr, node, "xa", ipr.link_lookup(ifname="xa")[0], obj.programs["xdp_pass"])
    finally:
        obj.close()
    with pytest.raises(TargetError, match="xa already runs XDP program id .*, not this deployment's") as exc:
        t.deploy(node, "cms", CMS, ["xa"])
    assert "xdp off" in exc.value.hint and rig.pins() == ["nfrouter@1"]
    with netns(node.netns), IPRoute() as ipr:
        XdpHook.detach(ipr, ipr.link_lookup(ifname="xa")[0], None)
    with pytest.raises(TargetError, match="already runs nfrouter, which cannot be followed"):
        t.deploy(node, "router2", NFROUTER, ["xc"])
    assert rig.pins() == ["nfrouter@1"] and rig.records.get(node.name, "xdp/router2") is None
    with pytest.raises(TargetError, match="instance id 'a@1' is not valid"):
        t.deploy(node, "a@1", CMS, ["xa"])


@pytest.mark.needs_root
def test_a_failed_deploy_puts_everything_back(rig, monkeypatch):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 64})
    t.write(node, "nfrouter", [route(i) for i in range(10)])
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    hooks, router = rig.xdp_ids(), rig.prog_id("nfrouter")
    attach = XdpHook.attach

    def failing_on_xc(ipr, node_, ifname, ifindex, fd):
        if ifname == "xc":
            raise TargetError("injected failure")
        return attach(ipr, node_, ifname, ifindex, fd)

    monkeypatch.setattr(XdpHook, "attach", staticmethod(failing_on_xc))
    with pytest.raises(TargetError, match="injected failure"):
        t.deploy(node, "precision", get_nf("precision"), ["xa", "xc"])
    monkeypatch.undo()
    assert rig.xdp_ids() == hooks and rig.pins() == ["cms@1", "nfrouter@1"]

    monkeypatch.setattr(t, "_put", _fail)
    with pytest.raises(TargetError, match="injected failure"):   # a new generation, failing at its record
        t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 128})
    monkeypatch.undo()
    assert rig.xdp_ids() == hooks and rig.pins() == ["cms@1", "nfrouter@1"]
    assert rig.chains().next_id("cms") == router, "cms calls the old router again"
    assert len(t.read(node, "nfrouter", "ipv4_routes")) == 10 and t.deployment(node, "nfrouter").params == \
        {"max_routes": 64, "max_flow_routes": 1024}
    assert rig.problems() == {"cms": None, "nfrouter": None}


# ---- redeploys ------------------------------------------------------------------------------------
@pytest.mark.needs_root
def test_a_redeploy_with_changed_parameters_gets_fresh_maps_in_every_place(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 64})
    t.write(node, "nfrouter", [route(i) for i in range(60)])
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    old_pin, old_id = t.pin_dir(node, "nfrouter"), rig.prog_id("nfrouter")

    d = t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 128})
    assert (d.cleared, d.params, d.problem) == (("nfrouter",), {"max_routes": 128, "max_flow_routes": 1024}, None)
    new_pin, new_id = t.pin_dir(node, "nfrouter"), rig.prog_id("nfrouter")
    assert new_pin.name == "nfrouter@2" and not old_pin.exists() and new_id != old_id
    assert rig.chain_on("xa") == rig.chain_on("xc") == ["cms", "nfrouter"]
    assert rig.chains().next_id("cms") == new_id, "cms calls the new program"
    assert t.read(node, "nfrouter", "ipv4_routes") == [] and rig.records.slots(node.name, "nfrouter", "route_stats") \
        == {}, "the new maps start empty, and so do their counter slots"
    t.write(node, "nfrouter", [route(i) for i in range(100)])   # more than 64 fit now
    table = libbpf.BpfMap.from_pin(str(new_pin / "ipv4_routes"))
    assert table.max_entries == 128
    table.close()
    assert _unloaded(old_id), "nothing keeps the old program"

    cms = t.deploy(node, "cms", CMS, ["xa", "xc"], {"columns": 4096})   # the head of the chain
    assert cms.cleared == ("cms",) and rig.xdp_ids()["xa"] == rig.prog_id("cms") != rig.prog_id("nfrouter")
    assert rig.chains().next_id("cms") == new_id and len(t.read(node, "nfrouter", "ipv4_routes")) == 100
    assert t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 128}).cleared == ()
    assert rig.pins() == ["cms@2", "nfrouter@2"]
    assert rig.problems() == {"cms": None, "nfrouter": None}


@pytest.mark.needs_root
def test_an_unchained_instance_moves_to_other_interfaces_with_its_state(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa"])
    t.write(node, "nfrouter", [route(1, port="xa")])
    d = t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    assert d.cleared == () and rig.xdp_ids()["xc"] == rig.prog_id("nfrouter")
    d = t.deploy(node, "nfrouter", NFROUTER, ["xc"])
    assert d.cleared == () and rig.xdp_ids()["xa"] is None and len(t.read(node, "nfrouter", "ipv4_routes")) == 1


def _unloaded(prog_id: int) -> bool:
    """Whether the program is gone (the kernel frees it after an RCU grace period)."""
    for _ in range(100):
        try:
            os.close(libbpf.prog_fd_by_id(prog_id))
        except BpfError:
            return True
        time.sleep(0.02)
    return False


# ---- crashes and leftovers -------------------------------------------------------------------------
@pytest.mark.needs_root
def test_prune_cleans_pins_without_a_record_and_a_record_without_pins(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    router = rig.prog_id("nfrouter")
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    rig.records.delete(node.name, "xdp/cms")   # as if the deploy died before its record
    assert rig.problems() == {"nfrouter": f"not on xa's XDP hook, which runs program id {rig.xdp_ids()['xa']}"}
    assert t.prune(node, {"nfrouter"}) == ["pins cms@1"]
    assert (rig.xdp_ids()["xa"], rig.xdp_ids()["xc"], rig.pins()) == (router, router, ["nfrouter@1"])

    t.deploy(node, "cms", CMS, ["xa", "xc"])
    shutil.rmtree(t.pin_dir(node, "cms"))   # a record whose pins are gone: its program runs on
    assert rig.problems()["cms"].startswith("its pins are gone")
    assert t.prune(node, {"nfrouter"}) == ["instance cms"]
    assert (rig.xdp_ids()["xa"], rig.xdp_ids()["xc"]) == (router, router)
    assert rig.problems() == {"nfrouter": None}



@pytest.mark.needs_root
def test_remove_works_from_a_record_alone_or_from_pins_alone(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    router = rig.prog_id("nfrouter")
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    shutil.rmtree(t.pin_dir(node, "cms"))
    assert t.remove(node, "cms") and rig.xdp_ids()["xa"] == router and rig.chains().metas.keys() == {"nfrouter"}

    t.deploy(node, "cms", CMS, ["xa", "xc"])
    rig.records.delete(node.name, "xdp/cms")
    assert t.remove(node, "cms") and rig.xdp_ids()["xa"] == router and rig.pins() == ["nfrouter@1"]
    assert not t.remove(node, "cms")

    t.deploy(node, "cms", CMS, ["xa", "xc"])
    rig.records.delete(node.name, "xdp/nfrouter")   # the tail's record lost: cms still calls it
    assert t.remove(node, "nfrouter") and rig.chains().next_id("cms") is None
    assert rig.chains().metas["cms"]["next"] is None and rig.problems() == {"cms": None}


@pytest.mark.needs_root
def test_a_redeploy_mends_a_chain_whose_next_lost_its_record(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"])
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    rig.records.delete(node.name, "xdp/nfrouter")
    assert rig.problems() == {"cms": "its chain_next does not call nfrouter"}
    assert t.deploy(node, "cms", CMS, ["xa", "xc"]).cleared == (), "its own maps are fine"
    assert rig.chains().next_id("cms") is None and rig.problems() == {"cms": None}
    assert t.prune(node, {"cms"}) == ["pins nfrouter@1"] and rig.pins() == ["cms@1"]


def _deploy_killed_at(scope_name: str, node_name: str, netns_path: str, instance: str, params: dict, at: str):
    """Deploy in this (forked) process, which SIGKILLs itself at `at`."""
    scope = Scope(scope_name)
    target = XdpTarget(scope, DataplaneRecords(Store(scope.db_path)))
    if at == "record":   # the one transaction that makes the deploy count
        target._put = _kill_me
    else:   # after it: the old generation's pins are still there
        xdp.shutil.rmtree = _kill_me
    target.deploy(Node(node_name, netns_path), instance, get_nf(instance), ["xa", "xc"], params)


@pytest.mark.needs_root
def test_a_deploy_killed_before_its_record_is_rolled_back(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 64})
    t.write(node, "nfrouter", [route(i) for i in range(10)])
    router, args = rig.prog_id("nfrouter"), (rig.scope.name, node.name, rig.ns.path)

    assert forked(_deploy_killed_at, *args, "cms", {}, "record") == -signal.SIGKILL
    assert rig.xdp_ids()["xa"] != router, "killed with cms attached and no record of it"
    assert t.deploy(node, "cms", CMS, ["xa", "xc"]).problem is None, "a deploy over the leftovers"
    assert rig.pins() == ["cms@1", "nfrouter@1"] and rig.chain_on("xa") == ["cms", "nfrouter"]

    assert forked(_deploy_killed_at, *args, "nfrouter", {"max_routes": 128}, "record") == -signal.SIGKILL
    assert rig.chains().next_id("cms") != router, "killed with the new generation in cms's chain_next"
    assert rig.pins() == ["cms@1", "nfrouter@1", "nfrouter@2"]
    assert t.prune(node, {"cms", "nfrouter"}) == ["pins nfrouter@2"]
    assert rig.chains().next_id("cms") == router and rig.pins() == ["cms@1", "nfrouter@1"]
    assert len(t.read(node, "nfrouter", "ipv4_routes")) == 10, "the old maps, entries and all"
    assert rig.problems() == {"cms": None, "nfrouter": None}


@pytest.mark.needs_root
def test_a_deploy_killed_after_its_record_is_rolled_forward(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "nfrouter", NFROUTER, ["xa", "xc"], {"max_routes": 64})
    t.deploy(node, "cms", CMS, ["xa", "xc"])
    args = (rig.scope.name, node.name, rig.ns.path)
    assert forked(_deploy_killed_at, *args, "nfrouter", {"max_routes": 128}, "old pins") == -signal.SIGKILL
    assert rig.pins() == ["cms@1", "nfrouter@1", "nfrouter@2"]
    assert t.deployment(node, "nfrouter").params == {"max_routes": 128, "max_flow_routes": 1024}
    assert t.prune(node, {"cms", "nfrouter"}) == ["pins nfrouter@1"]
    assert rig.chains().next_id("cms") == rig.prog_id("nfrouter") and rig.pins() == ["cms@1", "nfrouter@2"]
    assert rig.problems() == {"cms": None, "nfrouter": None}


# ---- tc egress and queues ----------------------------------------------------------------------------
@pytest.mark.needs_root
def test_prio_at_tc_egress_keeps_its_queues_through_a_changed_redeploy(rig):
    t, node = rig.target, rig.node
    t.deploy(node, "prio", PRIO, ["xc"])
    levels = [QueueLevel(0, 5_000_000), QueueLevel(1, 3_000_000), QueueLevel(2, 1_000_000)]
    t.configure_queues(node, "prio", "xc", 10_000_000, levels)
    with pytest.raises(TargetError, match="already runs prio at its tc egress"):
        t.deploy(node, "prio2", PRIO, ["xc"])
    d = t.deploy(node, "prio", PRIO, ["xc"], {"max_flows": 2048})
    assert d.cleared == ("prio",) and d.problem is None
    assert len(t.queue_stats(node, "prio", "xc")) == 3
    classes = libbpf.BpfMap.from_pin(str(t.pin_dir(node, "prio") / "level_classes"))
    try:
        assert [int.from_bytes(classes.lookup(i.to_bytes(4, "little"))[:4], "little") for i in range(3)] == \
            [0x10010, 0x10011, 0x10012], "the new classifier knows the HTB classes"
    finally:
        classes.close()
    with netns(node.netns), IPRoute() as ipr:
        filters = tc.innet_filters(ipr, ipr.link_lookup(ifname="xc")[0])
    assert [(f.instance, f.prog_id) for f in filters] == [("prio", rig.prog_id("prio"))]
    assert t.remove(node, "prio")
    with netns(node.netns), IPRoute() as ipr:
        assert tc.innet_filters(ipr, ipr.link_lookup(ifname="xc")[0]) == []


def test_pin_directories_name_their_instance_and_generation():
    assert [xdp._instance_of(Path(n)) for n in ("cms@3", "chain1-cms@12", "odd")] == ["cms", "chain1-cms", "odd"]
    assert [xdp._generation(n) for n in ("cms@3", "cms")] == [3, 0]
