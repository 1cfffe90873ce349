"""Bmv2Target on its own, keyed by NF instance: records in the scope's database, switches
under the scope's run directory.

Each test runs real simple_switch_grpc switches in throwaway namespaces (prefix `p4i`), in
scopes whose database and run directory are temporary directories of this module, so
nothing here meets a testbed's state.
"""
import os
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.catalog import get_nf, load_nf
from controller.errors import EntryError, TargetError
from controller.node import Node
from controller.p4 import switch
from controller.scope import Scope
from controller.store import DataplaneRecords, Store
from controller.tables import TableEntry
from testbed.scratch import Veth, namespace

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("private_state_dirs"),
              pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))]

NFROUTER, CMS = get_nf("nfrouter"), get_nf("cms")
TINY = load_nf(Path(__file__).parent / "p4" / "tiny.yaml")
NEXT_HOP_MAC, OWN_MAC = "02:00:00:00:0e:01", "02:00:00:00:0e:02"


def route(i: int, port: str = "p4c") -> TableEntry:
    return TableEntry("ipv4_routes", {"dst_addr": f"10.{i >> 8 & 255}.{i & 255}.0/24"}, "forward",
                      {"egress_port": port, "dst_mac": NEXT_HOP_MAC, "src_mac": OWN_MAC})


@dataclass
class Setup:
    scope: Scope
    records: DataplaneRecords
    target: object   # Bmv2Target
    node: Node


@contextmanager
def bmv2_setup(node_name: str | None = None):
    """A fresh scope with its store and target, and a namespace with two veth pairs whose
    ends p4a and p4c are a BMv2 switch's ports 1 and 2 (the node is named after the
    namespace unless `node_name` is given)."""
    from controller.targets.bmv2 import Bmv2Target

    scope = Scope(f"t{uuid.uuid4().hex[:8]}")
    records = DataplaneRecords(Store(scope.db_path))
    with namespace("p4i", [Veth("p4a", "p4b"), Veth("p4c", "p4d")], lo_up=True) as ns:
        node = Node(node_name or ns.name, ns.path, target="bmv2", kernel_slow_path=False)
        try:
            switch.start(scope, node.name, ["p4a", "p4c"], netns=ns.path)
            yield Setup(scope, records, Bmv2Target(scope, records), node)
        finally:
            switch.stop(scope, node.name)
            records.store.close()
    assert not switch.state_dir(scope, node.name).exists(), "stopping the switch leaves nothing behind"


@pytest.fixture
def bmv2():
    with bmv2_setup() as setup:
        yield setup


def kill_switch(scope: Scope, node: Node) -> None:
    sw = switch.info(scope, node.name)
    os.kill(sw.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while switch.is_running(sw) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_routes_are_written_and_read_by_instance_id(bmv2):
    target, node = bmv2.target, bmv2.node
    d = target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"], {"max_routes": 64})
    assert (d.instance, d.nf, d.interfaces, d.cleared) == ("edge", "nfrouter", ("p4a", "p4c"), ())
    assert d.modes == {"p4a": "bmv2 port 1", "p4c": "bmv2 port 2"}
    record = bmv2.records.get(node.name, "bmv2/edge")
    assert record["nf"] == "nfrouter" and record["source"] == str(NFROUTER.source)
    assert record["params"]["max_routes"] == 64 and record["enable_mask"] == 0x1

    routes = [route(i) for i in range(3)]
    target.write(node, "edge", routes)
    assert sorted(target.read(node, "edge", "ipv4_routes"), key=str) == sorted(routes, key=str)
    assert target.delete(node, "edge", routes[:1]) == 1
    assert len(target.read(node, "edge", "ipv4_routes")) == 2
    assert [(x.instance, x.healthy) for x in target.deployments(node)] == [("edge", True)]
    with pytest.raises(TargetError, match="other is not deployed on"):
        target.read(node, "other", "ipv4_routes")


def test_a_second_instance_of_an_nf_type_is_refused_and_changes_nothing(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "cms-a", CMS, ["p4a"])
    before = (bmv2.records.items(node.name), target.deployments(node))
    with pytest.raises(TargetError) as exc:
        target.deploy(node, "cms-b", CMS, ["p4c"], {"rows": 2})
    assert exc.value.message == (f"bmv2 switch of {node.name} already runs cms as instance 'cms-a'; "
                                 f"the composed pipeline holds one instance per NF type")
    assert "another node" in exc.value.hint and "XDP node" in exc.value.hint
    assert (bmv2.records.items(node.name), target.deployments(node)) == before


def test_a_redeploy_with_other_parameters_empties_and_names_every_instance(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"], {"max_routes": 64})
    target.deploy(node, "sketch", CMS, ["p4a"])
    target.write(node, "edge", [route(i) for i in range(64)])
    target.write_registers(node, "sketch", "control", 0, {"active_bank": 1})

    same = target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"], {"max_routes": 64})
    assert same.cleared == () and len(target.read(node, "edge", "ipv4_routes")) == 64, "an identical redeploy is a no-op"

    bigger = target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"], {"max_routes": 128})
    assert bigger.cleared == ("edge", "sketch") and bigger.params["max_routes"] == 128
    assert target.read(node, "edge", "ipv4_routes") == []
    assert int(target.read_registers(node, "sketch", "control")["active_bank"][0]) == 0
    assert [(d.instance, d.problem) for d in target.deployments(node)] == [("edge", None), ("sketch", None)], \
        "both instances run in the new pipeline, their ports enabled again"
    target.write(node, "edge", [route(i) for i in range(128)])
    assert len(target.read(node, "edge", "ipv4_routes")) == 128


def test_a_standalone_program_is_replaced_only_by_its_own_instance(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "tiny", TINY, ["p4a"])
    target.write(node, "tiny", [TableEntry("routes", {"dst_addr": "10.4.0.0/16"}, "drop", {})])
    with pytest.raises(TargetError, match="runs tiny in another P4 program"):
        target.deploy(node, "edge", NFROUTER, ["p4c"])
    resized = target.deploy(node, "tiny", TINY, ["p4a"], {"size": 32})
    assert resized.cleared == ("tiny",) and target.read(node, "tiny", "routes") == []


def test_remove_works_from_the_record_when_the_switch_is_gone(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"])
    target.write(node, "edge", [route(1)])
    kill_switch(bmv2.scope, node)
    (d,) = target.deployments(node)
    assert not d.healthy and "is not running" in d.problem
    assert target.remove(node, "edge") is True
    assert bmv2.records.items(node.name) == {} and target.deployments(node) == []
    assert target.remove(node, "edge") is False


def test_a_restarted_switch_shows_as_a_problem_until_redeployed(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"])
    target.deploy(node, "sketch", CMS, ["p4a"])
    kill_switch(bmv2.scope, node)
    switch.start(bmv2.scope, node.name, ["p4a", "p4c"], netns=node.netns)
    assert all("no pipeline loaded" in d.problem for d in target.deployments(node))
    again = target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"])
    assert again.cleared == ("edge", "sketch")
    assert all(d.healthy for d in target.deployments(node)), "the new pipeline enables every instance it holds"


def test_prune_removes_the_instances_not_kept(bmv2):
    from controller.targets.bmv2 import _pipeline_of

    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"])
    target.deploy(node, "sketch", CMS, ["p4a", "p4c"])
    target.write(node, "edge", [route(2)])
    removed = target.prune(node, {"edge"})
    assert removed == [f"BMv2 instance sketch (cms) on {node.name}"]
    assert list(bmv2.records.items(node.name)) == ["bmv2/edge"]
    edge = bmv2.records.get(node.name, "bmv2/edge")
    assert target._enabled(node, _pipeline_of(edge)) == {"p4a": 0x1, "p4c": 0x1}, "cms's bit is gone from its ports"
    assert target.read(node, "edge", "ipv4_routes") == [route(2)]
    assert target.prune(node, {"edge"}) == []


def test_two_scopes_with_a_switch_each_do_not_see_each_other():
    with bmv2_setup("s1") as one, bmv2_setup("s1") as two:
        one_sw, two_sw = switch.info(one.scope, "s1"), switch.info(two.scope, "s1")
        assert one_sw.pid != two_sw.pid and one_sw.device_id != two_sw.device_id
        assert one_sw.grpc_addr != two_sw.grpc_addr
        one.target.deploy(one.node, "r", NFROUTER, ["p4a", "p4c"])
        two.target.deploy(two.node, "r", NFROUTER, ["p4a"], {"max_routes": 16})
        one.target.write(one.node, "r", [route(1)])
        two.target.write(two.node, "r", [route(2, "p4a")])
        assert one.target.read(one.node, "r", "ipv4_routes") == [route(1)]
        assert two.target.read(two.node, "r", "ipv4_routes") == [route(2, "p4a")]
        assert one.target.remove(one.node, "r")
        assert [d.healthy for d in two.target.deployments(two.node)] == [True]


def test_ten_thousand_routes_go_in_and_out_in_one_call(bmv2):
    """Batches as large as the table: one more entry than it holds is refused whole (BMv2
    answers with 10,001 statuses, beyond grpc's default metadata limit), every entry of a
    rewrite is modified in place."""
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"], {"max_routes": 10_000})
    with pytest.raises(EntryError, match=r"refused 1 entries \(none was kept\)"):
        target.write(node, "edge", [route(i) for i in range(10_001)])
    assert target.read(node, "edge", "ipv4_routes") == []
    target.write(node, "edge", [route(i) for i in range(10_000)])
    moved = [route(i, "p4a") for i in range(10_000)]
    target.write(node, "edge", moved)
    assert sorted(target.read(node, "edge", "ipv4_routes"), key=str) == sorted(moved, key=str)
    assert target.delete(node, "edge", moved) == 10_000
    assert target.read(node, "edge", "ipv4_routes") == []


def test_queues_are_recorded_and_go_with_their_instance(bmv2):
    from controller.queues import QueueLevel

    target, node = bmv2.target, bmv2.node
    d = target.deploy(node, "classes", get_nf("prio"), ["p4a", "p4c"])
    levels = [QueueLevel(i, 1_000_000) for i in range(d.params["levels"])]
    configured = target.configure_queues(node, "classes", "p4c", 10_000_000, levels)
    assert [q.level for q in configured] == list(range(d.params["levels"]))
    assert set(bmv2.records.get(node.name, "bmv2/classes")["queues"]) == {"p4c"}
    with pytest.raises(TargetError, match="keeps no per-queue statistics"):
        target.queue_stats(node, "classes", "p4c")
    assert target.remove(node, "classes") and bmv2.records.items(node.name) == {}


SFF = get_nf("sff")


def test_an_instance_behind_the_forwarder_takes_its_slot_and_says_when_the_forwarder_is_gone(bmv2):
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "sff", SFF, ["p4a", "p4c"], {"max_nfs": 4})
    d = target.deploy(node, "meter", CMS, [], behind=("sff", 2))
    assert (d.interfaces, d.behind, d.healthy) == ((), ("sff", 2), True)
    from controller.targets.bmv2 import _Instance, _nf_of
    record = bmv2.records.get(node.name, "bmv2/sff")
    codec = target._nf_slots_codec(node, _Instance("sff", record, _nf_of(record)).pipeline, record)
    assert [c.entry.match["slot"] for c in map(codec.decode, target._read_raw(node, codec))] == [2]
    for behind, error in ((("sff", 4), "slot 4 of sff .* does not exist: it has 4 NF slots"),
                          (("sff", 2), "slot 2 of sff .* holds meter"),
                          (("edge", 0), "edge on .* is not deployed")):
        with pytest.raises(TargetError, match=error):
            target.deploy(node, "other", get_nf("precision"), [], behind=behind)
    with pytest.raises(TargetError, match="nfrouter cannot run behind a forwarder on BMv2"):
        target.deploy(node, "edge", NFROUTER, [], behind=("sff", 0))
    target.remove(node, "sff")
    (gone,) = target.deployments(node)
    assert gone.problem == "its forwarder sff is not deployed: no packet reaches it"
    target.deploy(node, "sff", SFF, ["p4a", "p4c"], {"max_nfs": 4})
    assert all(x.healthy for x in target.deployments(node))
    target.remove(node, "meter")
    assert target._read_raw(node, codec) == [], "its slot is emptied"


def test_classifier_zeros_are_wildcards_with_xdp_lookup_order(bmv2):
    """sfc_classify's proto and ports are ternary on the switch: a 0 goes in as don't-care, and
    the entry's priority orders the lookups as XDP's (full 5-tuple first, then without the
    source port, without the destination port, without ports, without the protocol)."""
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "sff", SFF, ["p4a", "p4c"])
    entries = [TableEntry("sfc_classify", {"src_addr": "10.0.1.2", "dst_addr": "10.0.4.2", "proto": proto,
                                           "src_port": sport, "dst_port": dport}, "encap", {"spi": spi, "si": 255})
               for spi, (proto, sport, dport) in enumerate([(6, 40000, 5201), (6, 0, 5201), (6, 40000, 0),
                                                            (6, 0, 0), (0, 0, 0)], start=1)]
    target.write(node, "sff", entries)
    assert sorted(target.read(node, "sff", "sfc_classify"), key=lambda e: e.params["spi"]) == entries
    from controller.targets.bmv2 import _Instance, _nf_of
    record = bmv2.records.get(node.name, "bmv2/sff")
    inst = _Instance("sff", record, _nf_of(record))
    codec = target._codec(node, inst, SFF.table("sfc_classify"))
    priority = {codec.decode(raw).entry.params["spi"]: raw.priority for raw in target._read_raw(node, codec)}
    assert [priority[spi] for spi in range(1, 6)] == sorted(priority.values(), reverse=True)
    assert len(set(priority.values())) == 5
    assert target.delete(node, "sff", entries) == 5 and target.read(node, "sff", "sfc_classify") == []


def test_a_composed_build_that_serves_every_instance_stays_loaded(bmv2):
    """Loading a pipeline empties every table of the switch: one that still serves every deployed
    instance is kept, whatever the defines of NFs no instance runs."""
    target, node = bmv2.target, bmv2.node
    target.deploy(node, "edge", NFROUTER, ["p4a", "p4c"])
    target.write(node, "edge", [route(1)])
    heavy = target.deploy(node, "hh", get_nf("precision"), ["p4a"], {"stages": 3})
    assert heavy.cleared == ("edge",), "precision's 3 stages are a new build"
    target.write(node, "edge", [route(1)])
    target.remove(node, "hh")
    light = target.deploy(node, "sketch", CMS, ["p4a"])
    assert light.cleared == () and target.read(node, "edge", "ipv4_routes") == [route(1)], \
        "the running build (precision at 3 stages, no precision instance) serves nfrouter and cms as they are"
    other = target.deploy(node, "sketch", CMS, ["p4a"], {"rows": 2})
    assert other.cleared == ("edge", "sketch"), "cms with other rows needs another build"
