"""The closed loop where there are several equal-cost paths: leafspine (three spines)."""
import pytest


@pytest.fixture(scope="module")
def leafspine():
    from controller.topology import load_topology
    from testbed.net import Testbed

    tb = Testbed(load_topology("leafspine"), progress=lambda msg: None).start()
    yield tb
    tb.stop()


@pytest.mark.testbed
def test_three_flows_on_one_of_three_spines_are_spread_over_all_three(leafspine):
    from testbed.te_demo import run_tcp_flows

    run = run_tcp_flows(leafspine, "h1", "h3", 3, seconds=7, observe_s=2.0, progress=lambda line: None)
    assert len(run.moves) == 2, run.moves
    spines = {m["to"][2] for m in run.moves} | {m["from"][2] for m in run.moves}
    assert spines == {"s1", "s2", "s3"}
    assert run.after_mbps > 2.4 * run.before_mbps, (run.before_mbps, run.after_mbps)
