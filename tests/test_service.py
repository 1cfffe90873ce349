"""The service layer under what real use throws at it: kill -9 at a sweep of points, concurrent
writers, failed replaces, own-address routes, redeploys with changed parameters.

Each test works in a scope of its own (controller.scope) on a throwaway namespace: a router
node `va`/`vc` with its peers in a second namespace. Killed operations run in a forked child
(imports done, so the kill lands inside the operation); the next ordinary command is a real
`innet` process, which must leave the data plane equal to the desired state."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from controller.errors import EntryError, TargetError
from controller.node import Node
from controller.routes import Route, RouteService, route_entry
from controller.scope import Scope
from controller.service import Controller
from testbed.scratch import Veth, namespace

pytestmark = pytest.mark.needs_root
REPO = Path(__file__).resolve().parent.parent
PEER_MAC = "02:00:00:aa:00:02"


def innet(scope: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "testbed.cli", "--scope", scope, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"innet {' '.join(args)} failed: {proc.stderr}")
    return proc


def xdp_attached(netns: str) -> dict[str, int]:
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"]: link["xdp"]["prog"]["id"] for link in json.loads(out) if "xdp" in link}


def pinned_programs(root: Path) -> set[int]:
    ids = set()
    for pin in root.rglob("prog") if root.exists() else ():
        out = subprocess.run(["bpftool", "-j", "prog", "show", "pinned", str(pin)], capture_output=True, text=True)
        if out.returncode == 0:
            ids.add(json.loads(out.stdout)["id"])
    return ids


class Router:
    """A router node in its own scope: va (192.0.2.1/24) and vc (198.51.100.1/24), peers apart."""

    def __init__(self, ns):
        self.ns, self.name = ns, ns.name
        self.scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
        self.ctl = Controller(self.scope)
        self.ctl.add_node(Node(ns.name, ns.path))
        self.routes = RouteService(self.ctl)

    def converged(self) -> None:
        """The data plane equals the desired state, and nothing innet loaded is left outside it."""
        ctl = Controller(self.scope)
        status = ctl.status()
        assert status["pending_operations"] == []
        (node,) = [n for n in status["nodes"] if n["name"] == self.name]
        assert [(i["id"], i["health"]) for i in node["instances"]] == [(i.id, "ok") for i in ctl.instances(self.name)]
        listed = RouteService(ctl).list(self.name) if ctl.store.instance(self.name, "nfrouter") else []
        assert [r.prefix for r in listed if not (r.fast_path and r.kernel)] == []
        assert {r.prefix for r in listed} == {r.prefix for r in ctl.store.routes(self.name)}
        pinned = pinned_programs(self.scope.pin_root / self.name)
        assert len(pinned) == len([i for i in ctl.instances(self.name) if i.target == "xdp"])
        assert set(xdp_attached(self.ns.path).values()) <= pinned

    def close(self) -> None:
        ctl = Controller(self.scope)
        ctl.recover()
        ctl.forget_node(self.name)
        assert not (self.scope.pin_root / self.name).exists() or not any((self.scope.pin_root / self.name).iterdir())
        if (self.scope.pin_root / self.name).exists():
            (self.scope.pin_root / self.name).rmdir()
        self.scope.drop()


@pytest.fixture
def router():
    with namespace("svc", [Veth("va", "vb", "192.0.2.1/24", "192.0.2.2/24"),
                           Veth("vc", "vd", "198.51.100.1/24", "198.51.100.2/24")], peers_apart=True) as ns:
        r = Router(ns)
        yield r
        r.close()
        # a program outlives its loader only pinned (the pin root is gone: close checked) or attached
        assert xdp_attached(ns.path) == {}, "XDP programs left attached"


def batch(count: int, first: int = 0) -> list[Route]:
    return [Route(f"10.{(i >> 8) & 255}.{i & 255}.0/24", "vc", PEER_MAC, "198.51.100.2")
            for i in range(first, first + count)]


# ---- kill -9 at a sweep of points ----------------------------------------------------------
def _run_killed(scope: Scope, work, at: float) -> bool:
    """Run `work(controller)` in a forked child and SIGKILL it `at` seconds in; True if it was
    killed before finishing."""
    ctx = multiprocessing.get_context("fork")

    def child():
        work(Controller(scope))

    proc = ctx.Process(target=child)
    proc.start()
    time.sleep(at)
    killed = proc.exitcode is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    return killed


def _duration(scope: Scope, work) -> float:
    """How long `work(controller)` takes in a forked child, from its start to its end: timed as
    _run_killed runs it, fork and all."""
    proc = multiprocessing.get_context("fork").Process(target=lambda: work(Controller(scope)))
    started = time.perf_counter()
    proc.start()
    proc.join()
    assert proc.exitcode == 0, f"the timed run failed (exit {proc.exitcode})"
    return time.perf_counter() - started


OPERATIONS = {
    "deploy": (lambda ctl, name: ctl.remove(name, "nfrouter"),
               lambda ctl, name: ctl.deploy(name, "nfrouter", ["va", "vc"])),
    "remove": (lambda ctl, name: ctl.deploy(name, "nfrouter", ["va", "vc"]),
               lambda ctl, name: ctl.remove(name, "nfrouter")),
    "bulk routes": (lambda ctl, name: RouteService(ctl).delete_many(name, [r.prefix for r in batch(3000)]),
                    lambda ctl, name: RouteService(ctl).add_many(name, batch(3000))),
    "redeploy with new parameters": (lambda ctl, name: ctl.deploy(name, "nfrouter", ["va", "vc"], {"max_routes": 8192}),
                                     lambda ctl, name: ctl.deploy(name, "nfrouter", ["va", "vc"],
                                                                  {"max_routes": 4096})),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_kill_9_at_any_point_then_one_command_converges(router, operation):
    undo, do = OPERATIONS[operation]
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"], {"max_routes": 8192})
    router.routes.add_many(router.name, batch(40, first=4000))
    duration = _duration(router.scope, lambda ctl: do(ctl, router.name))
    interrupted = 0
    for step in range(10):
        _duration(router.scope, lambda ctl: undo(ctl, router.name))
        interrupted += _run_killed(router.scope, lambda ctl: do(ctl, router.name), duration * step / 9)
        status = innet(router.scope.name, "status", "--json")   # one ordinary command
        assert json.loads(status.stdout)["pending_operations"] == []
        router.converged()
    assert interrupted >= 5, f"only {interrupted} of 10 kills landed inside the operation"


def test_a_live_writer_is_waited_for_not_recovered(router):
    """Recovery only takes operations whose process died: a slow live writer keeps its own."""
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    with router.ctl._writer():
        proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "--scope", router.scope.name, "routes", "add",
                                 router.name, "10.77.0.0/16", "--via", "198.51.100.2", "--dev", "vc", "--mac",
                                 PEER_MAC], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None   # waiting for the writer lock
    assert proc.wait(timeout=60) == 0
    assert [r.prefix for r in router.routes.list(router.name)] == ["10.77.0.0/16"]


# ---- concurrent writers -------------------------------------------------------------------------
def test_four_writer_processes_lose_nothing_and_share_no_counter_slot(router, tmp_path):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"], {"max_routes": 4096})
    files = []
    for w in range(4):
        path = tmp_path / f"routes{w}.txt"
        path.write_text("".join(f"{r.prefix} via {r.via} dev {r.interface} mac {r.mac}\n"
                                for r in batch(500, first=w * 500)))
        files.append(path)
    procs = [subprocess.Popen([sys.executable, "-m", "testbed.cli", "--scope", router.scope.name, "routes", "add",
                               router.name, "--file", str(f)], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for f in files]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
    listed = router.routes.list(router.name)
    assert sorted(r.prefix for r in listed) == sorted(r.prefix for r in batch(2000))
    assert all(r.fast_path and r.kernel for r in listed)
    slots = router.ctl.records.slots(router.name, "nfrouter", "route_stats")
    assert len(slots) == 2000 and len(set(slots.values())) == 2000
    router.converged()


# ---- routes done right ------------------------------------------------------------------------
def kernel_state(netns: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "sh", "-c", "ip route show; ip neigh show"],
                          capture_output=True, text=True, check=True).stdout


def test_a_refused_replace_leaves_the_old_route_in_both_paths(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    router.routes.add(router.name, "10.9.0.0/16", "vc", PEER_MAC, via="198.51.100.2")
    with pytest.raises(TargetError, match="10.9.0.0/16"):   # the gateway is on no connected subnet
        router.routes.add(router.name, "10.9.0.0/16", "va", "02:00:00:aa:00:09", via="203.0.113.9")
    (route,) = router.routes.list(router.name)
    assert (route.interface, route.via, route.mac, route.fast_path, route.kernel) == \
        ("vc", "198.51.100.2", PEER_MAC, True, True)
    state = kernel_state(router.ns.path)
    assert "10.9.0.0/16 via 198.51.100.2 dev vc" in state and "203.0.113.9" not in state
    router.converged()


def test_a_route_over_the_nodes_own_address_is_refused(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    with pytest.raises(EntryError, match="own address"):
        router.routes.add(router.name, "10.9.0.0/16", "vc", PEER_MAC, via="198.51.100.1")
    with pytest.raises(EntryError, match="own address"):
        router.routes.add(router.name, "192.0.2.1/32", "va", PEER_MAC)
    assert router.routes.list(router.name) == []
    assert "10.9.0.0" not in kernel_state(router.ns.path)


def test_neighbours_go_with_their_last_route(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    router.routes.add_many(router.name, batch(2))
    assert router.routes.delete(router.name, batch(2)[0].prefix)
    assert f"198.51.100.2 dev vc lladdr {PEER_MAC} PERMANENT" in kernel_state(router.ns.path)
    assert router.routes.delete(router.name, batch(2)[1].prefix)
    assert "198.51.100.2 dev vc lladdr" not in kernel_state(router.ns.path)


def test_redeploy_with_changed_parameters_keeps_routes_and_counters_right(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"], {"max_routes": 64})
    router.routes.add_many(router.name, batch(50))
    with pytest.raises(Exception, match="slot|full|max_routes|size"):
        router.routes.add_many(router.name, batch(20, first=100))   # 70 > 64: all or none
    assert len(router.routes.list(router.name)) == 50
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"], {"max_routes": 128})
    router.routes.add_many(router.name, batch(20, first=100))
    listed = router.routes.list(router.name)
    assert len(listed) == 70 and all(r.fast_path and r.kernel and r.packets == 0 for r in listed)
    slots = router.ctl.records.slots(router.name, "nfrouter", "route_stats")
    assert len(set(slots.values())) == 70 and max(slots.values()) < 128
    assert router.ctl.instance(router.name, "nfrouter").params["max_routes"] == 128
    router.converged()


def test_two_instances_of_one_nf_on_one_node(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    router.ctl.deploy(router.name, "cms", ["va", "vc"], instance="cms-a")
    router.ctl.deploy(router.name, "cms", ["va", "vc"], {"columns": 1024}, instance="cms-b")
    assert [i.id for i in router.ctl.instances(router.name)] == ["nfrouter", "cms-a", "cms-b"]
    router.converged()
    assert router.ctl.remove(router.name, "cms-a")
    assert [i.id for i in router.ctl.instances(router.name)] == ["nfrouter", "cms-b"]
    router.converged()


def test_routes_list_says_what_each_path_holds_when_they_differ(router):
    router.ctl.deploy(router.name, "nfrouter", ["va", "vc"])
    router.routes.add_many(router.name, batch(2))
    first, second = (r.prefix for r in batch(2))
    subprocess.run(["nsenter", f"--net={router.ns.path}", "ip", "route", "del", first], check=True)
    router.ctl.plane(router.name).delete("nfrouter", [route_entry(Route(second, local=True), {})])
    listed = {r.prefix: r for r in router.routes.list(router.name)}
    assert (listed[first].fast_path, listed[first].kernel, listed[first].kernel_holds) == (True, False, "nothing")
    assert (listed[second].fast_path, listed[second].fast_path_holds, listed[second].kernel) == (False, "nothing", True)
    cli = innet(router.scope.name, "routes", "list", router.name)
    assert "kernel FIB holds nothing" in cli.stdout and "fast path holds nothing" in cli.stdout
    report = router.ctl.reconcile()
    assert report == [f"{router.name}: nfrouter: 1 table entries brought to the desired state",
                      f"{router.name}: kernel FIB: 1 routes brought to the desired state"]
    router.converged()


def test_a_database_of_schema_version_1_is_brought_up_to_date(tmp_path):
    import sqlite3

    from controller.store import SCHEMA_VERSION, Store
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE instances (node TEXT NOT NULL, id TEXT NOT NULL, nf TEXT NOT NULL, "
                      "target TEXT NOT NULL, interfaces TEXT NOT NULL, params TEXT NOT NULL, source TEXT, "
                      "created REAL NOT NULL, PRIMARY KEY (node, id));"
                      "INSERT INTO instances VALUES ('r1', 'cms', 'cms', 'xdp', '[\"r1-eth0\"]', '{}', NULL, 0);"
                      "PRAGMA user_version = 1;")
    old.close()
    store = Store(path)
    (row,) = store.instances("r1")
    assert (row.id, row.interfaces, row.behind) == ("cms", ("r1-eth0",), None)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.put_instance(dataclasses.replace(row, id="cms-b", behind=("sff", 2)))
    assert [(i.id, i.behind) for i in store.instances("r1")] == [("cms", None), ("cms-b", ("sff", 2))]
