import os
import subprocess
import uuid

import pytest

from controller.core import Controller
from controller.node import Node
from controller.routes import RouteService


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: XDP, bpffs and network namespaces")
        for item in items:
            if "needs_root" in item.keywords or "testbed" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def linear(request):
    """h1 -- r1 -- h2 in Mininet, NFRouter on r1, routes installed. r1's target is XDP, or the
    one given by indirect parametrisation (`pytest.mark.parametrize("linear", [...], indirect=True)`)."""
    import yaml

    from controller.p4 import switch
    from controller.topology import TOPOLOGY_DIR, parse_topology
    from testbed.net import Testbed

    target = getattr(request, "param", "xdp")
    if target == "bmv2" and switch.unavailable():
        pytest.skip(switch.unavailable())
    doc = yaml.safe_load((TOPOLOGY_DIR / "linear.yaml").read_text())
    doc["nodes"]["r1"]["target"] = target
    tb = Testbed(parse_topology(doc, f"linear (r1 on {target})"), progress=lambda msg: None).start()
    yield tb
    tb.stop()


@pytest.fixture
def veth_node():
    """A bare namespace with one veth pair inside it: a router-to-be for error-path tests."""
    name = f"innet-t{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/var/run/netns/{name}"
    subprocess.run(["nsenter", f"--net={path}", "sh", "-c",
                    "ip link add va type veth peer name vb && ip link set va up && ip link set vb up "
                    "&& ip addr add 192.0.2.1/24 dev va"], check=True)
    ctl = Controller()
    ctl.add_node(Node(name, path))
    yield ctl, name
    for nf in ("nfrouter", "rxcount"):
        ctl.remove(name, nf)
    RouteService(ctl).clear_state(name)
    subprocess.run(["ip", "netns", "del", name], check=True)
