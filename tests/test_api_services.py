"""/services of the REST API on a real Mininet line3 (XDP routers) in a scope of its own.

nsds/heavy-hitters-sol006.yaml goes in as a YAML body and as a file upload; the answers show
its placement (cms on r1, precision on r2, a second cms on r3), its state desired beside
actual and per-hop counters that move with real frames; a repeat is a no-op; every malformed
descriptor of tests/nsd_corpus answers 422 with the place of its mistake and installs
nothing; DELETE leaves no rule, instance or record. One test drives `innet --api URL service
...` against a real `innet api` process. FastAPI's TestClient drives the app in-process
otherwise, over the testbed's own controller.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controller.api.app import create_app
from controller.service import Controller
from controller.topology import load_topology
from testbed import traffic
from apiserver import running_api

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parent.parent
DESCRIPTOR = REPO / "nsds" / "heavy-hitters-sol006.yaml"
CORPUS = REPO / "tests" / "nsd_corpus"
SERVICE = "heavy-hitters-ns"
TOKEN = "test-token-" + uuid.uuid4().hex
TOPO = load_topology("line3")
ROUTERS = ("r1", "r2", "r3")
YAML_BODY = {"Content-Type": "application/yaml"}


def iface(node: str, towards: str):
    return next(i for i in TOPO.nodes[node].interfaces if i.peer.node == towards)


H1, H2 = iface("h1", "r1"), iface("h2", "r3")


def syn(sport: int) -> bytes:
    """h1 -> h2:5201, as h1 sends it: the forward graph's traffic."""
    return bytes(Ether(src=H1.mac, dst=H1.peer.mac) / IP(src=str(H1.ipv4.ip), dst=str(H2.ipv4.ip), ttl=64)
                 / TCP(sport=sport, dport=5201, flags="S"))


@pytest.fixture
def api(line3):
    with TestClient(create_app(line3.controller, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
        client.delete(f"/services/{SERVICE}")   # whatever a test left
    assert line3.controller.store.services() == {}


def ok(response: httpx.Response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


def post_yaml(api, text: str | bytes, **params) -> httpx.Response:
    return api.post("/services", content=text, headers=YAML_BODY, params=params)


def upload(api, name: str, content: bytes, **fields) -> httpx.Response:
    return api.post("/services", files={"file": (name, content, "application/octet-stream")}, data=fields)


def deploy(api, how: str) -> dict:
    text = DESCRIPTOR.read_bytes()
    return ok(post_yaml(api, text) if how == "yaml" else upload(api, DESCRIPTOR.name, text))


def state(ctl: Controller) -> tuple:
    """Everything a service deploy could add: instances (desired and running), forwarder
    entries (desired and in the data plane), services, pins."""
    running = {n: sorted(d.instance for d in ctl.deployments(n)) for n in ROUTERS}
    entries = {n: sorted(json.dumps(e, sort_keys=True) for e in ctl.store.entries(n, "sff"))
               for n in ROUTERS if ctl.store.instance(n, "sff")}
    held = {n: sorted(repr(e) for t in ("sfc_classify", "sfc_hops") for e in ctl.read(n, "sff", t))
            for n in ROUTERS if "sff" in running[n]}
    pins = {n: sorted(p.name for p in (ctl.scope.pin_root / n).iterdir()) for n in ROUTERS}
    return sorted((i.node, i.id) for i in ctl.instances()), running, entries, held, ctl.store.services(), pins


def test_a_yaml_body_and_an_upload_deploy_the_chain_once(api, line3):
    first = deploy(api, "yaml")
    assert (first["key"], first["name"], first["format"], first["change"]) == \
        (SERVICE, "heavy-hitters-ns", "etsi-sol006", "created")
    assert first["status"] == "ok" and first["problems"] == []
    assert first["routers"] == ["r1", "r2", "r3"]
    assert [(i["node"], i["id"], i["nf"], i["health"]) for i in first["instances"]] == [
        ("r1", f"{SERVICE}--sketch", "cms", "ok"), ("r2", f"{SERVICE}--hh", "precision", "ok"),
        ("r3", f"{SERVICE}--tail", "cms", "ok")]
    assert [(f["node"], f["health"]) for f in first["forwarders"]] == [(r, "ok") for r in ROUTERS]
    paths = {p["graph"]: p for p in first["paths"]}
    assert paths["h1-to-h2"]["routers"] == ["r1", "r2", "r3"] and paths["h2-to-h1"]["routers"] == ["r3", "r2", "r1"]
    assert paths["h1-to-h2"]["hops"] == [[f"{SERVICE}--sketch", "r1"], [f"{SERVICE}--hh", "r2"],
                                         [f"{SERVICE}--tail", "r3"]]
    spis = {g: p["spi"] for g, p in paths.items()}
    assert len(set(spis.values())) == 2
    assert [(c["node"], c["dst_addr"], c["dst_port"], c["spi"], c["si"], c["installed"]) for c in first["classifier"]] \
        == [("r1", "10.0.4.2", 5201, spis["h1-to-h2"], 255, True), ("r3", "10.0.1.2", 0, spis["h2-to-h1"], 255, True)]
    assert all(h["installed"] for h in first["hops"]) and len(first["hops"]) == 10
    assert first["rules"] == len(first["hops"]) + len(first["classifier"])

    # the repeat, this time as a file upload: nothing changes, not even the SPIs
    operations = len(line3.controller.store.operations(limit=100_000))
    again = deploy(api, "upload")
    assert again["change"] == "unchanged"
    assert {p["graph"]: p["spi"] for p in again["paths"]} == spis
    assert {k: v for k, v in again.items() if k != "change"} == {k: v for k, v in first.items() if k != "change"}
    assert len(line3.controller.store.operations(limit=100_000)) == operations, "a no-op runs no operation"

    listed = ok(api.get("/services"))
    assert [(s["key"], s["rules"], s["routers"]) for s in listed] == [(SERVICE, first["rules"], first["routers"])]
    assert {p["graph"]: p["spi"] for p in listed[0]["paths"]} == spis
    shown = ok(api.get(f"/services/{SERVICE}"))
    assert {k: v for k, v in shown.items()} == {k: v for k, v in first.items() if k != "change"}
    assert ok(api.get("/services/heavy-hitters-ns")) == ok(api.get("/services/Heavy Hitters NS")), \
        "a service is found by its descriptor's name too"

    nfs = {n: [(i["id"], i["health"]) for i in ok(api.get(f"/nodes/{n}/nfs"))] for n in ROUTERS}
    assert nfs["r2"] == [("nfrouter", "ok"), ("sff", "ok"), (f"{SERVICE}--hh", "ok")]


def test_an_upload_deploys_and_per_hop_counters_follow_real_frames(api, line3):
    created = deploy(api, "upload")
    assert created["change"] == "created" and created["status"] == "ok"
    spis = {p["graph"]: p["spi"] for p in created["paths"]}

    def counters() -> dict:
        return {(h["node"], h["spi"], h["si"]): h["packets"] for h in ok(api.get(f"/services/{SERVICE}"))["hops"]}
    classified = ok(api.get("/nodes/r1/nfs/sff/stats/verdicts"))["classified"]
    before = counters()
    at_h2 = traffic.Capture(line3.node("h2"), H2.name, "tcp dst port 5201", timeout=2.0, count=7)
    at_h1 = traffic.Capture(line3.node("h1"), H1.name, "tcp src port 5201", timeout=2.0, count=7)
    traffic.send(line3.node("h1"), H1.name, [syn(43000 + i) for i in range(7)])
    assert len(at_h2.frames()) == 7, "the chain delivers every packet"
    assert len(at_h1.frames()) == 7, "h2's resets (no server listens) come back through the reverse graph"
    after = counters()
    grown = {hop: after[hop] - before[hop] for hop in after}
    forward = [hop for hop in grown if hop[1] == spis["h1-to-h2"]]
    back = [hop for hop in grown if hop[1] == spis["h2-to-h1"]]
    assert len(forward) == 6 and {grown[hop] for hop in forward} == {7}, grown
    assert len(back) == 4 and {grown[hop] for hop in back} == {7}, grown
    assert ok(api.get("/nodes/r1/nfs/sff/stats/verdicts"))["classified"] - classified == 7
    hops = ok(api.get(f"/services/{SERVICE}"))["hops"]
    decap = next(h for h in hops if h["action"] == "decap" and h["spi"] == spis["h1-to-h2"])
    assert decap["node"] == "r3" and decap["bytes"] > 0

    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    series = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(metrics.text) for s in family.samples}
    graphs = {spi: graph for graph, spi in spis.items()}
    for h in hops:
        labels = tuple(sorted({"service": SERVICE, "graph": graphs[h["spi"]], "node": h["node"], "spi": str(h["spi"]),
                               "si": str(h["si"]), "action": h["action"]}.items()))
        assert series["innet_chain_hop_packets_total", labels] == h["packets"]
        assert series["innet_chain_hop_bytes_total", labels] == h["bytes"]


def test_status_shows_the_data_plane_beside_the_desired_state(api, line3):
    deploy(api, "yaml")
    ctl = line3.controller
    hop = next(e for e in ctl.read("r2", "sff", "sfc_hops"))
    ctl.plane("r2").delete("sff", [hop])   # behind the controller's back: the store still wants it
    shown = ok(api.get(f"/services/{SERVICE}"))
    assert shown["status"] == "degraded"
    assert [(h["node"], h["spi"], h["si"]) for h in shown["hops"] if not h["installed"]] == \
        [("r2", hop.match["spi"], hop.match["si"])]
    assert shown["problems"] == ["r2: 1 of 3 rules of the service are not in the forwarder as desired"]
    ctl.reconcile(["r2"])
    assert ok(api.get(f"/services/{SERVICE}"))["status"] == "ok"

    ctl.plane("r3").remove(f"{SERVICE}--tail")
    shown = ok(api.get(f"/services/{SERVICE}"))
    tail = next(i for i in shown["instances"] if i["id"] == f"{SERVICE}--tail")
    assert shown["status"] == "degraded" and tail["health"] == "not deployed"
    assert f"r3: NF instance {SERVICE}--tail: not deployed" in shown["problems"]
    ctl.reconcile(["r3"])
    assert ok(api.get(f"/services/{SERVICE}"))["status"] == "ok"


def corpus() -> list[tuple[str, str, dict]]:
    """(file, the error it must produce, its bindings) for every malformed descriptor."""
    out = []
    for name, expected in yaml.safe_load((CORPUS / "expected.yaml").read_text()).items():
        if isinstance(expected, dict):
            out.append((name, expected["expect"], expected.get("bind", {})))
        else:
            out.append((name, expected, {}))
    return out


def test_malformed_descriptors_answer_422_with_the_path_and_install_nothing(api, line3):
    deploy(api, "yaml")   # a service runs: its rules and instances must stay as they are
    before = state(line3.controller)
    operations = len(line3.controller.store.operations(limit=10_000))
    cases = corpus()
    assert len(cases) >= 40
    for i, (name, expected, bind) in enumerate(cases):
        text = (CORPUS / name).read_bytes()
        bindings = [f"{k}={v}" for k, v in bind.items()]
        as_upload = i % 2 == 1   # every other one as a file upload: the error names the file
        answer = upload(api, f"uploads/{name}", text, bind=bindings) if as_upload else \
            post_yaml(api, text, bind=bindings)
        problem = answer.json()
        assert answer.status_code == 422, (name, answer.text)
        assert expected in problem["error"], (name, problem["error"])
        (place,) = problem["errors"]
        assert problem["error"] == (f"{name}: " if as_upload else "") + f"{place['location']}: {place['message']}"
        assert place["hint"] == problem["hint"]
    assert state(line3.controller) == before, "no new instance, rule or record"
    assert len(line3.controller.store.operations(limit=10_000)) == operations, "refused before any operation"


def test_what_the_testbed_cannot_carry_and_bad_options_answer_422(api, line3):
    before = state(line3.controller)
    # the DESIRE6G example asks for BMv2 routers (default-nfrouter-mode bmv2); line3's run XDP
    bmv2 = post_yaml(api, (REPO / "nsds" / "heavy-hitters-lnsd.yaml").read_bytes())
    assert bmv2.status_code == 422 and "wants target bmv2, but r1 runs xdp" in bmv2.json()["error"], bmv2.text
    router = post_yaml(api, DESCRIPTOR.read_bytes(), bind="h1=r1")
    assert router.status_code == 422 and router.json()["error"].startswith("endpoint 'h1': 'r1' is a router")
    for params, error in (({"bind": "h1"}, "bind=h1: expected NAME=HOST"),
                          ({"bind": ["h1=h1", "h1=h2"]}, "bind=h1=h2: 'h1' is given twice"),
                          ({"nf": "=cms"}, "nf==cms: expected ID=NF")):
        refused = post_yaml(api, DESCRIPTOR.read_bytes(), **params)
        assert refused.status_code == 422 and refused.json()["error"].startswith(error), refused.text
    empty = api.post("/services", files={"bind": (None, b"h1=h1")})   # a form without a file
    assert empty.status_code == 422 and "upload without the descriptor" in empty.json()["error"]
    not_json = api.post("/services", content=b'{"nsd": [', headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["error"].startswith("(document): not valid JSON")
    assert state(line3.controller) == before


def test_delete_removes_every_rule_and_instance_and_unknown_services_are_404(api, line3):
    deploy(api, "yaml")
    ctl = line3.controller
    assert ok(api.delete(f"/services/{SERVICE}")) == {"key": SERVICE, "deleted": True}
    assert ok(api.get("/services")) == []
    for node in ROUTERS:
        assert [(i["id"], i["health"]) for i in ok(api.get(f"/nodes/{node}/nfs"))] == [("nfrouter", "ok")]
        assert ctl.store.instance(node, "sff") is None and ctl.store.entries(node, "sff") == []
        assert [d.instance for d in ctl.deployments(node)] == ["nfrouter"]
        assert sorted(p.name.split("@")[0] for p in (ctl.scope.pin_root / node).iterdir()) == ["nfrouter"]
    assert ctl.store.services() == {}

    for answer in (api.get(f"/services/{SERVICE}"), api.delete(f"/services/{SERVICE}"), api.get("/services/nope")):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] in (f"no service '{SERVICE}'", "no service 'nope'")
        assert answer.json()["hint"].startswith("services: none")


# ---- innet api as a process, the CLI as its client ------------------------------------------
def test_the_service_commands_through_a_running_innet_api(line3):
    scope = line3.controller.scope.name
    url = None

    def innet(*args: str, check: bool = True, remote: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "testbed.cli", "--scope", scope,
                               *(("--api", url) if remote else ()), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert not check or proc.returncode == 0, f"innet {' '.join(args)}: {proc.stderr}"
        return proc

    try:
        with running_api(scope) as url:
            deployed = innet("service", "deploy", str(DESCRIPTOR.relative_to(REPO)))
            assert f"service {SERVICE} deployed: 3 NF instances, 12 rules on r1, r2, r3" in deployed.stderr
            assert "h1-to-h2: SPI" in deployed.stdout and "heavy-hitters-ns--sketch @r1" in deployed.stdout
            again = innet("service", "deploy", str(DESCRIPTOR.relative_to(REPO)))
            assert "unchanged (already deployed)" in again.stderr

            listed = innet("service", "list")
            assert SERVICE in listed.stdout and "heavy-hitters-ns--hh" in listed.stdout
            remote_json = json.loads(innet("service", "list", "--json").stdout)
            assert remote_json == json.loads(innet("service", "list", "--json", remote=False).stdout)
            assert [s["key"] for s in remote_json] == [SERVICE]
            shown = json.loads(innet("services", "show", SERVICE, "--json").stdout)
            assert shown["status"] == "ok" and len(shown["hops"]) == 10

            bad = innet("service", "deploy", str((CORPUS / "sol006-duplicate-nfpd-id.yaml").relative_to(REPO)),
                        check=False)
            assert bad.returncode == 1 and "tests/nsd_corpus/sol006-duplicate-nfpd-id.yaml: nsd.nsd[0].vnffgd[0]." \
                "nfpd[1].id: duplicate graph name 'h1-to-h2'" in bad.stderr, bad.stderr

            innet("service", "delete", SERVICE)
            assert json.loads(innet("service", "list", "--json").stdout) == []
            missing = innet("service", "show", SERVICE, check=False)
            assert missing.returncode == 1 and f"no service '{SERVICE}'" in missing.stderr
    finally:
        if line3.controller.store.services():   # a failed assertion left it
            innet("service", "delete", SERVICE, remote=False, check=False)


def test_the_ping_demo_uploads_with_its_bindings_as_form_fields(api, line3):
    """As the README's curl does: the Smart-Orchestrator example, its endpoints bound by form fields."""
    text = (REPO / "nsds" / "ping-demo.json").read_bytes()
    unbound = upload(api, "ping-demo.json", text)
    assert unbound.status_code == 422 and unbound.json()["error"].startswith("ping-demo.json: endpoint"), unbound.text
    created = ok(upload(api, "ping-demo.json", text, bind=["src=h1", "dst=h2"]))
    assert (created["change"], created["status"], created["routers"]) == ("created", "ok", ["r1", "r2", "r3"])
    assert created["instances"] == [], "a link without an NF runs through the routers' forwarders alone"
    assert ok(api.delete(f"/services/{created['key']}"))["deleted"]
    assert ok(api.get("/services")) == []
