"""What a testbed can leave behind: interfaces, pins, desired or bookkeeping state, processes,
BMv2 switches. Scoped: another scope's testbed, with the same node names, is not ours."""
from __future__ import annotations

import subprocess

from pyroute2 import IPRoute

from controller.scope import Scope
from controller.store import DataplaneRecords, Store
from controller.topology import Topology


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(topo: Topology, scope: Scope, host_pids: dict[str, int] | None = None) -> list[str]:
    """What of `topo`, brought up in `scope` with Mininet host processes `host_pids`, is still there."""
    found = []
    with IPRoute() as ipr:
        names = {link.get("ifname") for link in ipr.get_links()}
    found += [f"interface {i.name}" for n in topo.nodes.values() for i in n.interfaces if i.name in names]
    store = Store(scope.db_path)
    known = {n.name for n in store.nodes()}
    booked = set(DataplaneRecords(store).nodes())
    for n in topo.nodes:
        pins = scope.pin_root / n
        if pins.exists():
            found.append(f"pins {pins}")
        if n in known:
            found.append(f"node {n} in {scope.db_path}")
        if n in booked:
            found.append(f"data-plane records of {n} in {scope.db_path}")
        switch_dir = scope.run_dir / "bmv2" / n
        if switch_dir.exists():
            found.append(f"{switch_dir}")
        pid = (host_pids or {}).get(n)
        if pid and alive(pid):
            found.append(f"process {pid} (mininet:{n})")
    ps = subprocess.run(["pgrep", "-f", f"simple_switch_grpc .*{scope.run_dir}/"], capture_output=True, text=True)
    found += [f"process {pid} (a BMv2 switch of scope {scope.name})" for pid in ps.stdout.split()]
    if store.testbed() is not None:
        found.append(f"testbed record in {scope.db_path}")
    found += [f"service {name} in {scope.db_path}" for name in store.services()]
    return found
