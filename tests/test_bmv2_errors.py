"""Bad input on the BMv2 target: clear errors, and nothing half-configured left behind.

Each test runs a real simple_switch_grpc in a namespace of its own (prefix `p4t`), started in
the suite's scope, with the small program tests/p4/tiny.p4 and its catalog entry
tests/p4/tiny.yaml, deployed as instance "tiny" through the Bmv2Target of a Controller.
The toolchain diagnoses run innet against binaries that are not what it needs (a shell
script, BMv2's simple_switch, a simple_switch_grpc whose --help hides its Thrift server) and
against a real switch whose Thrift port another socket holds.
"""
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from controller.catalog import load_nf
from controller.errors import CompileError, EntryError, TargetError, TopologyError
from controller.netns import netns as enter_netns
from controller.node import Node
from controller.p4 import switch
from controller.scope import current
from controller.service import Controller
from controller.tables import TableEntry
from testbed.scratch import Veth, namespace

pytestmark = pytest.mark.needs_root
needs_bmv2 = pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))

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


@needs_bmv2
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


@needs_bmv2
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


@needs_bmv2
def test_no_switch_on_the_node_is_a_clear_error():
    ctl = Controller()
    with pytest.raises(TargetError, match="runs no BMv2 switch"):
        ctl.target("bmv2").deploy(Node("p4t-none", None, target="bmv2"), "tiny", TINY, ["p4a"])
    assert ctl.records.items("p4t-none") == {}, "nothing is recorded for it"


@needs_bmv2
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


@needs_bmv2
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


@needs_bmv2
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


@needs_bmv2
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


@needs_bmv2
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


# ---- the toolchain: what innet needs of simple_switch_grpc, and what it says when it is not there ----
def script(tmp_path, body: str) -> str:
    """An executable shell script named simple_switch_grpc (bad input: not a BMv2 build)."""
    path = tmp_path / "simple_switch_grpc"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def refused_start(binary: str, monkeypatch) -> TargetError:
    """switch.start with INNET_BMV2_SWITCH=binary: the error, after checking nothing was left."""
    monkeypatch.setenv(switch.SWITCH_BINARY_ENV, binary)
    scope, name = current(), f"p4t{uuid.uuid4().hex[:6]}"
    with pytest.raises(TargetError) as exc:
        switch.start(scope, name, ["lo"])
    assert switch.info(scope, name) is None and not switch.state_dir(scope, name).exists(), "nothing was started"
    assert exc.value.message in switch.unavailable(), "the BMv2 tests skip with the same diagnosis"
    return exc.value


def test_a_binary_that_is_not_bmv2_is_refused_before_it_runs(tmp_path, monkeypatch):
    binary = script(tmp_path, 'echo "frobnicate 0.1, the frobnicator"')
    err = refused_start(binary, monkeypatch)
    assert err.message == \
        f"{binary} is not BMv2's simple_switch_grpc: `--version` printed 'frobnicate 0.1, the frobnicator'"
    assert switch.SWITCH_BINARY_ENV in err.hint


def test_a_missing_binary_is_named(tmp_path, monkeypatch):
    err = refused_start(str(tmp_path / "no-such-switch"), monkeypatch)
    assert err.message == f"BMv2 switch {tmp_path / 'no-such-switch'}: No such file or directory"


def test_an_old_bmv2_is_refused_with_the_version_needed(tmp_path, monkeypatch):
    err = refused_start(script(tmp_path, 'echo "1.14.0-abcdef"'), monkeypatch)
    assert err.message.endswith("is BMv2 1.14.0; innet needs 1.15 or later")
    assert "behavioral-model 1.15.5" in err.hint


@pytest.mark.skipif(not switch.find_tool(switch.SWITCH_BINARY), reason="needs a simple_switch_grpc to hide Thrift from")
def test_a_switch_built_without_thrift_is_refused_with_how_to_rebuild(tmp_path, monkeypatch):
    """BMv2 lists --thrift-port in --help only when built --with-thrift: a build without it, as
    innet sees one (the real binary, that line of its --help left out)."""
    real = switch.find_tool(switch.SWITCH_BINARY)
    err = refused_start(script(tmp_path, f'"{real}" "$@" | grep -v -e --thrift-port'), monkeypatch)
    assert "has no Thrift server (BMv2 configured --with-thrift)" in err.message
    assert "no P4Runtime" not in err.message, "its gRPC server is there"
    assert "--with-pi --with-thrift" in err.hint and "make -C targets/simple_switch_grpc clean" in err.hint


@pytest.mark.skipif(not switch.find_tool("simple_switch"), reason="needs BMv2's simple_switch (no P4Runtime server)")
def test_simple_switch_without_p4runtime_is_refused(monkeypatch):
    binary = switch.find_tool("simple_switch")
    err = refused_start(binary, monkeypatch)
    assert err.message.startswith(f"{binary} (BMv2 1.") and "has no P4Runtime gRPC server" in err.message
    assert "no Thrift" not in err.message, "its Thrift server is there"
    assert "--with-pi" in err.hint


@needs_bmv2
def test_a_switch_that_never_opens_its_thrift_port_is_reported_as_such(monkeypatch):
    """A real switch whose Thrift port a socket of the namespace holds (bound, not listening):
    it never serves Thrift (nor, then, P4Runtime). That is said, with the switch's own words
    and who is in the way, not blamed on load."""
    with namespace("p4t", [Veth("p4a", "p4b")], lo_up=True) as ns:
        with enter_netns(ns.path):
            holder = socket.socket()   # no SO_REUSEADDR: BMv2's bind on the port fails
        try:
            holder.bind(("0.0.0.0", 0))
            port = holder.getsockname()[1]
            monkeypatch.setattr(switch, "_free_port", lambda netns: port)
            scope = current()
            with pytest.raises(TargetError) as exc:
                switch.start(scope, ns.name, ["p4a"], netns=ns.path, timeout=8)
        finally:
            holder.close()
        assert exc.value.message.startswith(f"the BMv2 switch of {ns.name} never opened its Thrift port {port}")
        assert "Could not bind" in exc.value.message, "the switch's log says why"
        assert f"another process holds port {port}" in exc.value.hint and "overloaded" not in exc.value.hint
        assert switch.info(scope, ns.name) is None and not switch.state_dir(scope, ns.name).exists()
