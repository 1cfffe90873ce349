"""What a topology can leave behind: interfaces, pins, state files, processes, BMv2 switches."""
from __future__ import annotations

import subprocess

from pyroute2 import IPRoute

from controller.p4 import switch
from controller.targets.xdp import PIN_ROOT, STATE_ROOT
from controller.topology import Topology


def leftovers(topo: Topology) -> list[str]:
    found = []
    with IPRoute() as ipr:
        names = {link.get("ifname") for link in ipr.get_links()}
    found += [f"interface {i.name}" for n in topo.nodes.values() for i in n.interfaces if i.name in names]
    for n in topo.nodes:
        for path in (PIN_ROOT / n, STATE_ROOT / n, switch.state_dir(n), switch.STATE_ROOT / f"{n}.sock"):
            if path.exists():
                found.append(f"{path}")
        for pattern, what in ((f"mininet:{n}$", f"mininet:{n}"),
                              (f"{switch.SWITCH_BINARY} .*{switch.STATE_ROOT}/{n}[.]sock", f"BMv2 switch of {n}")):
            ps = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
            found += [f"process {pid} ({what})" for pid in ps]
    return found
