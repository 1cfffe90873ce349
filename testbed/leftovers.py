"""What a topology can leave behind: interfaces, pins, state files, processes."""
from __future__ import annotations

import subprocess

from pyroute2 import IPRoute

from controller.targets.xdp import PIN_ROOT, STATE_ROOT
from controller.topology import Topology


def leftovers(topo: Topology) -> list[str]:
    found = []
    with IPRoute() as ipr:
        names = {link.get("ifname") for link in ipr.get_links()}
    found += [f"interface {i.name}" for n in topo.nodes.values() for i in n.interfaces if i.name in names]
    for n in topo.nodes:
        for root in (PIN_ROOT, STATE_ROOT):
            if (root / n).exists():
                found.append(f"{root / n}")
        ps = subprocess.run(["pgrep", "-f", f"mininet:{n}$"], capture_output=True, text=True).stdout.split()
        found += [f"process {pid} (mininet:{n})" for pid in ps]
    return found
