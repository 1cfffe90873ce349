"""Bad input: a clear error naming what was wrong, and nothing half-deployed left behind."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from controller.bpf.build import compile_program
from controller.catalog import get_nf, load_nf
from controller.errors import BpfError, CompileError, EntryError, TargetError, TopologyError, VerifierError
from controller.routes import RouteService
from controller.tables import TableEntry

pytestmark = pytest.mark.needs_root

BAD_PROGRAM = textwrap.dedent("""
    #include "include/parsing.h"
    SEC("xdp")
    int reads_past_the_end(struct xdp_md *ctx)
    {
        struct ethhdr *eth = (void *)(long)ctx->data;
        return eth->h_proto == 8 ? XDP_PASS : XDP_DROP;   /* no bounds check */
    }
    char LICENSE[] SEC("license") = "GPL";
""")


def leftover(ctl, node):
    """What innet holds on the node: pin directories, data-plane records or counter slots,
    desired instances."""
    pins = ctl.target("xdp").node_pins(node)
    found = sorted(pins.iterdir()) if pins.exists() else []
    found += [f"records of {node}"] if node in ctl.records.nodes() else []
    return found + [f"instance {i.id}" for i in ctl.instances(node)]


def test_unknown_node(veth_node):
    ctl, _ = veth_node
    with pytest.raises(TopologyError, match="unknown node 'r9'"):
        ctl.deploy("r9", "nfrouter")


def test_unknown_interface_leaves_nothing(veth_node):
    ctl, node = veth_node
    with pytest.raises(TopologyError, match=f"node {node} has no interface 'eth7'") as exc:
        ctl.deploy(node, "nfrouter", ["va", "eth7"])
    assert "va" in exc.value.hint
    assert not leftover(ctl, node)


def test_second_deploy_is_idempotent_and_keeps_state(veth_node):
    ctl, node = veth_node
    first = ctl.deploy(node, "nfrouter", ["va", "vb"])
    routes = RouteService(ctl)
    routes.add(node, "198.51.100.0/24", "va", "02:00:00:00:00:09", via="192.0.2.9")
    again = ctl.deploy(node, "nfrouter", ["va", "vb"])
    assert first.cleared == ("nfrouter",), "a first deploy starts with empty maps"
    assert again.cleared == (), "a repeat empties nothing"
    assert dataclasses.replace(again, cleared=first.cleared) == first
    assert [r.prefix for r in routes.list(node)] == ["198.51.100.0/24"]
    routes.delete(node, "198.51.100.0/24")


def test_invalid_prefix_mac_and_gateway(veth_node):
    ctl, node = veth_node
    ctl.deploy(node, "nfrouter", ["va", "vb"])
    routes = RouteService(ctl)
    with pytest.raises(EntryError, match="'10.1.2.3/8': not a valid prefix"):
        routes.add(node, "10.1.2.3/8", "va", "02:00:00:00:00:01", via="192.0.2.2")
    with pytest.raises(EntryError, match="'02:00:00:00:01' is not a MAC address"):
        routes.add(node, "10.0.0.0/8", "va", "02:00:00:00:01", via="192.0.2.2")
    with pytest.raises(EntryError, match="needs a gateway"):
        routes.add(node, "10.0.0.0/8", "va", "02:00:00:00:00:01")
    with pytest.raises(EntryError, match=f"route 10.0.0.0/8: {node} has no interface 'eth5'") as exc:
        routes.add(node, "10.0.0.0/8", "eth5", "02:00:00:00:00:01", via="192.0.2.2")
    assert "va" in exc.value.hint
    assert routes.list(node) == []


def test_full_route_table_is_refused_and_rolled_back(veth_node):
    ctl, node = veth_node
    ctl.deploy(node, "nfrouter", ["va", "vb"], {"max_routes": 4})
    routes = RouteService(ctl)
    for i in range(4):
        routes.add(node, f"198.51.{i}.0/24", "va", "02:00:00:00:00:09", via="192.0.2.9")
    with pytest.raises(BpfError, match="ipv4_routes is full \\(4 entries\\)"):
        routes.add(node, "198.51.200.0/24", "va", "02:00:00:00:00:09", via="192.0.2.9")
    assert len(routes.list(node)) == 4
    kernel = subprocess.run(["nsenter", f"--net=/var/run/netns/{node}", "ip", "route", "show", "198.51.200.0/24"],
                            capture_output=True, text=True).stdout
    assert kernel.strip() == "", "the kernel route must not outlive the refused fast-path entry"


def _held_slots(ctl, node):
    """Every route's counter slot, read from the maps, and the slots the target has recorded."""
    target = ctl.target("xdp")
    slots = [s for t in get_nf("nfrouter").tables for s in target.entry_slots(ctl.node(node), "nfrouter", t)]
    return slots, set(ctl.records.slots(node, "nfrouter", "route_stats").values())


def test_counter_slots_are_reused_and_never_shared(veth_node):
    """Routes written one by one, nested prefixes (an LPM lookup of the longer one finds the
    shorter), a refused batch, deletions and new routes: each route holds its own counter slot,
    and the recorded slots are exactly those held."""
    ctl, node = veth_node
    ctl.deploy(node, "nfrouter", ["va", "vb"], {"max_routes": 4})

    def route(prefix):
        table = "ipv6_routes" if ":" in prefix else "ipv4_routes"
        return TableEntry(table, {"dst_addr": prefix}, "forward",
                          {"egress_port": "va", "dst_mac": "02:00:00:00:00:09", "src_mac": "02:00:00:00:00:0a"})

    ctl.write(node, "nfrouter", [route("198.51.0.0/16")])
    for i in range(1, 3):
        ctl.write(node, "nfrouter", [route(f"198.51.{i}.0/24")])
    with pytest.raises(BpfError, match="full"):
        ctl.write(node, "nfrouter", [route("198.51.3.0/24"), route("198.51.4.0/24")])   # 5 do not fit in 4
    slots, recorded = _held_slots(ctl, node)
    assert len(slots) == 3 and len(set(slots)) == 3 and set(slots) == recorded
    assert ctl.delete(node, "nfrouter", [route("198.51.7.0/24")]) == 0, "a prefix inside the /16 is no entry"
    assert ctl.delete(node, "nfrouter", [route("198.51.0.0/16"), route("198.51.1.0/24")]) == 2
    ctl.write(node, "nfrouter", [route("2001:db8:1::/48"), route("2001:db8:2::/48"), route("2001:db8:2::/48")])
    ctl.write(node, "nfrouter", [route("198.51.9.0/24")])
    slots, recorded = _held_slots(ctl, node)
    assert len(slots) == 4 and len(set(slots)) == 4 and set(slots) == recorded
    assert [d.instance for d in ctl.deployments(node)] == ["nfrouter"], "the slot record is no deployment"
    assert list(ctl.records.items(node)) == ["xdp/nfrouter"]


def test_verifier_rejection_shows_the_log_and_leaves_nothing(veth_node, tmp_path, monkeypatch):
    ctl, node = veth_node
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROGRAM)
    monkeypatch.setattr("controller.bpf.build.EBPF_DIR", compile_program.__globals__["EBPF_DIR"])
    include = compile_program.__globals__["EBPF_DIR"] / "include"
    (tmp_path / "include").symlink_to(include)
    nf_file = tmp_path / "bad.yaml"
    nf_file.write_text(f"name: badnf\nprograms:\n  xdp: {{source: {src}, entry: reads_past_the_end}}\n")
    nf = load_nf(nf_file)
    target = ctl.target("xdp")
    with pytest.raises(VerifierError) as exc:
        target.deploy(ctl.node(node), "badnf", nf, ["va"])
    text = str(exc.value)
    assert "reads_past_the_end" in text and "invalid access to packet" in text
    assert len(text.splitlines()) < 40, "only the relevant lines of the log"
    assert not list(target.node_pins(node).glob("badnf@*")) and target.deployment(ctl.node(node), "badnf") is None
    assert not leftover(ctl, node)
    out = subprocess.run(["nsenter", f"--net=/var/run/netns/{node}", "ip", "link", "show", "va"],
                         capture_output=True, text=True).stdout
    assert "xdp" not in out


def test_compile_error_is_trimmed(tmp_path):
    src = tmp_path / "broken.bpf.c"
    src.write_text("int f(void) { return undefined_thing; }\n")
    with pytest.raises(CompileError, match="broken.bpf.c.*undefined_thing"):
        compile_program(src)


def test_missing_privileges_say_so():
    code = ("from controller.bpf.libbpf import BpfObject\n"
            "from controller.bpf.build import compile_program\n"
            "from controller.errors import BpfError\n"
            "obj = str(compile_program('ebpf/nfrouter.bpf.c'))\n"
            "o = BpfObject(obj)\n"
            "import os; os.setgid(65534); os.setuid(65534)\n"
            "try:\n    o.load()\nexcept BpfError as e:\n    print(e)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert "run as root" in out.stdout, out.stdout + out.stderr


def test_entry_on_an_interface_without_the_nf(veth_node):
    ctl, node = veth_node
    ctl.deploy(node, "nfrouter", ["va"])
    with pytest.raises(EntryError, match="interface 'vb' does not run this NF"):
        RouteService(ctl).add(node, "10.0.0.0/8", "vb", "02:00:00:00:00:01", via="192.0.2.2")


def test_not_deployed(veth_node):
    ctl, node = veth_node
    with pytest.raises(TargetError, match=f"no NF instance 'nfrouter' runs on {node}") as exc:
        ctl.read(node, "nfrouter", "ipv4_routes")
    assert f"innet nf deploy {node}" in exc.value.hint
