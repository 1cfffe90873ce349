"""Routes go to the kernel FIB only on nodes that have a kernel slow path."""
import dataclasses
import subprocess

import pytest

from controller.routes import RouteService

pytestmark = pytest.mark.needs_root
GW_MAC = "02:00:00:aa:bb:cc"


def kernel_state(name: str) -> str:
    ns = f"--net=/var/run/netns/{name}"
    return subprocess.run(["nsenter", ns, "sh", "-c", "ip route show; ip neigh show"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("slow_path", [True, False])
def test_kernel_fib_follows_the_nodes_slow_path(veth_node, slow_path):
    ctl, name = veth_node
    ctl.add_node(dataclasses.replace(ctl.node(name), kernel_slow_path=slow_path))   # node state lives in the store
    assert ctl.node(name).kernel_slow_path == slow_path
    ctl.deploy(name, "nfrouter", ["va"])
    routes = RouteService(ctl)
    routes.add(name, "10.9.0.0/16", "va", GW_MAC, via="192.0.2.2")
    assert [(r.prefix, r.via, r.mac) for r in routes.list(name)] == [("10.9.0.0/16", "192.0.2.2", GW_MAC)]
    state = kernel_state(name)
    assert ("10.9.0.0/16 via 192.0.2.2" in state) == slow_path
    assert (f"192.0.2.2 dev va lladdr {GW_MAC} PERMANENT" in state) == slow_path
    assert routes.delete(name, "10.9.0.0/16")
    assert routes.list(name) == []
    assert "10.9.0.0/16" not in kernel_state(name)
