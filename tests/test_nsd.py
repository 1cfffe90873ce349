"""Network service descriptors (controller.nsd): the shipped examples parse to the expected
service, and every malformed descriptor of tests/nsd_corpus/ gets its own one-line error."""
from collections import Counter
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from controller.nsd import (Classifier, NSDError, Service, load_descriptor, parse_bindings, parse_descriptor,
                            resolve_endpoints)
from controller.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
NSDS = REPO / "nsds"
CORPUS = Path(__file__).resolve().parent / "nsd_corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())


def hops(service: Service) -> dict[str, tuple]:
    return {g.name: (g.source, *g.hops, g.destination) for g in service.forwarding_graphs}


def test_ping_demo_runs_both_ways_through_one_implicit_nfrouter():
    service = load_descriptor(NSDS / "ping-demo.json")
    assert (service.name, service.format) == ("Ping demo", "smart-orchestrator")
    assert [(e.name, e.host, e.addresses) for e in service.endpoints] == [("src", None, ()), ("dst", None, ())]
    [router] = service.nf_instances
    assert (router.name, router.nf, router.implicit, router.node, router.target) == \
        ("nfrouter", "nfrouter", True, None, None)
    assert hops(service) == {"to_dst": ("src", "nfrouter", "dst"), "to_src": ("dst", "nfrouter", "src")}
    assert all(g.classifier == Classifier() for g in service.forwarding_graphs), "the endpoints' addresses"
    assert [g.delay_budget_ms for g in service.forwarding_graphs] == [5.0, 5.0]
    assert service.delay_budget_ms == 5.0


def test_lnsd_example_chains_three_nfs_on_bmv2():
    service = load_descriptor(NSDS / "heavy-hitters-lnsd.yaml")
    assert (service.name, service.format) == ("Heavy-hitter watch", "desire6g-lnsd")
    assert [(e.name, e.host, e.is_ue) for e in service.endpoints] == [("pkt-src", "h1", True), ("pkt-dst", "h2", False)]
    assert [(n.name, n.nf, n.target, n.parameters) for n in service.nf_instances] == [
        ("sketch", "cms", "bmv2", {"rows": 4, "columns": 4096}),
        ("hh", "precision", "bmv2", {"stages": 3}),
        ("queues", "prio", "bmv2", {})]
    assert hops(service) == {"upstream": ("pkt-src", "sketch", "hh", "queues", "pkt-dst"),
                             "downstream": ("pkt-dst", "sketch", "pkt-src")}
    assert [g.direction for g in service.forwarding_graphs] == ["upstream", "downstream"]
    assert all(g.classifier == Classifier() for g in service.forwarding_graphs)
    assert [g.delay_budget_ms for g in service.forwarding_graphs] == [10.0, 10.0], "the ns-level budget, per graph"


def test_sol006_example_classifies_iperf3_between_h1_and_h2():
    service = load_descriptor(NSDS / "heavy-hitters-sol006.yaml")
    assert (service.name, service.format) == ("heavy-hitters-ns", "etsi-sol006")
    assert [(e.name, e.addresses) for e in service.endpoints] == [("h1", (ip_address("10.0.1.2"),)),
                                                                  ("h2", (ip_address("10.0.4.2"),))]
    assert [(n.name, n.nf) for n in service.nf_instances] == [("sketch", "cms"), ("hh", "precision"), ("tail", "cms")]
    assert hops(service) == {"h1-to-h2": ("h1", "sketch", "hh", "tail", "h2"), "h2-to-h1": ("h2", "sketch", "h1")}
    there, back = (g.classifier for g in service.forwarding_graphs)
    assert there == Classifier(ip_proto=6, source_address=ip_network("10.0.1.2/32"),
                               destination_address=ip_network("10.0.4.2/32"), destination_port=5201)
    assert back == Classifier(ip_proto=6, source_address=ip_network("10.0.4.2/32"),
                              destination_address=ip_network("10.0.1.2/32"), source_port=5201), "port 0: any"
    assert service.delay_budget_ms is None, "SOL006 carries no end-to-end budget"


def test_the_same_document_as_text_or_mapping():
    text = (NSDS / "heavy-hitters-sol006.yaml").read_text()
    assert parse_descriptor(text) == parse_descriptor(yaml.safe_load(text)) == parse_descriptor(text.encode())


def test_the_corpus_is_large_and_indexed():
    files = {p.name for p in CORPUS.iterdir() if p.name != "expected.yaml"}
    assert files == set(EXPECTED), "every corpus file has an expected error, and every expectation a file"
    per_format = Counter(name.split("-")[0] for name in files)
    assert len(files) >= 40 and all(per_format[f] >= 10 for f in ("so", "lnsd", "sol006")), per_format


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_descriptor_gets_its_own_error(name):
    case = EXPECTED[name] if isinstance(EXPECTED[name], dict) else {"expect": EXPECTED[name]}
    options = {k: v for k, v in case.items() if k != "expect"}
    with pytest.raises(NSDError) as caught:
        load_descriptor(CORPUS / name, **options)
    error = caught.value
    assert case["expect"] in error.message, f"\n  expected: {case['expect']}\n  got:      {error.message}"
    assert error.message.startswith(f"{CORPUS / name}: "), "the file's name first"
    assert "\n" not in error.message and "Traceback" not in str(error), "one line (and a hint), no traceback"


def test_bind_overrides_the_descriptor_and_names_must_exist():
    service = load_descriptor(NSDS / "heavy-hitters-lnsd.yaml", bind=parse_bindings(["pkt-dst=h3"]))
    assert [e.host for e in service.endpoints] == ["h1", "h3"]
    for options, message in ((["src"], "--bind src: expected NAME=HOST"),
                             (["src=h1", "src=h2"], "--bind src=h2: 'src' is already bound to h1")):
        with pytest.raises(NSDError, match=message):
            parse_bindings(options)


def test_resolving_binds_hosts_by_name_and_fills_their_addresses():
    line3 = load_topology("line3")
    service = resolve_endpoints(load_descriptor(NSDS / "ping-demo.json"), line3, {"src": "h1", "dst": "h2"})
    assert [(e.host, [str(a) for a in e.addresses]) for e in service.endpoints] == [
        ("h1", ["10.0.1.2", "2001:db8:0:1::2"]), ("h2", ["10.0.4.2", "2001:db8:0:4::2"])]
    sol006 = resolve_endpoints(load_descriptor(NSDS / "heavy-hitters-sol006.yaml"), line3)
    assert [(e.host, e.addresses) for e in sol006.endpoints] == [("h1", (ip_address("10.0.1.2"),)),
                                                                 ("h2", (ip_address("10.0.4.2"),))]


@pytest.mark.parametrize("descriptor, topology, bind, message", [
    ("ping-demo.json", "line3", {}, "endpoint 'src': binds to no host: topology line3 has no node 'src' "
                                    r"\(hosts: h1, h2\)"),
    ("ping-demo.json", "line3", {"src": "r1", "dst": "h2"}, "endpoint 'src': 'r1' is a router of topology line3"),
    ("ping-demo.json", "line3", {"src": "h1", "dst": "h1"}, "endpoint 'dst': host h1 already carries endpoint 'src'"),
    # the SOL006 example's addresses are line3's: on diamond, h2 is 10.0.6.2
    ("heavy-hitters-sol006.yaml", "diamond", {}, "endpoint 'h2': address 10.0.4.2 is not host h2's"),
])
def test_resolving_refuses_what_the_topology_cannot_carry(descriptor, topology, bind, message):
    with pytest.raises(NSDError, match=message):
        resolve_endpoints(load_descriptor(NSDS / descriptor), load_topology(topology), bind)


@pytest.mark.parametrize("descriptor", ["ping-demo.json", "heavy-hitters-lnsd.yaml", "heavy-hitters-sol006.yaml"])
def test_a_resolved_service_survives_json(descriptor):
    # the desired-state store keeps services as JSON
    service = resolve_endpoints(load_descriptor(NSDS / descriptor), load_topology("line3"),
                                {"src": "h1", "dst": "h2"} if descriptor == "ping-demo.json" else None)
    assert Service.model_validate_json(service.model_dump_json()) == service


def test_nf_map_names_the_catalog_nf_of_a_foreign_vnfd():
    doc = yaml.safe_load((NSDS / "heavy-hitters-sol006.yaml").read_text())
    nsd = doc["nsd"]["nsd"][0]
    nsd["vnfd-id"][nsd["vnfd-id"].index("precision")] = "hh-monitor_vnfd"
    nsd["df"][0]["vnf-profile"][3]["vnfd-id"] = "hh-monitor_vnfd"
    with pytest.raises(NSDError, match="unknown NF type 'hh-monitor_vnfd'"):
        parse_descriptor(doc)
    service = parse_descriptor(doc, nf_map={"hh-monitor_vnfd": "precision"})
    assert service.nf_instances[1].nf == "precision"


@pytest.mark.parametrize("budget, ms", [("5ms", 5.0), ("0.5 ms", 0.5), ("250us", 0.25), ("1s", 1000.0),
                                        ("2MS", 2.0), (7, 7.0)])
def test_delay_budgets_in_milliseconds(budget, ms):
    doc = yaml.safe_load((NSDS / "heavy-hitters-lnsd.yaml").read_text())
    doc["lnsd"]["ns"]["e2e_delay_budget"] = budget
    assert parse_descriptor(doc).delay_budget_ms == pytest.approx(ms)


def test_older_lnsd_generation_with_member_indices_and_per_graph_budget():
    doc = {"lnsd": {"ns": {
        "name": "ARVRDemo",
        "application-functions": [{"af-instance-id": "edge", "af-id": "ar-edge-app", "af-node": "h2"},
                                  {"af-instance-id": "source", "af-id": "ar-source-app", "af-node": "h1"}],
        "forwarding_graphs": [{"member-graph-index": 1, "graph-name": "uplink", "e2e_delay_budget": "25ms",
                               "links": [{"id": "input-1", "connection-points": [
                                   # listed head first: the indices say which end is which
                                   {"member-connection-point-index": 2, "member-if-id-ref": "edge:input"},
                                   {"member-connection-point-index": 1, "member-if-id-ref": "source:output"}]}]}]}}}
    service = parse_descriptor(doc)
    assert [(e.name, e.host) for e in service.endpoints] == [("edge", "h2"), ("source", "h1")]
    assert hops(service) == {"uplink": ("source", "nfrouter", "edge")}
    assert service.forwarding_graphs[0].delay_budget_ms == 25.0


def test_model_built_directly_checks_the_same_rules():
    with pytest.raises(NSDError, match=r"forwarding_graphs\[0\]\.hops\[0\]: unknown NF instance 'x'"):
        Service(name="s", format="etsi-sol006", endpoints=[{"name": "a"}, {"name": "b"}],
                forwarding_graphs=[{"name": "g", "source": "a", "destination": "b", "hops": ["x"]}])
