import os
import re
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pytest

# The suite works in a scope of its own, so a testbed running beside it (scope 'default', or
# any other) and the suite never see each other's state. Set before controller modules load.
os.environ["INNET_SCOPE"] = os.environ.get("INNET_TEST_SCOPE", f"pytest-{uuid.uuid4().hex[:8]}")

from controller.node import Node  # noqa: E402
from controller.scope import current  # noqa: E402
from controller.service import Controller  # noqa: E402
from testbed.scratch import Veth, namespace  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: XDP, bpffs and network namespaces")
        for item in items:
            if "needs_root" in item.keywords or "testbed" in item.keywords:
                item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """The suite's scope goes with it (each test removes what it deployed)."""
    current().drop()


# ---- the BMv2 half of the suite, counted at the end: a green run that skipped it shows as such ----
BMV2_OUTCOMES: dict[str, str] = {}   # nodeid -> passed, failed or skipped, for tests that involve BMv2
BMV2_SKIPS: Counter = Counter()      # why BMv2 tests skipped
# a switch of this session (its scope, or a scope named after it) in a process's command line
SESSION_SWITCH = re.compile(rb"simple_switch_grpc\0.*/" + re.escape(os.environ["INNET_SCOPE"].encode())
                            + rb"[^/]*/bmv2/")


def _session_switch_runs() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if SESSION_SWITCH.search(cmdline.read_bytes()):
                return True
        except OSError:
            continue
    return False


def pytest_runtest_logreport(report):
    """A test involves BMv2 if its id says so (file, name, parameter), if it skipped for want of
    BMv2 or p4c, or if a switch of this session ran while it did (a module's testbed)."""
    if report.when != "call" and report.passed:
        return
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
    if ("bmv2" in report.nodeid.lower() or any(w in reason.lower() for w in ("bmv2", "simple_switch", "p4c"))
            or (report.when == "call" and _session_switch_runs())):
        BMV2_OUTCOMES[report.nodeid] = report.outcome
        if report.skipped:
            BMV2_SKIPS[reason.removeprefix("Skipped: ")] += 1


def pytest_terminal_summary(terminalreporter):
    counts = Counter(BMV2_OUTCOMES.values())
    ran = counts["passed"] + counts["failed"]
    terminalreporter.write_sep("-", f"BMv2: {ran} tests ran ({counts['passed']} passed, {counts['failed']} failed), "
                                    f"{counts['skipped']} skipped")
    for reason, n in BMV2_SKIPS.most_common(5):
        terminalreporter.write_line(f"  {n} skipped: {reason[:200]}")


@pytest.fixture(scope="module")
def private_state_dirs():
    """The module's scopes keep their databases and run directories in a temporary directory of
    their own (short paths: BMv2's unix sockets live under the run directory)."""
    with tempfile.TemporaryDirectory(prefix="innet-t") as root, pytest.MonkeyPatch.context() as env:
        env.setenv("INNET_HOME", f"{root}/home")
        env.setenv("INNET_RUN", f"{root}/run")
        yield


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


@pytest.fixture(scope="module")
def line3():
    """line3 in Mininet, in a scope of its own (which a module's `innet api` process can serve),
    dropped with it. A module may define its own line3 instead."""
    from controller.scope import Scope
    from controller.topology import load_topology
    from testbed.net import Testbed

    scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
    tb = Testbed(load_topology("line3"), Controller(scope), progress=lambda msg: None).start()
    yield tb
    tb.stop()
    scope.drop()


@pytest.fixture
def line():
    """Two XDP routers running service-chain forwarders between two hosts (tests/sffline.py)."""
    from sffline import sff_line

    with sff_line() as t:
        yield t


@pytest.fixture
def veth_node():
    """A bare namespace with one veth pair inside it: a router-to-be for error-path tests."""
    with namespace("innet-t", [Veth("va", "vb", "192.0.2.1/24")]) as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path))
        yield ctl, ns.name
        ctl.forget_node(ns.name)
