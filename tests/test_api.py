"""The REST API (controller.api) against a real router node: a throwaway namespace (va, vc)
with its peers (vb, vd) in a second one, in a scope of its own, NFs deployed through the
API. FastAPI's TestClient drives the app in-process; one test runs `innet api` as a real
process and the CLI against it with `innet --api URL`.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from controller import stats
from controller.api import flows
from controller.api.app import create_app
from controller.api.auth import check_bind, read_token, token_path
from controller.api.client import ApiClient
from controller.api.resources import Resources
from controller.bpf import libbpf
from controller.errors import InnetError, StatsError
from controller.node import Node
from controller.p4 import switch
from controller.queues import QueueLevel
from controller.scope import Scope
from controller.service import Controller
from controller.targets.chain import PROG_PIN
from testbed import cli, traffic
from testbed.scratch import Veth, namespace
from apiserver import free_port, running_api

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token-" + uuid.uuid4().hex
MAX_BODY = 1 << 20
PEER_MAC = "02:00:00:aa:00:02"


@dataclass
class Router:
    name: str
    netns: str
    peer: Node   # the namespace holding vb and vd
    scope: Scope
    ctl: Controller


@pytest.fixture
def router():
    with namespace("api", [Veth("va", "vb", "192.0.2.1/24", "192.0.2.2/24"),
                           Veth("vc", "vd", "198.51.100.1/24", "198.51.100.2/24")], peers_apart=True) as ns:
        scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
        ctl = Controller(scope)
        ctl.add_node(Node(ns.name, ns.path))
        yield Router(ns.name, ns.path, Node(ns.peer, f"/var/run/netns/{ns.peer}"), scope, ctl)
        Controller(scope).forget_node(ns.name)
        scope.drop()


def client_of(router: Router, token: str | None = TOKEN, **options) -> TestClient:
    app = create_app(router.ctl, TOKEN, max_body=MAX_BODY, flow_interval_s=0.3, **options)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"} if token else {})


@pytest.fixture
def api(router):
    with client_of(router) as client:
        yield client


def ok(response: httpx.Response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


def deploy_router(api, router: Router) -> None:
    ok(api.post(f"/nodes/{router.name}/nfs", json={"nf": "nfrouter", "interfaces": ["va", "vc"]}))


def routes(count: int, first: int = 0) -> list[dict]:
    return [{"prefix": f"10.{(i >> 8) & 255}.{i & 255}.0/24", "interface": "vc", "mac": PEER_MAC,
             "via": "198.51.100.2"} for i in range(first, first + count)]


def kernel_prefixes(netns: str) -> set[str]:
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "route", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {r["dst"] for r in json.loads(out) if r.get("gateway") == "198.51.100.2"}


# ---- security -------------------------------------------------------------------------------
@pytest.mark.needs_root
def test_every_request_but_healthz_needs_the_token(router):
    with client_of(router, token=None) as anonymous, client_of(router, token="wrong-" + TOKEN) as wrong, \
            client_of(router) as right:
        assert ok(anonymous.get("/healthz")) == {"status": "ok"}
        for path in ("/nodes", "/metrics", "/openapi.json", "/docs", "/flows/top", "/topology", "/no/such/path",
                     "/static/../app.py", "/staticx"):
            for client in (anonymous, wrong):
                answer = client.get(path)
                assert answer.status_code == 401, (path, answer.text)
                assert answer.json()["error"] == "missing or wrong bearer token"
                assert answer.headers["www-authenticate"] == "Bearer"
        assert anonymous.post(f"/nodes/{router.name}/nfs", json={"nf": "cms"}).status_code == 401
        page = anonymous.get("/")   # the status page holds no data: its script asks for the token
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert anonymous.get("/static/page.js").headers["content-type"].startswith("text/javascript")
        assert router.ctl.instances(router.name) == [], "a refused request changes nothing"
        nodes = right.get("/nodes")
        assert [n["name"] for n in ok(nodes)] == [router.name]
        assert float(nodes.headers["server-timing"].removeprefix("app;dur=")) > 0, "the server's time, in ms"
        schema = ok(right.get("/openapi.json"))
        assert schema["paths"]["/healthz"]["get"]["security"] == [] and schema["security"] == [{"bearer": []}]


def test_a_non_loopback_address_needs_a_token_file(tmp_path):
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        with pytest.raises(InnetError, match=f"refusing to listen on {host} without --token-file"):
            check_bind(host, None)
        check_bind(host, str(tmp_path / "token"))
    proc = subprocess.run([sys.executable, "-m", "testbed.cli", "--scope", f"t-{uuid.uuid4().hex[:8]}", "api",
                           "--host", "0.0.0.0", "--port", str(free_port())], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "refusing to listen on 0.0.0.0 without --token-file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_token_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(InnetError, match="may be read by others"):
        read_token(path)
    path.chmod(0o600)
    assert read_token(path) == TOKEN


# ---- NF instances ---------------------------------------------------------------------------
@pytest.mark.needs_root
def test_deploy_list_change_and_remove_instances(api, router):
    base = f"/nodes/{router.name}/nfs"
    deployed = ok(api.post(base, json={"nf": "nfrouter", "interfaces": ["va", "vc"]}))
    assert (deployed["instance"], deployed["nf"], deployed["interfaces"]) == ("nfrouter", "nfrouter", ["va", "vc"])
    ok(api.post(base, json={"nf": "cms", "id": "cms-a", "interfaces": ["va"], "params": {"rows": 2}}))
    listed = ok(api.get(base))
    assert [(i["id"], i["nf"], i["health"]) for i in listed] == [("nfrouter", "nfrouter", "ok"), ("cms-a", "cms", "ok")]

    changed = ok(api.patch(f"{base}/cms-a", json={"params": {"columns": 1024}}))
    assert (changed["params"]["rows"], changed["params"]["columns"]) == (2, 1024), "unnamed parameters are kept"
    assert router.ctl.instance(router.name, "cms-a").params == changed["params"]

    assert ok(api.delete(f"{base}/cms-a")) == {"node": router.name, "instance": "cms-a", "removed": True}
    assert [i["id"] for i in ok(api.get(base))] == ["nfrouter"]
    gone = api.delete(f"{base}/cms-a")
    assert gone.status_code == 404 and gone.json()["error"] == f"no NF instance 'cms-a' on {router.name}"
    assert [i.id for i in router.ctl.instances(router.name)] == ["nfrouter"]


# ---- routes ---------------------------------------------------------------------------------
@pytest.mark.needs_root
def test_bulk_routes_in_both_paths(api, router):
    deploy_router(api, router)
    base = f"/nodes/{router.name}/routes"
    assert ok(api.post(base, json={"routes": routes(600)}))["routes"] == 600
    listed = ok(api.get(base))
    assert sorted(r["prefix"] for r in listed) == sorted(r["prefix"] for r in routes(600))
    assert all(r["fast_path"] and r["kernel"] and r["packets"] == 0 for r in listed)
    assert kernel_prefixes(router.netns) == {r["prefix"] for r in routes(600)}

    assert ok(api.request("DELETE", base, json={"prefixes": [r["prefix"] for r in routes(400)]}))["routes"] == 400
    listed = ok(api.get(base))
    assert sorted(r["prefix"] for r in listed) == sorted(r["prefix"] for r in routes(200, first=400))
    assert all(r["fast_path"] and r["kernel"] for r in listed)
    assert kernel_prefixes(router.netns) == {r["prefix"] for r in routes(200, first=400)}
    none_left = api.request("DELETE", base, json={"prefixes": [routes(1)[0]["prefix"]]})
    assert none_left.status_code == 404 and none_left.json()["error"] == f"{router.name} has no route 10.0.0.0/24"


# ---- bad requests ---------------------------------------------------------------------------
@pytest.mark.needs_root
def test_bad_requests_say_what_is_wrong_and_change_nothing(api, router):
    deploy_router(api, router)
    base = f"/nodes/{router.name}/routes"
    ok(api.post(base, json={"routes": routes(3)}))
    before = (ok(api.get(base)), router.ctl.instances(router.name), kernel_prefixes(router.netns))

    def refused(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "hint", "errors"} and "Traceback" not in response.text
        return body

    unknown = refused(api.get("/nodes/nope/routes"), 404)
    assert unknown["error"] == "unknown node 'nope'" and router.name in unknown["hint"]
    assert "nope" in refused(api.post("/nodes/nope/nfs", json={"nf": "cms"}), 404)["error"]
    assert refused(api.get(f"/nodes/{router.name}/nfs/cms/stats/x"), 404)["error"] == \
        f"no NF instance 'cms' on {router.name}"

    bad = routes(3, first=10)
    bad[2]["prefix"] = "10.0.0.300/24"
    malformed = refused(api.post(base, json={"routes": bad}), 422)
    assert malformed["errors"][0]["location"] == "body.routes[2].prefix"
    assert malformed["error"] == "body.routes[2].prefix: route '10.0.0.300/24': not a valid prefix"
    no_gateway = refused(api.post(base, json={"routes": [{"prefix": "10.9.0.0/16", "interface": "vc",
                                                          "mac": PEER_MAC}]}), 422)
    assert no_gateway["errors"][0]["location"] == "body.routes[0]" and "needs a gateway" in no_gateway["error"]
    own = refused(api.post(base, json={"routes": [{**routes(1)[0], "via": "198.51.100.1"}]}), 422)
    assert "own address" in own["error"]
    no_iface = refused(api.post(base, json={"routes": [{**routes(1)[0], "interface": "eth9"}]}), 422)
    assert f"{router.name} has no interface 'eth9'" in no_iface["error"]
    assert refused(api.request("DELETE", base, json={"prefixes": ["10.1.2.3/33"]}), 422)["errors"][0]["location"] \
        == "body.prefixes[0]"

    unknown_nf = refused(api.post(f"/nodes/{router.name}/nfs", json={"nf": "nosuchnf"}), 422)
    assert unknown_nf["error"] == "unknown NF 'nosuchnf'" and "catalog" in unknown_nf["hint"]
    assert "cms.rows=99 is out of range" in refused(
        api.post(f"/nodes/{router.name}/nfs", json={"nf": "cms", "params": {"rows": 99}}), 422)["error"]
    assert refused(api.post(f"/nodes/{router.name}/nfs", json={"nf": "cms", "params": {"rows": "4"}}), 422)[
        "errors"][0]["location"] == "body.params.rows"
    assert refused(api.post(f"/nodes/{router.name}/nfs", json={"nf": "cms", "id": "../../etc"}), 422)[
        "errors"][0]["location"] == "body.id"
    assert refused(api.post(f"/nodes/{router.name}/nfs", content=b"{not json", headers={
        "Content-Type": "application/json"}), 422)["errors"][0]["location"].startswith("body")

    too_big = b'{"routes": [' + b" " * MAX_BODY + b"]}"
    assert "over 1048576 bytes" in refused(api.post(base, content=too_big,
                                                    headers={"Content-Type": "application/json"}), 413)["error"]
    streamed = iter([b'{"routes": [', b" " * MAX_BODY, b"]}"])   # chunked: no Content-Length to go by
    refused(api.post(base, content=streamed, headers={"Content-Type": "application/json"}), 413)

    assert (ok(api.get(base)), router.ctl.instances(router.name), kernel_prefixes(router.netns)) == before
    failed = [o for o in ok(api.get("/operations")) if o["state"] != "done"]
    assert failed == [], "every refusal came before an operation began"


# ---- metrics --------------------------------------------------------------------------------
def udp_to(router: Router, dst: str, count: int) -> list[bytes]:
    va = next(i for i in router.ctl.plane(router.name).interfaces() if i.name == "va")
    return [bytes(Ether(src="02:00:00:bb:00:01", dst=va.mac) / IP(src="192.0.2.2", dst=dst, ttl=64) /
                  UDP(sport=40000 + i % 3, dport=5001) / (b"x" * 64)) for i in range(count)]


def scrape(api) -> dict[tuple[str, tuple], float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


@pytest.mark.needs_root
def test_metrics_match_the_data_plane(api, router):
    deploy_router(api, router)
    ok(api.post(f"/nodes/{router.name}/routes", json={"routes": routes(3)}))
    traffic.send(router.peer, "vb", udp_to(router, "10.0.1.9", 7) + udp_to(router, "10.0.2.9", 4))
    listed = {r["prefix"]: r for r in ok(api.get(f"/nodes/{router.name}/routes"))}
    verdicts = ok(api.get(f"/nodes/{router.name}/nfs/nfrouter/stats/verdicts"))
    assert (listed["10.0.1.0/24"]["packets"], listed["10.0.2.0/24"]["packets"]) == (7, 4)

    metrics = scrape(api)
    where = (("instance", "nfrouter"), ("node", router.name))
    for prefix, route in listed.items():
        labels = tuple(sorted((*where, ("prefix", prefix))))
        assert metrics["innet_route_packets_total", labels] == route["packets"]
        assert metrics["innet_route_bytes_total", labels] == route["bytes"]
        assert metrics["innet_route_in_sync", tuple(sorted((*labels, ("path", "kernel"))))] == 1
    assert metrics["innet_routes", where] == 3 and metrics["innet_routes_out_of_sync", where] == 0
    for verdict, count in verdicts.items():
        labels = tuple(sorted((*where, ("nf", "nfrouter"), ("stat", "verdicts"), ("counter", verdict))))
        assert metrics["innet_nf_counter_total", labels] == count
    assert sum(verdicts.values()) >= 11
    assert metrics["innet_instance_read_ok", where] == 1
    for operation in ("nf_deploy", "routes_add", "routes_list", "stats"):
        assert metrics["innet_operation_seconds_count", (("code", "200"), ("operation", operation))] >= 1
    assert metrics["innet_operation_seconds_bucket", (("code", "200"), ("le", "+Inf"),
                                                      ("operation", "nf_deploy"))] == 1


@pytest.mark.needs_root
def test_metrics_have_the_queues_where_they_are_configured(api, router):
    ok(api.post(f"/nodes/{router.name}/nfs", json={"nf": "prio", "interfaces": ["va", "vc"]}))
    router.ctl.configure_queues(router.name, "prio", "vc", 20_000_000,
                                [QueueLevel(0, 5_000_000), QueueLevel(1, 5_000_000), QueueLevel(2, 10_000_000)])
    # the namespace's own packets (IPv6 neighbour discovery) may cross a queue meanwhile: the
    # scraped figures lie between the queues' counters read before and after the scrape
    before = {q.level: q for q in router.ctl.queue_stats(router.name, "prio", "vc")}
    metrics = scrape(api)
    after = {q.level: q for q in router.ctl.queue_stats(router.name, "prio", "vc")}
    assert set(before) == set(after) == {0, 1, 2}
    for level, q in before.items():
        labels = (("instance", "prio"), ("interface", "vc"), ("level", str(level)), ("node", router.name))
        for metric, field in (("innet_queue_packets_total", "packets"), ("innet_queue_drops_total", "drops"),
                              ("innet_queue_backlog_bytes", "backlog_bytes")):
            low, high = sorted((getattr(q, field), getattr(after[level], field)))
            assert low <= metrics[metric, labels] <= high, f"{metric} of level {level}"
    assert {dict(labels)["interface"] for name, labels in metrics if name == "innet_queue_bytes_total"} == {"vc"}


# ---- flows ----------------------------------------------------------------------------------
@pytest.mark.needs_root
def test_concurrent_readers_of_top_flows_share_one_epoch_owner(api, router, monkeypatch):
    closers = []
    close = stats.SketchEpochs.close

    def counted_close(self):
        closers.append(threading.current_thread().name)
        return close(self)
    monkeypatch.setattr(stats.SketchEpochs, "close", counted_close)
    ok(api.post(f"/nodes/{router.name}/nfs", json={"nf": "cms", "interfaces": ["va"],
                                                   "params": {"columns": 256, "candidates": 256}}))
    query = {"node": router.name, "nf": "cms", "k": 5}
    first = ok(api.get("/flows/top", params=query))   # starts the instance's sampler
    traffic.send(router.peer, "vb", udp_to(router, "10.0.1.9", 30))

    shown, counted, answers = first["interval"], 0, []
    deadline = time.monotonic() + 20
    while counted < 30 and time.monotonic() < deadline:
        pair = [None, None]

        def read(i: int) -> None:
            pair[i] = ok(api.get("/flows/top", params={**query, "after": shown}))
        readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        assert pair[0] == pair[1], "both readers get the same interval"
        shown = pair[0]["interval"]
        answers.append(pair[0])
        counted += sum(f["packets"] for f in pair[0]["flows"] if f["dst"] == "10.0.1.9")
    assert counted == 30, "the intervals together hold every packet sent, once"
    assert [a["interval"] for a in answers] == list(range(first["interval"] + 1, shown + 1)), "none skipped"
    assert {(f["src"], f["dport"], f["proto"]) for a in answers for f in a["flows"] if f["dst"] == "10.0.1.9"} == \
        {("192.0.2.2", 5001, 17)}
    assert set(closers) == {f"flows {router.name}/cms"}, "one owner flipped the banks"
    assert len(closers) >= shown + 1   # its restart, then one per interval

    ok(api.post(f"/nodes/{router.name}/nfs", json={"nf": "nfrouter", "interfaces": ["vc"]}))
    not_hh = api.get("/flows/top", params={**query, "nf": "nfrouter"})
    assert not_hh.status_code == 422 and "nfrouter has no flow table" in not_hh.json()["error"]
    assert api.get("/flows/top", params={**query, "k": 0}).status_code == 422


class FakeMonitor:
    """A FlowMonitor without a data plane: each interval counts one flow's 5 packets."""
    failure: Exception | None = None

    def __init__(self, controller, node: str, instance: str, k: int):
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:   # a sampler lets go of the epochs when it stops
        pass

    def sample(self) -> stats.Sample:
        if FakeMonitor.failure:
            raise FakeMonitor.failure
        flow = stats.FlowRate(stats.Flow.of("10.0.0.1", "10.0.0.2", 1, 2, 17), 5, 500, 100.0, 10_000.0)
        return stats.Sample(0.05, [flow], 5, 500)


def test_flow_samplers_share_retire_and_recover(monkeypatch):
    monkeypatch.setattr(flows, "FlowMonitor", FakeMonitor)
    samplers = flows.FlowSamplers(None, interval_s=0.05, idle_s=0.5, limit=2)
    try:
        first = samplers.watch("n", "x")
        assert samplers.watch("n", "x") is first, "one sampler per instance"
        top = samplers.top("n", "x", k=1)
        time.sleep(0.2)   # intervals close meanwhile: the one after `top` is still kept
        assert samplers.top("n", "x", k=1, after=top.interval).interval == top.interval + 1
        assert samplers.top("n", "x", k=1).flows[0].flow == "10.0.0.1:1 -> 10.0.0.2:2 udp"

        kept = samplers.watch("n", "kept", keep=True)
        with pytest.raises(flows.TooBusy, match="2 instances are watched already"):
            samplers.watch("n", "third")
        time.sleep(0.8)   # nobody reads x: it retires, and frees its place
        assert samplers.watch("n", "x") is not first and samplers.watch("n", "kept") is kept
        again = samplers.top("n", "x", k=1, after=999)
        assert again.interval < 999, "a restarted sampler's intervals count from 1 again"

        FakeMonitor.failure = StatsError("the instance went away")
        with pytest.raises(StatsError, match="went away"):
            samplers.top("n", "x", k=1, after=again.interval)
        FakeMonitor.failure = None
        assert samplers.top("n", "x", k=1).interval == 1, "a failed sampler is replaced by the next reader"
    finally:
        FakeMonitor.failure = None
        samplers.close()
    assert samplers.latest() == []


# ---- state memory and flow estimates ------------------------------------------------------
CMS_PARAMS = {"rows": 4, "columns": 4096, "candidates": 1024}
# IPv4 and IPv6, UDP and TCP, heavy and light; four UDP flows share one address pair
SENT = {stats.Flow.of("192.0.2.2", "10.0.1.9", 40000, 5001, 17): 30,
        stats.Flow.of("192.0.2.2", "10.0.1.9", 40001, 5001, 17): 12,
        stats.Flow.of("192.0.2.2", "10.0.1.9", 40002, 53, 17): 7,
        stats.Flow.of("192.0.2.2", "10.0.1.9", 40003, 5001, 17): 1,
        stats.Flow.of("192.0.2.7", "10.0.2.9", 33000, 80, 6): 9,
        stats.Flow.of("2001:db8::2", "2001:db8:1::9", 41000, 443, 6): 5,
        stats.Flow.of("2001:db8::2", "2001:db8:1::9", 41000, 5001, 17): 2}
PAYLOAD = 10


def frames_into(ctl: Controller, node: str, interface: str, flow: stats.Flow, count: int) -> list[bytes]:
    """`count` frames of the flow addressed to the node's `interface`."""
    mac = next(i for i in ctl.plane(node).interfaces() if i.name == interface).mac
    ip = IP(src=str(flow.src), dst=str(flow.dst)) if flow.src.version == 4 else IPv6(src=str(flow.src),
                                                                                       dst=str(flow.dst))
    l4 = (TCP if flow.proto == 6 else UDP)(sport=flow.sport, dport=flow.dport)
    return [bytes(Ether(src="02:00:00:bb:00:01", dst=mac) / ip / l4 / (b"x" * PAYLOAD))] * count


def frame_length(flow: stats.Flow) -> int:
    """What cms counts per frame: the Ethernet frame as sent."""
    return 14 + (20 if flow.src.version == 4 else 40) + (20 if flow.proto == 6 else 8) + PAYLOAD


def kernel_maps(router: Router, instance: str) -> dict[str, tuple[int, int]]:
    """Each map the instance pinned, as bpftool reads it from the kernel: (max entries, bytes per
    entry as the kernel stores the value: rounded up to 8 bytes, once per CPU for a per-CPU map)."""
    pins = router.ctl.target("xdp").pin_dir(router.ctl.node(router.name), instance)
    out = {}
    for pin in pins.iterdir():
        if pin.name == PROG_PIN:
            continue
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "pinned", str(pin)], capture_output=True,
                                         text=True, check=True).stdout)
        stored = -(-info["bytes_value"] // 8) * 8
        cpus = libbpf.num_possible_cpus() if info["type"].startswith("percpu") else 1
        out[pin.name] = (info["max_entries"], stored * cpus)
    return out


def send_and_count(ctl: Controller, node: str, instance: str, sent: dict[stats.Flow, int], interface: str,
                   peer: Node, peer_interface: str, burst: int = 1 << 20) -> None:
    """Send the flows' frames into `interface` from `peer_interface` of `peer`, `burst` at a
    time, and wait until the instance's totals count them all."""
    frames = [raw for flow, count in sent.items() for raw in frames_into(ctl, node, interface, flow, count)]
    before = sum(ctl.read_registers(node, instance, "totals")["packets"])
    for i in range(0, len(frames), burst):
        traffic.send(peer, peer_interface, frames[i:i + burst])
    deadline = time.monotonic() + 10
    while sum(ctl.read_registers(node, instance, "totals")["packets"]) - before < len(frames):
        assert time.monotonic() < deadline, f"{instance} did not count the {len(frames)} frames within 10 s"
        time.sleep(0.05)


@pytest.mark.needs_root
def test_nf_show_reports_every_map_of_an_instance_with_their_total(api, router):
    base = f"/nodes/{router.name}/nfs"
    ok(api.post(base, json={"nf": "cms", "interfaces": ["va"], "params": CMS_PARAMS}))
    ok(api.post(base, json={"nf": "precision", "interfaces": ["vc"]}))
    listed = {i["id"]: i for i in ok(api.get(base))}
    shown = {}
    for instance in ("cms", "precision"):
        shown[instance] = ok(api.get(f"{base}/{instance}"))
        assert {k: shown[instance][k] for k in listed[instance]} == listed[instance], "as nf list shows it"
        assert shown[instance]["node"] == router.name
        maps = shown[instance]["maps"]
        assert {m["name"]: (m["entries"], m["entry_bytes"]) for m in maps} == kernel_maps(router, instance)
        assert all(m["bytes"] == m["entries"] * m["entry_bytes"] for m in maps)
        assert shown[instance]["state_bytes"] == sum(m["bytes"] for m in maps)

    # twice the columns: the sketch map (two banks of rows x columns) doubles, and so much more state
    ok(api.patch(f"{base}/cms", json={"params": {"columns": 2 * CMS_PARAMS["columns"]}}))
    wider = ok(api.get(f"{base}/cms"))
    before = {m["name"]: m for m in shown["cms"]["maps"]}
    after = {m["name"]: m for m in wider["maps"]}
    cells = 2 * CMS_PARAMS["rows"] * CMS_PARAMS["columns"]
    (sketch,) = [name for name, m in before.items() if m["entries"] == cells]
    assert after[sketch]["entries"] == 2 * cells
    assert wider["state_bytes"] - shown["cms"]["state_bytes"] == after[sketch]["bytes"] - before[sketch]["bytes"]
    assert {n: m for n, m in after.items() if n != sketch} == {n: m for n, m in before.items() if n != sketch}

    for path, status, error in ((f"{base}/nope", 404, f"no NF instance 'nope' on {router.name}"),
                                ("/nodes/nope/nfs/cms", 404, "unknown node 'nope'")):
        answer = api.get(path)
        assert answer.status_code == status and answer.json()["error"] == error, answer.text


@pytest.mark.needs_root
def test_estimates_of_flows_sent_through_cms(api, router):
    """Real frames through cms on va (keyed by 5-tuple) and on vc (by address pair): each flow's
    estimate is at least its count, and with 4096 columns by 4 rows no two of these few flows
    share a cell in every row, so each is exact."""
    base = f"/nodes/{router.name}/nfs"
    ok(api.post(base, json={"nf": "cms", "interfaces": ["va"], "params": CMS_PARAMS}))
    ok(api.post(base, json={"nf": "cms", "id": "pairs", "interfaces": ["vc"],
                            "params": {**CMS_PARAMS, "key_mode": 1}}))
    send_and_count(router.ctl, router.name, "cms", SENT, "va", router.peer, "vb")
    send_and_count(router.ctl, router.name, "pairs", SENT, "vc", router.peer, "vd")

    def estimate(instance: str, flow: stats.Flow, **more) -> dict:
        return ok(api.get("/flows/estimate", params={"node": router.name, "nf": instance, "src": str(flow.src),
                                                     "dst": str(flow.dst), "sport": flow.sport,
                                                     "dport": flow.dport, "proto": flow.proto, **more}))
    active = int(router.ctl.read_registers(router.name, "cms", "control")["active_bank"][0]) & 1
    for flow, count in SENT.items():
        answer = estimate("cms", flow)
        assert (answer["flow"], answer["bank"]) == (str(flow), active)
        assert (answer["packets"], answer["bytes"]) == (count, count * frame_length(flow)), flow
        assert estimate("cms", flow, bank=1 - active)["packets"] == 0, "the other bank counted nothing"
    unsent = stats.Flow.of("192.0.2.2", "10.0.1.9", 40000, 5002, 17)
    assert estimate("cms", unsent)["packets"] == 0

    pairs = {}
    for flow, count in SENT.items():
        pairs[flow.src, flow.dst, flow.proto] = pairs.get((flow.src, flow.dst, flow.proto), 0) + count
    for (src, dst, proto), count in pairs.items():
        answer = estimate("pairs", stats.Flow.of(src, dst, 1234, 5678, proto))
        assert (answer["sport"], answer["dport"], answer["packets"]) == (0, 0, count), "ports do not count"
        assert answer["flow"] == str(stats.Flow.of(src, dst, 0, 0, proto))


P4_BURST = 24   # BMv2 reads a port through libpcap, whose ring holds 32 frames here (tests/test_p4_programs.py)


@pytest.fixture
def p4_router():
    """A BMv2 switch on p4a in a throwaway namespace (frames come in from p4b beside it, IPv6 off
    so the kernel sends none of its own), a node of a scope of its own."""
    with namespace("apip4", [Veth("p4a", "p4b")], lo_up=True, ipv6=False) as ns:
        scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
        ctl = Controller(scope)
        ctl.add_node(Node(ns.name, ns.path, target="bmv2", kernel_slow_path=False))
        try:
            switch.start(scope, ns.name, ["p4a"], netns=ns.path)
            yield ctl, ns.name
        finally:
            try:
                Controller(scope).forget_node(ns.name)
            finally:
                switch.stop(scope, ns.name)
                scope.drop()


@pytest.mark.needs_root
@pytest.mark.skipif(switch.unavailable() is not None, reason=str(switch.unavailable()))
def test_nf_show_and_estimates_on_bmv2(p4_router):
    """nf show counts the register arrays cms binds (the sketch: two banks of rows x columns
    cells, a packet and a byte counter each); the estimates find each flow's cells with the
    switch's own CRC-32 hashes, and with 256 columns by 4 rows these few flows share no cell in
    every row, so each is exact."""
    ctl, node = p4_router
    params = {**CMS_PARAMS, "columns": 256}   # BMv2 sizes its registers per cell: keep the program small
    with TestClient(create_app(ctl, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        ok(api.post(f"/nodes/{node}/nfs", json={"nf": "cms", "interfaces": ["p4a"], "params": params}))
        shown = ok(api.get(f"/nodes/{node}/nfs/cms"))
        assert (shown["target"], shown["health"]) == ("bmv2", "ok")
        maps = {m["name"]: m for m in shown["maps"]}
        cells = 2 * params["rows"] * params["columns"]
        assert (maps["cms_packets"]["entries"], maps["cms_bytes"]["entries"]) == (cells, cells)
        assert all(m["bytes"] == m["entries"] * m["entry_bytes"] for m in shown["maps"])
        assert shown["state_bytes"] == sum(m["bytes"] for m in shown["maps"])

        send_and_count(ctl, node, "cms", SENT, "p4a", ctl.node(node), "p4b", burst=P4_BURST)
        for flow, count in SENT.items():
            answer = ok(api.get("/flows/estimate", params={"node": node, "nf": "cms", "src": str(flow.src),
                                                           "dst": str(flow.dst), "sport": flow.sport,
                                                           "dport": flow.dport, "proto": flow.proto}))
            assert (answer["packets"], answer["bytes"]) == (count, count * frame_length(flow)), flow


@pytest.mark.needs_root
def test_bad_estimate_requests_say_what_is_wrong(api, router):
    base = f"/nodes/{router.name}/nfs"
    ok(api.post(base, json={"nf": "cms", "interfaces": ["va"]}))
    ok(api.post(base, json={"nf": "precision", "interfaces": ["vc"]}))
    good = {"node": router.name, "nf": "cms", "src": "192.0.2.2", "dst": "10.0.1.9", "sport": 1, "dport": 2,
            "proto": 17}
    assert ok(api.get("/flows/estimate", params=good))["packets"] == 0
    for change, status, error, location in (
            ({"node": "nope"}, 404, "unknown node 'nope'", None),
            ({"nf": "nope"}, 404, f"no NF instance 'nope' on {router.name}", None),
            ({"nf": "precision"}, 422, "NF precision (instance precision) has no Count-Min sketch to estimate "
                                       "flows from", None),
            ({"src": "10.0.0.300"}, 422, "src '10.0.0.300' is not an IPv4 or IPv6 address", None),
            ({"dst": "2001:db8::1"}, 422, "src 192.0.2.2 and dst 2001:db8::1 are not of one address family", None),
            ({"sport": 70000}, 422, None, "query.sport"),
            ({"proto": 256}, 422, None, "query.proto"),
            ({"proto": "udp"}, 422, None, "query.proto"),
            ({"bank": 2}, 422, None, "query.bank")):
        answer = api.get("/flows/estimate", params={**good, **change})
        assert answer.status_code == status, (change, answer.text)
        body = answer.json()
        assert error is None or body["error"] == error, (change, body)
        assert location is None or body["errors"][0]["location"] == location, (change, body)
    missing = api.get("/flows/estimate", params={k: v for k, v in good.items() if k != "proto"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["location"] == "query.proto"
    with pytest.raises(StatsError, match=r"sport 70000 is out of range \(0-65535\)"):   # the CLI's local path
        Resources(router.ctl).estimate(router.name, "cms", "192.0.2.2", "10.0.1.9", 17, sport=70000)


# ---- CLI parity -----------------------------------------------------------------------------
def test_every_api_operation_is_a_cli_command_and_the_client_mirrors_the_operations(capsys):
    scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
    try:
        schema = create_app(Controller(scope), TOKEN).openapi()
    finally:
        scope.drop()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert operations - {"healthz", "metrics"} == {name for name, _ in inspect.getmembers(Resources) if
                                                   not name.startswith("_") and name != "watch"}
    for name in operations - {"healthz", "metrics"}:
        assert inspect.signature(getattr(ApiClient, name)) == inspect.signature(getattr(Resources, name)), name
        command, *action = name.split("_")   # routes_add: innet routes add
        with pytest.raises(SystemExit) as help_exit:
            cli.main([command, "--help"])
        assert help_exit.value.code == 0
        assert all(a in capsys.readouterr().out for a in action), name


# ---- innet api as a process, the CLI as its client ------------------------------------------
def innet(scope: Scope, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "testbed.cli", "--scope", scope.name, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert not check or proc.returncode == 0, f"innet {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.mark.needs_root
def test_innet_api_serves_the_cli(router):
    with running_api(router.scope.name) as url:
        assert os.stat(token_path(router.scope)).st_mode & 0o777 == 0o600

        def remote(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            return innet(router.scope, "--api", url, *args, check=check)
        assert json.loads(remote("nodes", "--json").stdout) == json.loads(innet(router.scope, "nodes", "--json").stdout)
        remote("nf", "deploy", router.name, "nfrouter", "--iface", "va", "--iface", "vc")
        remote("routes", "add", router.name, "10.7.0.0/16", "--via", "198.51.100.2", "--dev", "vc", "--mac", PEER_MAC)
        listed = json.loads(remote("routes", "list", router.name, "--json").stdout)
        assert [(r["prefix"], r["fast_path"], r["kernel"]) for r in listed] == [("10.7.0.0/16", True, True)]
        assert json.loads(innet(router.scope, "routes", "list", router.name, "--json").stdout) == listed
        assert "10.7.0.0/16" in remote("routes", "list", router.name).stdout
        status = json.loads(remote("status", "--json").stdout)
        assert [(i["id"], i["health"]) for n in status["nodes"] for i in n["instances"]] == [("nfrouter", "ok")]
        assert "forwarded" in json.loads(remote("stats", router.name, "nfrouter", "verdicts", "--json").stdout)
        remote("nf", "deploy", router.name, "cms", "--iface", "va")
        assert json.loads(remote("nf", "list", router.name, "--json").stdout)[router.name][1]["id"] == "cms"
        top = json.loads(remote("hh", router.name, "cms", "--once", "--json").stdout)
        assert (top["instance"], top["interval"]) == ("cms", 1)
        remote("nf", "remove", router.name, "cms")
        remote("routes", "del", router.name, "10.7.0.0/16")
        assert json.loads(remote("routes", "list", router.name, "--json").stdout) == []

        missing = remote("routes", "del", router.name, "10.7.0.0/16", check=False)
        assert missing.returncode == 1 and f"{router.name} has no route 10.7.0.0/16" in missing.stderr
        local_only = remote("reconcile", check=False)
        assert local_only.returncode == 1 and "acts on this machine only" in local_only.stderr
        wrong = Path(router.scope.state_dir / "wrong.token")
        wrong.write_text("not-the-token-at-all")
        wrong.chmod(0o600)
        refused = innet(router.scope, "--api", url, "--token-file", str(wrong), "nodes", check=False)
        assert refused.returncode == 1 and "missing or wrong bearer token" in refused.stderr
        client = ApiClient(url, read_token(token_path(router.scope)))
        assert {"deploy", "routes-add", "remove", "routes-delete"} <= {o.kind for o in client.operations(state="done")}


@pytest.mark.needs_root
def test_a_deploy_in_progress_is_listed_as_a_pending_operation(api, router, monkeypatch):
    xdp = router.ctl.target("xdp")
    deploy = xdp.deploy

    def slow_deploy(*args, **kwargs):   # as long as a compile would take
        time.sleep(1.0)
        return deploy(*args, **kwargs)
    monkeypatch.setattr(xdp, "deploy", slow_deploy)
    answer = {}
    running = threading.Thread(target=lambda: answer.update(ok(api.post(f"/nodes/{router.name}/nfs",
                                                                        json={"nf": "cms", "interfaces": ["va"]}))))
    running.start()
    deadline, pending = time.monotonic() + 5, []
    while not pending and time.monotonic() < deadline:
        pending = ok(api.get("/operations", params={"state": "pending"}))
    running.join()
    assert [(o["kind"], o["node"], o["subject"], o["pid"]) for o in pending] == \
        [("deploy", router.name, "cms", os.getpid())]
    assert answer["instance"] == "cms"
    assert ok(api.get("/operations", params={"state": "pending"})) == []


@pytest.mark.needs_root
def test_nf_show_and_estimate_on_the_cli_locally_and_through_the_api(router):
    router.ctl.deploy(router.name, "cms", ["va"], CMS_PARAMS)
    router.ctl.deploy(router.name, "precision", ["vc"])
    heavy, count = next(iter(SENT.items()))
    send_and_count(router.ctl, router.name, "cms", {heavy: count}, "va", router.peer, "vb")
    flow_arg = f"{heavy.src},{heavy.dst},{heavy.sport},{heavy.dport},udp"
    with running_api(router.scope.name) as url:
        def both(*args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
            return innet(router.scope, *args, check=check), innet(router.scope, "--api", url, *args, check=check)

        local, remote = both("nf", "show", router.name, "cms", "--json")
        shown = json.loads(local.stdout)
        assert json.loads(remote.stdout) == shown
        text = innet(router.scope, "nf", "show", router.name, "cms").stdout.splitlines()
        assert text[0].startswith(f"cms (cms, xdp) on {router.name}: va (") and text[0].endswith("health ok")
        for m, line in zip(shown["maps"], text[1:]):
            assert line.split() == [m["name"], str(m["entries"]), "x", str(m["entry_bytes"]), "B", "=",
                                    str(m["bytes"]), "B"]
        assert text[-1].split()[:4] == ["state", "memory", str(shown["state_bytes"]), "B"]
        assert len(text) == len(shown["maps"]) + 2

        local, remote = both("estimate", router.name, "cms", "--flow", flow_arg, "--json")
        assert json.loads(local.stdout) == json.loads(remote.stdout)
        assert json.loads(local.stdout)["packets"] == count
        line = innet(router.scope, "estimate", router.name, "cms", "--flow", flow_arg.replace("udp", "17")).stdout
        assert line.startswith(f"cms on {router.name}, bank ") and f": {heavy}: at most {count} packets, " \
            f"{count * frame_length(heavy)} bytes" in line

        for args, error in (
                (("estimate", router.name, "precision", "--flow", flow_arg), "NF precision (instance precision) has "
                                                                             "no Count-Min sketch"),
                (("estimate", router.name, "cms", "--flow", "192.0.2.2,10.0.0.300,udp"), "dst '10.0.0.300' is not "
                                                                                         "an IPv4 or IPv6 address"),
                (("estimate", router.name, "cms", "--flow", "192.0.2.2,10.0.1.9"), "is not SRC,DST,PROTO or "
                                                                                   "SRC,DST,SPORT,DPORT,PROTO"),
                (("estimate", router.name, "cms", "--flow", "192.0.2.2,10.0.1.9,x,1,udp"), "port 'x' is not a "
                                                                                           "number"),
                (("estimate", router.name, "cms", "--flow", "192.0.2.2,10.0.1.9,1,1,udq"), "protocol 'udq' is "
                                                                                           "neither a number"),
                (("estimate", router.name, "cms", "--flow", "192.0.2.2,10.0.1.9,1,1,300"), "255"),   # proto's range
                (("nf", "show", router.name, "nope"), f"no NF instance 'nope' on {router.name}")):
            for failed in both(*args, check=False):
                assert failed.returncode == 1 and "Traceback" not in failed.stderr, (args, failed.stderr)
                assert failed.stderr.startswith("innet: error: ") and error in failed.stderr.splitlines()[0], \
                    (args, failed.stderr)
