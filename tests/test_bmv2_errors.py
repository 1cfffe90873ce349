"""Bad input on the BMv2 target: clear errors, and nothing half-configured left behind.

Each test runs a real simple_switch_grpc in a namespace of its own (prefix `p4t`), started in
the suite's scope, with the small program tests/p4/tiny.p4 and its catalog entry
tests/p4/tiny.yaml, deployed as instance "tiny" through the Bmv2Target of a Controller.
"""
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from controller.catalog import load_nf
from controller.errors import CompileError, EntryError, TargetError, TopologyError
from controller.node import Node
from controller.p4 import switch
from controller.scope import current
from controller.service import Controller
from controller.tables import TableEntry
from testbed.scratch import Veth, namespace

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))]

HERE = Path(__file__).parent
TINY = load_nf(HERE / "p4" / "tiny.yaml")
TINY_BIG = load_nf(HERE / "p4" / "tiny_big.yaml")
MAC = "02:00:00:00:00:01"


def route(prefix, port="p4a", action="forward"):
    params = {"egress_port": port, "dst_mac": MAC} if action == "forward" else {}
    return TableEntry("routes", {"dst_addr": prefix}, action, params)


@pytest.fixture
def bmv2_node():
    """A namespace with two veth pairs, a BMv2 switch on one end of each, the node added to a
    Controller of the suite's scope, and that controller's BMv2 target."""
    with namespace("p4t", [Veth("p4a", "p4b"), Veth("p4c", "p4d")], lo_up=True) as ns:
        ctl = Controller()
        node = ctl.add_node(Node(ns.name, ns.path, target="bmv2", kernel_slow_path=False))
        try:
            switch.start(ctl.scope, ns.name, ["p4a", "p4c"], netns=ns.path)
            yield node, ctl.target("bmv2")
        finally:
            try:
                ctl.forget_node(ns.name)   # the instances' records, while the switch still runs
            finally:
                switch.stop(ctl.scope, ns.name)
        assert ctl.records.items(ns.name) == {}, "no record of the node's instances is left"
    assert not switch.state_dir(ctl.scope, ns.name).exists(), "the switch's sockets, logs and state went with it"


def test_compile_error_shows_the_compilers_trimmed_message(tmp_path):
    from controller.p4.build import MAX_ERROR_LINES, compile_p4

    bad = tmp_path / "bad.p4"
    bad.write_text((HERE / "p4" / "tiny.p4").read_text().replace("hdr.ethernet.dst = dst_mac;",
                                                                 "hdr.ethernet.dst = dst_mac +;"))
    with pytest.raises(CompileError) as exc:
        compile_p4(bad)
    text = str(exc.value)
    assert "p4c failed to compile" in text and f"{bad}(" in text and "syntax error" in text
    assert "dst_mac +;" in text, "the offending source line is shown"
    assert len(exc.value.message.splitlines()) <= MAX_ERROR_LINES + 1
    assert not list(bad.parent.glob("*.json")), "no output is left from a failed build"


def test_a_switch_that_cannot_start_shows_its_log_and_leaves_nothing():
    scope, name = current(), f"p4t{uuid.uuid4().hex[:6]}"
    with pytest.raises(TopologyError, match="no interface p4-no-such-if in its namespace"):
        switch.start(scope, name, ["p4-no-such-if"])
    with pytest.raises(TargetError) as exc:
        switch.start(scope, name, ["lo"], cpu_port=0)        # BMv2 refuses CPU port 0 and exits
    assert "exited with status 1 while starting" in str(exc.value)
    assert "program-options parser" in str(exc.value), "the switch's last output is shown"
    assert "--cpu-port 0" in exc.value.hint
    assert switch.info(scope, name) is None and not switch.state_dir(scope, name).exists()


def test_no_switch_on_the_node_is_a_clear_error():
    ctl = Controller()
    with pytest.raises(TargetError, match="runs no BMv2 switch"):
        ctl.target("bmv2").deploy(Node("p4t-none", None, target="bmv2"), "tiny", TINY, ["p4a"])
    assert ctl.records.items("p4t-none") == {}, "nothing is recorded for it"


def test_grpc_connection_refused_is_a_clear_error(tmp_path):
    import socket

    from controller.p4.runtime import P4RuntimeClient

    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:   # a socket file nobody listens on any more
        s.bind(str(path))
    with pytest.raises(TargetError) as exc:
        P4RuntimeClient(f"unix:{path}", 1, "test switch")
    assert "cannot reach the switch's P4Runtime server" in str(exc.value)
    assert "is the switch running?" in exc.value.hint


def test_a_switch_that_dies_is_a_clear_error(bmv2_node):
    node, target = bmv2_node
    target.deploy(node, "tiny", TINY, ["p4a", "p4c"])
    target.write(node, "tiny", [route("10.1.0.0/16")])
    sw = switch.info(target.scope, node.name)
    os.kill(sw.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while switch.is_running(sw) and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(TargetError) as exc:
        target.write(node, "tiny", [route("10.2.0.0/16")])
    assert f"the BMv2 switch of {node.name} (pid {sw.pid}) is not running" in str(exc.value)
    assert "restart it" in exc.value.hint
    d = target.deployment(node, "tiny")
    assert not d.healthy and f"the BMv2 switch of {node.name} (pid {sw.pid}) is not running" in d.problem, \
        "a dead switch runs nothing: its instance shows as broken, saying why"
    assert target.remove(node, "tiny") is True and target.remove(node, "tiny") is False
    assert target.deployments(node) == []


def test_entry_that_does_not_fit_the_p4info_is_refused_whole(bmv2_node):
    node, target = bmv2_node
    target.deploy(node, "tiny", TINY, ["p4a", "p4c"])
    fits = TableEntry("narrow", {"key": 17}, "set_tos", {"tos": 1})
    too_wide = TableEntry("narrow", {"key": 300}, "set_tos", {"tos": 1})   # a u16 in the catalog, 8 bits in P4
    with pytest.raises(EntryError) as exc:
        target.write(node, "tiny", [fits, too_wide])
    assert "narrow" in str(exc.value) and "key=300" in str(exc.value) and "8 bits" in str(exc.value)
    assert target.read(node, "tiny", "narrow") == [], "nothing of the batch went in"
    with pytest.raises(EntryError, match="interface 'eth9' is not a port of the switch"):
        target.write(node, "tiny", [route("10.3.0.0/16", port="eth9")])


def test_a_batch_the_switch_refuses_in_part_is_rolled_back(bmv2_node):
    node, target = bmv2_node
    target.deploy(node, "tiny", TINY, ["p4a", "p4c"])
    kept = [route("10.0.0.0/24"), route("10.0.1.0/24", "p4c")]
    target.write(node, "tiny", kept)
    changed = route("10.0.0.0/24", "p4c")                                       # a modify...
    fresh = [route(f"10.9.{i}.0/24") for i in range(TINY.parameters["size"].default)]   # ...and too many inserts
    with pytest.raises(EntryError) as exc:
        target.write(node, "tiny", [changed, *fresh])
    assert "refused" in str(exc.value) and "none was kept" in str(exc.value)
    assert sorted(target.read(node, "tiny", "routes"), key=str) == sorted(kept, key=str)


def test_another_pipeline_is_refused_while_an_nf_runs(bmv2_node):
    """Another NF's program is refused while tiny runs; tiny's own redeploy with another size
    builds and pushes a new pipeline, which empties tiny's tables (Deployment.cleared says so)."""
    node, target = bmv2_node
    target.deploy(node, "tiny", TINY, ["p4a"])
    target.write(node, "tiny", [route("10.4.0.0/16")])
    with pytest.raises(TargetError, match="runs tiny in another P4 program"):
        target.deploy(node, "tiny_big", TINY_BIG, ["p4c"])
    with pytest.raises(TopologyError, match="has no port on 'p4b'"):
        target.deploy(node, "tiny", TINY, ["p4b"])
    assert [e.match["dst_addr"] for e in target.read(node, "tiny", "routes")] == ["10.4.0.0/16"], "still running"
    assert target.deployment(node, "tiny_big") is None

    resized = target.deploy(node, "tiny", TINY, ["p4a"], {"size": 32})
    assert resized.cleared == ("tiny",) and resized.params["size"] == 32
    assert target.read(node, "tiny", "routes") == [], "the new pipeline starts empty"
    assert [(d.instance, d.problem) for d in target.deployments(node)] == [("tiny", None)]
    bigger = [route(f"10.5.{i}.0/24") for i in range(32)]   # twice the old size: the new one holds
    target.write(node, "tiny", bigger)
    assert sorted(target.read(node, "tiny", "routes"), key=str) == sorted(bigger, key=str)
    assert target.deployment(node, "tiny_big") is None
