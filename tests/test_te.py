"""controller.te: the twin on hand-computed instances and against a plain reference, candidate
paths, allocators' invariants and quality, generators, the JSON format, and bad input."""
import itertools
import json

import numpy as np
import pytest

from controller.te import Flow, Link, Network, TeError, allocate
from controller.te.allocators import (ALLOCATORS, BEST, BruteForce, SubsetSum, combinations,
                                      run)
from controller.te.generators import (CAPACITY_RANGE, MMWAVE, SUB6, fat_tree, host_pair_flows, iab_topology,
                                      leaf_spine, topology_network)
from controller.te.instance_format import from_document, read_instance, to_document, write_instance
from controller.te.network import Instance
from controller.te.paths import SHORTEST, candidate_paths, instance_for
from controller.te.twin import EFFICIENCY, FAIRNESS, MAX_MIN, MODELS, WATER_FILLING, Objective, Twin
from controller.topology import load_topology


def line(*capacities):
    """Nodes n0 - n1 - ... joined by wired links of the given capacities."""
    nodes = tuple(f"n{i}" for i in range(len(capacities) + 1))
    return Network(nodes, tuple(Link(a, b, c) for a, b, c in zip(nodes, nodes[1:], capacities)))


def on_shortest(network, *flows):
    return instance_for(network, flows, k=1, method=SHORTEST)


def rates(instance, model):
    return Twin(instance, model).rates(np.zeros(len(instance.flows), dtype=int)).tolist()


# ---- the twin on hand-computed instances -------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_a_link_shared_by_two_flows_is_split_evenly(model):
    instance = on_shortest(line(10), Flow("a", "n0", ("n1",), 8), Flow("b", "n0", ("n1",), 8))
    figures = Twin(instance, model).figures(np.array([0, 0]))
    assert figures.rates == (5.0, 5.0)
    assert figures.efficiency == pytest.approx(10 / 16) and figures.fairness == pytest.approx(1.0)


@pytest.mark.parametrize("model", MODELS)
def test_a_flow_below_its_fair_share_leaves_the_rest_to_the_other(model):
    instance = on_shortest(line(10), Flow("small", "n0", ("n1",), 2), Flow("big", "n0", ("n1",), 20))
    assert rates(instance, model) == [2.0, 8.0]


def test_a_bottleneck_frees_capacity_elsewhere_under_max_min_only():
    # n0 -10- n1 -4- n2: the long flow is held to 4 by n1-n2, so the short one gets 10 - 4 on n0-n1;
    # PHaul's per-link water-filling splits n0-n1 5/5 on the original demands and leaves 1 unused
    instance = on_shortest(line(10, 4), Flow("long", "n0", ("n2",), 10), Flow("short", "n0", ("n1",), 10))
    assert rates(instance, MAX_MIN) == [4.0, 6.0]
    assert rates(instance, WATER_FILLING) == [4.0, 5.0]
    assert Twin(instance, MAX_MIN).figures(np.array([0, 0])).efficiency == pytest.approx(0.5)
    assert Twin(instance, WATER_FILLING).figures(np.array([0, 0])).efficiency == pytest.approx(0.45)


def test_links_are_full_duplex():
    network = line(10)
    instance = on_shortest(network, Flow("up", "n0", ("n1",), 10), Flow("down", "n1", ("n0",), 10))
    assert rates(instance, MAX_MIN) == [10.0, 10.0]


def test_phaul_objective_weighs_efficiency_against_fairness():
    instance = on_shortest(line(10, 4), Flow("long", "n0", ("n2",), 10), Flow("short", "n0", ("n1",), 10))
    twin = Twin(instance)
    jain = (4 + 6) ** 2 / (2 * (4 ** 2 + 6 ** 2))
    assert twin.figures(np.array([0, 0])).fairness == pytest.approx(jain)
    assert twin.scores(np.array([0, 0]), Objective(0.0))[0] == pytest.approx(0.5 + jain)
    assert twin.scores(np.array([0, 0]), EFFICIENCY)[0] == pytest.approx(2 * 0.5)
    assert twin.scores(np.array([0, 0]), FAIRNESS)[0] == pytest.approx(2 * jain)
    with pytest.raises(TeError, match=r"gamma must lie in \[-1, 1\], got 2"):
        Objective(2.0)


def _reference_max_min(capacity, paths, demand):
    rate, active, free = [0.0] * len(demand), set(range(len(demand))), dict(capacity)
    while active:
        crossing = {}
        for f in active:
            for arc in paths[f]:
                crossing[arc] = crossing.get(arc, 0) + 1
        step = min([free[a] / n for a, n in crossing.items()] + [demand[f] - rate[f] for f in active])
        for f in active:
            rate[f] += step
        for a, n in crossing.items():
            free[a] -= step * n
        full = {a for a in crossing if free[a] <= 1e-9 * capacity[a]}
        active = {f for f in active if demand[f] - rate[f] > 1e-9 * demand[f] and not full & paths[f]}
    return rate


def _reference_water_filling(capacity, paths, demand):
    def level(arc):
        wanted = sorted(demand[g] for g in range(len(demand)) if arc in paths[g])
        for j, d in enumerate(wanted):
            if sum(wanted[:j]) + (len(wanted) - j) * d >= capacity[arc]:
                return (capacity[arc] - sum(wanted[:j])) / (len(wanted) - j)
        return np.inf
    return [min([demand[f]] + [level(a) for a in paths[f]]) for f in range(len(demand))]


@pytest.mark.parametrize("model, reference", [(MAX_MIN, _reference_max_min),
                                              (WATER_FILLING, _reference_water_filling)])
def test_batched_twin_matches_a_plain_reference(model, reference):
    rng = np.random.default_rng(5)
    for _ in range(12):
        topology = iab_topology(int(rng.integers(8, 30)), rng)
        instance = topology.instance(topology.flows(0.7, (250, 750), rng), topology.candidates(2))
        twin = Twin(instance, model)
        batch = rng.integers(0, twin.options, size=(4, twin.flows))
        batch[1, rng.random(twin.flows) < 0.5] = -1   # a partial allocation, as subset-sum makes
        got = twin.rates(batch)
        capacity = dict(enumerate(twin.capacity))
        for row, choice in zip(got, batch):
            placed = [f for f in range(twin.flows) if choice[f] >= 0]
            paths = [set(twin.arcs_of(f, choice[f]).tolist()) for f in placed]
            want = reference(capacity, paths, [twin.demand[f] for f in placed])
            assert row[placed] == pytest.approx(want, rel=1e-9, abs=1e-9)
            assert (row[choice < 0] == 0).all()


# ---- candidate paths ---------------------------------------------------------------------------

def test_k_shortest_on_diamond_finds_both_routes():
    network, _ = topology_network(load_topology("diamond"))
    (paths,) = candidate_paths(network, [("h1", ("h2",))], k=3, method=SHORTEST)
    assert [p.nodes for p in paths] == [("h1", "r1", "r2", "r4", "h2"), ("h1", "r1", "r3", "r4", "h2")]


def test_least_common_spreads_two_flows_over_the_diamond():
    network, _ = topology_network(load_topology("diamond"))
    first, second = candidate_paths(network, [("h1", ("h2",)), ("h1", ("h2",))], k=1)
    assert first[0].nodes != second[0].nodes
    same = candidate_paths(network, [("h1", ("h2",)), ("h1", ("h2",))], k=1, method=SHORTEST)
    assert same[0] == same[1]


def test_a_path_ends_at_the_first_destination_it_reaches():
    network = line(5, 5, 5)
    (paths,) = candidate_paths(network, [("n0", ("n1", "n3"))], k=3)
    assert [p.nodes for p in paths] == [("n0", "n1")]


def test_paths_are_per_technology_and_interleaved():
    topology = iab_topology(20, np.random.default_rng(2))
    for paths in topology.candidates(3).values():
        techs = [p.technology for p in paths]
        assert techs[:2] == [MMWAVE, SUB6] and len(paths) <= 6 and len(set(paths)) == len(paths)
        for p in paths:
            assert p.nodes[-1] in topology.donors and not set(p.nodes[:-1]) & set(topology.donors)


# ---- allocators --------------------------------------------------------------------------------

def _instances():
    rng = np.random.default_rng(3)
    topology = iab_topology(20, rng)
    yield topology.instance(topology.flows(0.8, (500, 750), rng), topology.candidates(3))
    fabric = fat_tree(4)
    yield instance_for(fabric.network, host_pair_flows(fabric.hosts, 12, (200, 900), rng), k=4)
    spine = leaf_spine()
    yield instance_for(spine.network, host_pair_flows(spine.hosts, 6, (300, 900), rng), k=2)


@pytest.mark.parametrize("name", [n for n in ALLOCATORS if n != "brute-force"])
@pytest.mark.parametrize("model", MODELS)
def test_allocator_invariants(name, model, tmp_path):
    for i, instance in enumerate(_instances()):
        allocation = run(name, instance, FAIRNESS, model, seed=4)
        assert len(allocation.choice) == len(instance.flows) == len(allocation.paths)
        for flow, paths, c, path in zip(instance.flows, instance.paths, allocation.choice, allocation.paths):
            assert 0 <= c < len(paths) and paths[c] == path
            assert path.nodes[0] == flow.source and path.nodes[-1] in flow.destinations
            instance.network.arcs(path)   # every hop a link
        assert allocation.routes() == {f.name: list(p.nodes) for f, p in zip(instance.flows, allocation.paths)}
        file = tmp_path / f"{name}-{i}.json"
        write_instance(file, instance, allocation.choice)
        again, choice = read_instance(file)
        assert Twin(again, model).figures(choice) == allocation.figures
        assert run(name, instance, FAIRNESS, model, seed=4).choice == allocation.choice   # the seed reproduces it


@pytest.mark.parametrize("objective", [EFFICIENCY, FAIRNESS])
@pytest.mark.parametrize("model", MODELS)
def test_local_search_beats_or_equals_subset_sum(objective, model):
    rng = np.random.default_rng(8)
    gains = []
    for nodes in (20, 40):
        topology = iab_topology(nodes, rng)
        candidates = topology.candidates(3)
        for _ in range(3):
            instance = topology.instance(topology.flows(0.8, (500, 750), rng), candidates)
            best = run(BEST, instance, objective, model).figures.objective(objective)
            greedy = run(SubsetSum(), instance, objective, model).figures.objective(objective)
            assert best >= greedy - 1e-12
            gains.append(best - greedy)
    assert max(gains) > 1e-6, "local search never improved on subset-sum"


@pytest.mark.parametrize("objective", [EFFICIENCY, FAIRNESS])
@pytest.mark.parametrize("model", MODELS)
def test_brute_force_is_optimal_and_local_search_finds_it_on_tiny_instances(objective, model):
    rng = np.random.default_rng(9)
    for _ in range(4):
        topology = iab_topology(9, rng)
        instance = topology.instance(topology.flows(1.0, (500, 750), rng), topology.candidates(2))
        twin = Twin(instance, model)
        every = np.array(list(itertools.product(*(range(n) for n in twin.options))))
        optimum = twin.scores(every, objective).max()
        brute = run("brute-force", instance, objective, model).figures.objective(objective)
        assert brute == pytest.approx(optimum, rel=1e-12)
        assert run(BEST, instance, objective, model).figures.objective(objective) == pytest.approx(optimum)


def test_brute_force_refuses_a_large_instance():
    topology = iab_topology(40, np.random.default_rng(1))
    instance = topology.instance(topology.flows(1.0, (500, 750), np.random.default_rng(1)), topology.candidates(3))
    with pytest.raises(TeError, match=r"brute force over 37 flows would score \d+ allocations, above its limit"):
        run(BruteForce(), instance)
    assert combinations(Twin(instance)) > BruteForce().limit


def test_allocate_moves_one_of_two_flows_off_a_shared_path_on_diamond():
    network, _ = topology_network(load_topology("diamond"))
    flows = [Flow("iperf1", "h1", ("h2",), 80.0), Flow("iperf2", "h1", ("h2",), 80.0)]
    allocation = allocate(network, flows, k=2, method=SHORTEST)
    routes = allocation.routes()
    assert {routes["iperf1"][2], routes["iperf2"][2]} == {"r2", "r3"}
    assert allocation.figures.efficiency == 1.0 and allocation.seconds > 0
    together = run("random", instance_for(network, flows, k=1, method=SHORTEST))
    assert together.figures.efficiency == pytest.approx(100 / 160)


@pytest.mark.parametrize("allocator", [BEST, "milp"])
def test_three_flows_take_the_three_spines_of_leafspine(allocator):
    network, hosts = topology_network(load_topology("leafspine"))
    assert hosts == ("h1", "h2", "h3")
    flows = [Flow(f"f{i}", "h1", ("h3",), 60.0) for i in range(3)]
    allocation = allocate(network, flows, allocator, k=3, method=SHORTEST)
    assert sorted(route[2] for route in allocation.routes().values()) == ["s1", "s2", "s3"]
    assert allocation.figures.efficiency == 1.0


def test_the_milp_carries_the_most_traffic_where_max_min_would_not():
    """On a line a - b - c of 100 Mbit/s links, a 100 Mbit/s flow a -> c and two b -> c flows
    that may also go round through d: max-min on the line gives each 33; the MILP sends the
    b flows round (b - d - c, 100 Mbit/s) and leaves the line to the long flow."""
    network = Network(("a", "b", "c", "d"), (Link("a", "b", 100.0), Link("b", "c", 100.0), Link("b", "d", 100.0),
                                             Link("d", "c", 100.0)))
    flows = [Flow("long", "a", ("c",), 100.0), Flow("short1", "b", ("c",), 50.0), Flow("short2", "b", ("c",), 50.0)]
    allocation = allocate(network, flows, "milp", k=2, method=SHORTEST)
    assert allocation.routes() == {"long": ["a", "b", "c"], "short1": ["b", "d", "c"], "short2": ["b", "d", "c"]}
    assert allocation.figures.efficiency == 1.0


# ---- generators and the JSON format ------------------------------------------------------------

def test_iab_generator_follows_the_model_and_its_seed():
    topology = iab_topology(40, np.random.default_rng(6))
    assert topology.donors == ("d0", "d1", "d2") and len(topology.network.nodes) == 40
    for layer, below in zip(topology.layers[:-2], topology.layers[1:-1]):   # the last layer is cut short
        assert len(layer) <= len(below) <= 3 * len(layer)   # 1 to 3 children each
    for layer, below in zip(topology.layers, topology.layers[1:]):
        for node in below:
            parents = {link.a for link in topology.network.links if link.b == node and link.a in layer}
            assert len(parents) in (1, 2)   # its parent, maybe a cross link to the parent's neighbour
        for link in topology.network.links:
            if link.b in below:
                low, high = CAPACITY_RANGE[link.technology]
                assert low <= link.capacity <= high
    for node in topology.sources:   # a parent link in both technologies
        techs = {link.technology for link in topology.network.links if link.b == node}
        assert techs == {MMWAVE, SUB6}
    again = iab_topology(40, np.random.default_rng(6))
    assert to_document(topology.instance(topology.flows(0.4, (250, 500), np.random.default_rng(1)),
                                          topology.candidates(1))) == \
        to_document(again.instance(again.flows(0.4, (250, 500), np.random.default_rng(1)), again.candidates(1)))
    flows = topology.flows(0.4, (250, 500), np.random.default_rng(2))
    assert all(250 <= f.demand <= 500 and f.destinations == topology.donors for f in flows)
    assert 0 < len(flows) < len(topology.sources)


def test_fat_tree_has_four_equal_paths_between_pods():
    fabric = fat_tree(4)
    assert len(fabric.hosts) == 16 and len(fabric.network.nodes) == 36 and len(fabric.network.links) == 48
    (paths,) = candidate_paths(fabric.network, [("h0_0_0", ("h3_1_1",))], k=8, method=SHORTEST)
    assert [p.hops for p in paths[:5]] == [6, 6, 6, 6, 8]   # (k/2)² shortest paths between pods
    assert len({p.nodes[3] for p in paths[:4]}) == 4          # one through each core


def test_json_round_trip_keeps_every_field():
    instance = next(_instances())
    doc = to_document(instance, [0] * len(instance.flows))
    again, choice = from_document(json.loads(json.dumps(doc)))
    assert to_document(again, choice) == doc and choice.tolist() == [0] * len(instance.flows)
    assert from_document(to_document(instance))[1] is None


# ---- bad input: each a clear one-line message ----------------------------------------------------

def _error(call) -> str:
    with pytest.raises(TeError) as caught:
        call()
    assert "\n" not in caught.value.message
    return caught.value.message


def test_a_flow_with_no_path_is_named():
    network = Network(("a", "b", "c"), (Link("a", "b", 10.0),))
    message = _error(lambda: instance_for(network, [Flow("lost", "a", ("c",), 5.0)], k=2))
    assert message == "no path from a to c in network network (technologies: wired)"
    message = _error(lambda: Instance(network, (Flow("lost", "a", ("c",), 5.0),), ((),)))
    assert message == "flow lost (a -> c) has no candidate path in network network"


@pytest.mark.parametrize("demand", [0, -5.0, float("nan")])
def test_a_demand_that_is_not_positive_is_refused(demand):
    message = _error(lambda: instance_for(line(10), [Flow("f", "n0", ("n1",), demand)], k=1))
    assert message.startswith("flow f (n0 -> n1): demand must be a positive number of Mbit/s, got")


def test_a_topology_without_capacities_is_refused():
    message = _error(lambda: topology_network(load_topology("line3")))
    assert message == "network line3 has no link with a capacity"


@pytest.mark.parametrize("doc, message", [
    ({"format": "other"}, "not an instance document"),
    ({"format": "innet-te-instance", "version": 1, "nodes": ["a", "b"], "links": [{"a": "a", "b": "b",
      "capacity": "fast"}], "flows": []}, r"links\[0\]: capacity must be a number of Mbit/s or null"),
    ({"format": "innet-te-instance", "version": 1, "nodes": ["a", "b"], "links": [{"a": "a", "b": "c",
      "capacity": 5}], "flows": []}, "names unknown node 'c'"),
    ({"format": "innet-te-instance", "version": 1, "nodes": ["a", "b"], "links": [{"a": "a", "b": "b",
      "capacity": 5}], "flows": [{"name": "f", "source": "a", "destinations": ["b"], "demand": 1,
                                  "paths": [{"nodes": ["a", "b"]}], "path": 3}]},
     r"flow f \(a -> b\): path must index one of its 1 candidates"),
    ({"format": "innet-te-instance", "version": 1, "nodes": ["a", "b", "c"], "links": [{"a": "a", "b": "b",
      "capacity": 5}], "flows": [{"name": "f", "source": "a", "destinations": ["c"], "demand": 1,
                                  "paths": [{"nodes": ["a", "b", "c"]}]}]}, "no wired link b - c"),
])
def test_a_bad_instance_document_says_where(doc, message):
    assert pytest.raises(TeError, from_document, doc, "x.json").match(message)


def test_a_bad_allocation_is_refused():
    instance = on_shortest(line(10), Flow("f", "n0", ("n1",), 5.0))
    message = _error(lambda: Twin(instance).rates(np.array([1])))
    assert "picks one of each flow's candidates for 1 flows" in message
    assert _error(lambda: run("magic", instance)) == "unknown allocator 'magic'"
    assert _error(lambda: Twin(instance, "fluid")) == "unknown twin model 'fluid'"
