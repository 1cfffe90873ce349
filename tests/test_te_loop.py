"""The closed loop: elephants with hysteresis, demand estimates, and on a real diamond in
Mininet: two TCP flows on one path, one moved, throughput near doubled; a UDP probe moved
without loss; overrides that survive a kill between steps and go with `te clear`."""
import pytest

from controller.stats import Flow as FlowKey
from controller.store import PathOverrideRow
from controller.te.elephants import ElephantPolicy, ElephantTracker, estimate_demands, parse_threshold
from controller.te.errors import TeError
from controller.te.live import PinEntry, flow_key, parse_flow_key
from controller.te.loop import Monitor, PathLoop, clear_overrides

A = FlowKey.of("10.0.1.2", "10.0.6.2", 40001, 5201, 6)
B = FlowKey.of("10.0.1.2", "10.0.6.2", 40002, 5202, 6)


# ---- elephants ---------------------------------------------------------------------------------
def test_a_flow_joins_at_the_threshold_and_leaves_only_after_hold_quiet_epochs():
    tracker = ElephantTracker(ElephantPolicy(share=0.1, leave_ratio=0.5, hold=2))
    limits = {A: 10.0, B: 10.0}
    assert tracker.update({A: 9.9, B: 10.0}, limits) == ({B}, set())
    assert tracker.elephants == [B]
    assert tracker.update({A: 12.0, B: 6.0}, limits) == ({A}, set())     # B above half its threshold: stays
    assert tracker.update({A: 12.0, B: 4.0}, limits) == (set(), set())   # one quiet epoch
    assert tracker.update({A: 12.0, B: 6.0}, limits) == (set(), set())   # loud again: the count restarts
    tracker.update({A: 12.0}, limits)
    assert tracker.update({A: 12.0}, limits) == (set(), {B})
    assert tracker.elephants == [A]


def test_elephants_are_listed_longest_standing_first():
    tracker = ElephantTracker(ElephantPolicy(mbps=1.0, share=None))
    tracker.update({B: 5.0}, {B: 1.0})
    tracker.update({A: 5.0, B: 5.0}, {A: 1.0, B: 1.0})
    assert tracker.elephants == [B, A]


def test_a_network_limited_elephant_wants_its_bottleneck_and_one_with_room_its_rate():
    capacity = {0: 100.0, 1: 100.0, 2: 100.0}.__getitem__
    rates = {A: 48.0, B: 47.0}
    shared = estimate_demands(rates, {A: [0], B: [0]}, capacity, {A: 100.0, B: 100.0})
    assert shared == {A: 100.0, B: 100.0}
    apart = estimate_demands({A: 30.0, B: 20.0}, {A: [1], B: [2]}, capacity, {A: 100.0, B: 100.0})
    assert apart == {A: 30.0, B: 20.0}


@pytest.mark.parametrize("text, mbps, share", [("10%", None, 0.1), ("20mbit", 20.0, None), ("1gbit", 1000.0, None),
                                               ("500kbit", 0.5, None), ("7.5", 7.5, None)])
def test_thresholds_parse(text, mbps, share):
    policy = parse_threshold(text)
    assert (policy.mbps, policy.share) == (mbps, share)


@pytest.mark.parametrize("text, message", [("fast", "neither a share"), ("0%", "share must lie in"),
                                           ("-3mbit", "positive rate"), ("150%", "share must lie in")])
def test_bad_thresholds_are_refused_by_name(text, message):
    with pytest.raises(TeError, match=message):
        parse_threshold(text)


def test_flow_keys_round_trip():
    v6 = FlowKey.of("2001:db8::1", "2001:db8::2", 1, 2, 17)
    for flow in (A, v6):
        assert parse_flow_key(flow_key(flow)) == flow


# ---- on a diamond in Mininet -------------------------------------------------------------------
@pytest.fixture(scope="module", params=["xdp", "bmv2"])
def diamond(request):
    """diamond with 100 Mbit/s links on XDP; on BMv2, which forwards less than that here, 10."""
    from controller.p4 import switch
    from controller.topology import load_topology
    from testbed.net import Testbed
    from testbed.te_demo import BMV2_BW_MBPS

    topo = load_topology("diamond")
    if request.param == "bmv2":
        if switch.unavailable():
            pytest.skip(switch.unavailable())
        topo = topo.retarget("bmv2")
        for link in topo.links:
            link.bw = BMV2_BW_MBPS if link.bw else None
    tb = Testbed(topo, progress=lambda msg: None).start()
    yield tb
    tb.stop()


def link_mbps(tb) -> float:
    return next(link.bw for link in tb.topo.links if link.bw)


@pytest.mark.testbed
def test_the_loop_refuses_a_testbed_without_heavy_hitter_nfs_and_unknown_monitors(diamond):
    ctl = diamond.controller
    with pytest.raises(TeError, match="no heavy-hitter NF runs on a router"):
        PathLoop(ctl)
    with pytest.raises(Exception, match="r9"):
        PathLoop(ctl, [Monitor("r9", "cms")])


@pytest.mark.testbed
def test_routed_paths_follow_the_desired_routes_and_pins_hold_every_router_hop(diamond):
    from controller.te.live import LiveNetwork
    from controller.topology import parse_topology

    ctl = diamond.controller
    testbed = ctl.store.testbed()
    live = LiveNetwork(parse_topology(testbed["doc"], testbed["topology"]), ctl.store)
    assert live.default_path(A) == ("h1", "r1", "r2", "r4", "h2")
    assert live.default_path(FlowKey.of("10.0.6.2", "10.0.1.2", 1, 2, 6))[0] == "h2"
    assert live.default_path(FlowKey.of("192.0.2.1", "10.0.6.2", 1, 2, 6)) is None   # not a testbed host
    pins = live.pin_entries(A, ("h1", "r1", "r3", "r4", "h2"))
    assert [p.node for p in pins] == ["r1", "r3", "r4"]
    assert pins[0].entry.params["egress_port"] == "r1-eth2"
    assert live.bottleneck(("h1", "r1", "r3", "r4", "h2")) == link_mbps(diamond)


@pytest.mark.testbed
def test_two_tcp_flows_on_one_path_one_is_moved_and_throughput_nearly_doubles(diamond):
    from testbed.te_demo import run_tcp_flows

    run = run_tcp_flows(diamond, "h1", "h2", 2, seconds=7, observe_s=2.0, progress=lambda line: None)
    tcp_moves = [m for m in run.moves if m["to"]]
    assert len(tcp_moves) == 1, run.moves
    assert tcp_moves[0]["from"][1:-1] != tcp_moves[0]["to"][1:-1]
    assert run.onset_to_override_s < 1.0
    assert run.before_mbps < 1.1 * link_mbps(diamond)   # one path shared
    assert run.after_mbps > 1.6 * run.before_mbps, (run.before_mbps, run.after_mbps)


@pytest.mark.testbed
def test_overrides_go_once_their_flows_end(diamond):
    """The pair's loop ran on for a few epochs after its flows ended: they left the elephants,
    and their overrides went with them, entries and all."""
    from controller.api.resources import Resources

    ctl = diamond.controller
    assert not ctl.store.path_overrides()
    assert not [e for r in ("r1", "r2", "r3", "r4") for e in ctl.read(r, "nfrouter", "flow_routes")]
    status = Resources(ctl).te_status(50)   # what GET /paths and innet te status show
    moves = [m for d in status.decisions for m in d.moves]
    assert [m["to"] for m in moves] == [None, ["h1", "r1", "r3", "r4", "h2"]]   # newest first
    assert any(d.decision_ms is not None and d.decision_ms < 100 for d in status.decisions if d.moves)


@pytest.mark.testbed
def test_a_remapped_udp_probe_loses_nothing_after_its_move(diamond):
    from testbed.te_demo import probe_pps, run_probe

    run = run_probe(diamond, "h1", "h2", seconds=7, pps=probe_pps(diamond, "h1", "h2"), progress=lambda line: None)
    assert run.moves, "the probe was not moved"
    assert run.onset_to_override_s < 1.0
    assert run.lost_after_move == 0
    assert run.duplicates == 0
    assert run.received >= run.sent - run.lost_before_move
    assert not diamond.controller.store.path_overrides()


@pytest.mark.testbed
def test_a_move_cut_short_by_a_kill_is_completed_on_the_next_start(diamond):
    """The state a kill -9 leaves between writing the new path's entries and removing the old
    one's: the row names both; resume() writes the new and removes the old."""
    ctl = diamond.controller
    testbed = ctl.store.testbed()
    from controller.te.live import LiveNetwork
    from controller.topology import parse_topology

    live = LiveNetwork(parse_topology(testbed["doc"], testbed["topology"]), ctl.store)
    old = live.pin_entries(A, ("h1", "r1", "r2", "r4", "h2"))
    new = live.pin_entries(A, ("h1", "r1", "r3", "r4", "h2"))
    for pin in old:
        ctl.write(pin.node, "nfrouter", [pin.entry])
    ctl.write(new[-1].node, "nfrouter", [new[-1].entry])   # the kill came after the last router's entry
    retiring = [p for p in old if not any(p.same_key(n) for n in new)]
    ctl.store.put_path_override(PathOverrideRow(flow_key(A), ("h1", "r1", "r3", "r4", "h2"),
                                                [p.as_doc() for p in new], [p.as_doc() for p in retiring], 0.0))
    ctl.deploy("r1", "cms", ["r1-eth0"])
    try:
        loop = PathLoop(ctl, [Monitor("r1", "cms")])
        done = loop.start()
        loop.close()
        assert done == [f"completed the move of {flow_key(A)} to h1>r1>r3>r4>h2"]
        held = {(r, PinEntry(r, e).entry.params["egress_port"]) for r in ("r1", "r2", "r3", "r4")
                for e in ctl.read(r, "nfrouter", "flow_routes")}
        assert held == {("r1", "r1-eth2"), ("r3", "r3-eth1"), ("r4", "r4-eth2")}
        assert ctl.store.path_overrides()[flow_key(A)].retiring == []
        assert clear_overrides(ctl) == [flow_key(A)]
        assert not [e for r in ("r1", "r2", "r3", "r4") for e in ctl.read(r, "nfrouter", "flow_routes")]
    finally:
        ctl.remove("r1", "cms")

