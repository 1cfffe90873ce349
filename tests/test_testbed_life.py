"""`innet up` as real use treats it: SIGTERM, a closed stdin, kill -9 at a sweep of points, two
testbeds at once in two scopes, a second testbed refused in one scope."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from controller.scope import Scope
from controller.store import Store
from controller.topology import load_topology
from testbed.leftovers import leftovers

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parent.parent
TOPO = load_topology("linear")


def up(scope: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "--scope", scope, "up", "linear"], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_up(proc: subprocess.Popen) -> None:
    said = []
    for line in proc.stdout:
        if " is up in scope " in line:
            return
        said.append(line)
    raise AssertionError(f"innet up ended without coming up (exit {proc.wait()}):\n{''.join(said)}")


def innet(scope: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "--scope", scope, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def host_pids(scope: Scope) -> dict[str, int]:
    return {n.name: int(n.netns.split("/")[2]) for n in Store(scope.db_path).nodes() if n.netns}


def ping(pid: int, address: str) -> bool:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ping", "-c", "1", "-W", "2", address],
                          capture_output=True).returncode == 0


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def new_scope() -> Scope:
    return Scope(f"tb-{uuid.uuid4().hex[:8]}")


def test_sigterm_tears_down_and_a_closed_stdin_does_not():
    scope = new_scope()
    proc = up(scope.name)
    try:
        wait_up(proc)
        pids = host_pids(scope)
        time.sleep(1.0)
        assert proc.poll() is None, "innet up must stay up when stdin is not a terminal"
        h2 = TOPO.nodes["h2"].interfaces[0].ipv4.ip
        assert ping(pids["h1"], str(h2))
        stop(proc)
        assert leftovers(TOPO, scope, pids) == []
    finally:
        proc.kill()
        scope.drop()


def test_two_testbeds_at_once_and_a_second_in_one_scope_is_refused():
    a, b = new_scope(), new_scope()
    first, second = up(a.name), up(b.name)
    try:
        wait_up(first)
        wait_up(second)
        pids_a, pids_b = host_pids(a), host_pids(b)
        assert set(pids_a.values()).isdisjoint(pids_b.values())
        refused = innet(a.name, "up", "linear")
        assert refused.returncode == 1 and f"scope '{a.name}' already runs testbed linear" in refused.stderr
        assert "Traceback" not in refused.stderr
        h2 = str(TOPO.nodes["h2"].interfaces[0].ipv4.ip)
        for scope, pids in ((a, pids_a), (b, pids_b)):
            status = json.loads(innet(scope.name, "status", "--json").stdout)
            assert status["testbed_running"] and {n["name"] for n in status["nodes"]} == {"h1", "r1", "h2"}
            assert all(i["health"] == "ok" for n in status["nodes"] for i in n["instances"])
            assert ping(pids["h1"], h2)
        stop(first)
        assert leftovers(TOPO, a, pids_a) == []
        assert ping(pids_b["h1"], h2), "stopping one testbed must leave the other running"
        stop(second)
        assert leftovers(TOPO, b, pids_b) == []
    finally:
        first.kill()
        second.kill()
        a.drop()
        b.drop()


@pytest.mark.parametrize("seconds", [0.6, 1.2, 1.8, 3.0])
def test_kill_9_during_up_then_one_command_clears_it(seconds):
    scope = new_scope()
    proc = up(scope.name)
    try:
        time.sleep(seconds)
        pids = host_pids(scope)
        proc.kill()
        proc.wait()
        status = innet(scope.name, "status", "--json")
        assert status.returncode == 0, status.stderr
        time.sleep(1.0)   # Mininet shells not yet recorded when it died end on their own, at EOF of their stdin
        state = json.loads(status.stdout)
        assert state["testbed"] is None and state["nodes"] == [] and state["pending_operations"] == []
        assert leftovers(TOPO, scope, pids) == []
        again = up(scope.name)   # and the scope takes a new testbed
        wait_up(again)
        stop(again)
    finally:
        proc.kill()
        scope.drop()
