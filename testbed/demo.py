"""The demo: line3 with NFRouter on every router, ping, iperf3, counters, clean teardown.

A Count-Min sketch (cms) measures on the first router, in front of its router NF (an XDP
chain, or the composed BMv2 pipeline), and the demo prints the heaviest flows it saw.
Routers run on the targets the topology names, or all on one (`target`: xdp or bmv2).

Then a service chain, on XDP and BMv2 routers alike: nsds/heavy-hitters-sol006.yaml (cms ->
precision -> cms, TCP to port 5201) deployed through the service layer, iperf3 through it, its
per-hop counters and what each NF instance counted, and the service deleted again; then the
Ping demo (nsds/ping-demo.json: src <-> dst through an NFRouter), pinged through, with its
per-hop counters."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from controller.chains import FORWARDER
from controller.sfc import ChainService, service_key
from controller.stats import FlowMonitor, read_flows
from controller.topology import load_topology
from testbed.net import Testbed
from testbed import processes
from testbed.leftovers import leftovers

CHAIN_NSD = Path(__file__).resolve().parent.parent / "nsds" / "heavy-hitters-sol006.yaml"
PING_NSD = CHAIN_NSD.parent / "ping-demo.json"


def run_demo(topology: str, iperf_seconds: int, print_routes, print_flows, target: str | None = None) -> int:
    topo = load_topology(topology)
    if target:
        topo = topo.retarget(target)
    print(f"[demo] {topo.name}: " + ", ".join(f"{r.name} on {r.target}" for r in topo.routers))
    src, dst = topo.hosts[0], topo.hosts[-1]
    dst_v4, dst_v6 = dst.interfaces[0].ipv4.ip, dst.interfaces[0].ipv6.ip
    tb = Testbed(topo)
    chains, service, servers = ChainService(tb.controller), None, []
    services_before = set(tb.controller.store.services())   # a scope's store may hold some (see below)
    try:
        tb.start()
        h_src, h_dst = tb.host(src.name), tb.host(dst.name)
        meter = topo.routers[0].name
        print(f"[demo] measuring with cms on {meter}")
        tb.controller.deploy(meter, "cms")
        flows = FlowMonitor(tb.controller, meter, "cms", k=5, by="bytes")
        flows.start()
        print(f"[demo] ping {src.name} -> {dst.name} over IPv4 and IPv6")
        print(h_src.cmd(f"ping -c 3 -i 0.2 -W 1 {dst_v4}").rstrip())
        print(h_src.cmd(f"ping -6 -c 3 -i 0.2 -W 1 {dst_v6}").rstrip())
        print(f"[demo] iperf3 {src.name} -> {dst.name}, {iperf_seconds} s")
        print(_iperf3(h_src, h_dst, dst_v4, iperf_seconds, servers))
        print_flows(meter, "cms", flows.sample())
        for r in topo.routers:
            print_routes(tb.routes.list(r.name), r.name)
            v = tb.controller.read_stat(r.name, "nfrouter", "verdicts")
            print("  verdicts: " + ", ".join(f"{k}={n}" for k, n in v.items() if n))
        doc, bind, adapted = _chain_descriptor(topo)
        service = service_key(doc["nsd"]["nsd"][0]["name"])   # from here on, teardown deletes it
        _chain_part(tb, chains, doc, bind, adapted, iperf_seconds, servers)
        chains.delete(service)
        print(f"[demo] service {service} deleted")
        service = _ping_demo_part(tb, chains)   # from here on, teardown deletes it
        chains.delete(service)
        print(f"[demo] service {service} deleted")
        service = None
    except KeyboardInterrupt:
        print("\n[demo] interrupted")
    finally:
        _settle(tb, servers)
        if service is not None:   # stopped with the chain (perhaps) in place: the store must not keep it
            try:
                chains.delete(service)
            except Exception as exc:  # noqa: BLE001 - the teardown goes on whatever happens
                print(f"[demo] deleting service {service}: {exc}")
        tb.stop()
    left = leftovers(topo, tb.controller.scope, tb.host_pids)
    # a service record outlives the testbed's teardown (Testbed.stop keeps the store's services)
    left += [f"service {name} in {tb.controller.scope.db_path}"
             for name in set(tb.controller.store.services()) - services_before]
    print("[demo] torn down cleanly" if not left else f"[demo] LEFT BEHIND: {left}")
    return 0 if not left else 1


def _iperf3(h_src, h_dst, dst, seconds: int, servers: list) -> str:
    """iperf3 from h_src to a one-off server on h_dst (port 5201): its sender and receiver lines."""
    server = h_dst.popen(["iperf3", "-s", "-1"])
    servers.append(server)
    time.sleep(0.5)
    out = h_src.cmd(f"iperf3 -c {dst} -t {seconds} -f m")
    server.wait(timeout=10)
    return "\n".join(ln for ln in out.splitlines() if "sender" in ln or "receiver" in ln or "error" in ln)


def _settle(tb, servers: list) -> None:
    """After Ctrl-C: end the iperf3 servers still running and the command a host's shell was
    running (Mininet cannot stop a node whose shell still waits for one)."""
    for server in servers:   # the processes this demo started, each by its own handle
        processes.end(server)
    for host in tb.net.hosts if tb.net is not None else []:
        if host.waiting:
            host.sendInt()
            host.waitOutput()


def _chain_descriptor(topo) -> tuple[dict, dict[str, str], bool]:
    """The SOL006 example as a mapping, its endpoints bound to the topology's first and last host
    (h1 and h2 of line3, for which it is written); True when addresses had to be adapted."""
    doc = yaml.safe_load(CHAIN_NSD.read_text())
    src, dst = topo.hosts[0], topo.hosts[-1]
    addresses = {"10.0.1.2": str(src.interfaces[0].ipv4.ip), "10.0.4.2": str(dst.interfaces[0].ipv4.ip)}

    def adapt(value):
        if isinstance(value, dict):
            return {k: adapt(v) for k, v in value.items()}
        if isinstance(value, list):
            return [adapt(v) for v in value]
        return addresses.get(value, value) if isinstance(value, str) else value

    adapted = adapt(doc)
    return adapted, {"h1": src.name, "h2": dst.name}, adapted != doc


def _chain_part(tb, chains: ChainService, doc: dict, bind: dict[str, str], adapted: bool, iperf_seconds: int,
                servers: list) -> None:
    """Deploy the example chain, run iperf3 through it, print its counters."""
    topo = tb.topo
    src, dst = topo.hosts[0], topo.hosts[-1]
    print(f"[demo] service chain: deploying {CHAIN_NSD.relative_to(CHAIN_NSD.parent.parent)}"
          + (f" (addresses adapted to {topo.name}'s hosts)" if adapted else ""))
    started = time.perf_counter()
    plan = chains.deploy(doc, bind=bind, source=str(CHAIN_NSD))
    print(f"  service {plan.service}: {len(plan.instances)} NF instances, {len(plan.rules)} rules on "
          f"{', '.join(plan.nodes)} in {time.perf_counter() - started:.2f} s")
    for path in plan.paths:
        hops = " -> ".join(f"{i.split('--', 1)[-1]} @{n}" for i, n in path.hops)
        print(f"  {path.graph}: SPI {path.spi}, routers {' -> '.join(path.routers)}; {hops}")
    print(f"[demo] iperf3 {src.name} -> {dst.name}:5201 through the chain, {iperf_seconds} s")
    print(_iperf3(tb.host(src.name), tb.host(dst.name), dst.interfaces[0].ipv4.ip, iperf_seconds, servers))
    _print_chain_counters(tb.controller, chains, plan)


def _ping_demo_part(tb, chains: ChainService) -> str:
    """The Smart-Orchestrator report's Ping demo (src <-> dst through an NFRouter: a chain with no
    NF, NSH from the source's router to the destination's), pinged through; returns its key."""
    src, dst = tb.topo.hosts[0], tb.topo.hosts[-1]
    print(f"[demo] service chain: deploying {PING_NSD.relative_to(PING_NSD.parent.parent)} "
          f"(src={src.name}, dst={dst.name})")
    plan = chains.deploy(PING_NSD.read_text(), bind={"src": src.name, "dst": dst.name}, source=str(PING_NSD))
    for path in plan.paths:
        print(f"  {path.graph}: SPI {path.spi}, routers {' -> '.join(path.routers)}")
    print(f"[demo] ping {src.name} -> {dst.name} through it")
    out = tb.host(src.name).cmd(f"ping -c 5 -i 0.2 -W 2 {dst.interfaces[0].ipv4.ip}")
    print("  " + next((line for line in out.splitlines() if "packet loss" in line), out.strip()))
    _print_chain_counters(tb.controller, chains, plan)
    return plan.service


def _print_chain_counters(ctl, chains: ChainService, plan) -> None:
    shown = chains.show(plan.service)
    print(f"[demo] per-hop counters (innet service show {plan.service}):")
    print(f"  {'node':<5} {'SPI':>4} {'SI':>4}  {'action':<8} {'parameters':<28} {'packets':>10} {'bytes':>13}")
    for h in shown["hops"]:
        params = " ".join(f"{k}={v}" for k, v in h["params"].items() if k != "dst_mac" and k != "src_mac")
        print(f"  {h['node']:<5} {h['spi']:>4} {h['si']:>4}  {h['action']:<8} {params:<28} "
              f"{h['packets']:>10} {h['bytes']:>13}")
    handed = {(i["node"], i["slot"]): i["packets"] for i in shown["instances"]}
    if plan.instances:
        print("[demo] packets each NF instance counted, beside those its forwarder handed it:")
    for inst in plan.instances:
        spec = ctl.spec(inst.node, inst.id)
        if "sketch" in spec.stats:   # cms: every packet adds one to a cell of each row, in one of two banks
            n, how = int(ctl.read_registers(inst.node, inst.id, "sketch")["packets"][:, 0].sum()), "counted"
        else:                        # precision: the counts its flow table holds
            n, how = sum(c.packets for c in read_flows(ctl, inst.node, inst.id)), "in its flow table"
        print(f"  {inst.id.split('--', 1)[-1]:<8} {inst.nf:<10} @{inst.node:<4} {n:>10} {how}, "
              f"{handed.get((inst.node, inst.slot), 0)} handed to it")
    for node in plan.nodes:
        v = ctl.read_stat(node, FORWARDER, "verdicts")
        print(f"  {node} sff verdicts: " + ", ".join(f"{k}={n}" for k, n in v.items() if n))
