"""The demo: line3 with NFRouter on every router, ping, iperf3, counters, clean teardown.

A Count-Min sketch (cms) measures on the first router, in front of its router NF (an XDP
chain, or the composed BMv2 pipeline), and the demo prints the heaviest flows it saw.
Routers run on the targets the topology names, or all on one (`target`: xdp or bmv2)."""
from __future__ import annotations

import time

from controller.stats import FlowMonitor
from controller.topology import load_topology
from testbed.net import Testbed
from testbed.leftovers import leftovers


def run_demo(topology: str, iperf_seconds: int, print_routes, print_flows, target: str | None = None) -> int:
    topo = load_topology(topology)
    if target:
        topo = topo.retarget(target)
    print(f"[demo] {topo.name}: " + ", ".join(f"{r.name} on {r.target}" for r in topo.routers))
    src, dst = topo.hosts[0], topo.hosts[-1]
    dst_v4, dst_v6 = dst.interfaces[0].ipv4.ip, dst.interfaces[0].ipv6.ip
    tb = Testbed(topo)
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
        server = h_dst.popen(["iperf3", "-s", "-1"])
        time.sleep(0.5)
        out = h_src.cmd(f"iperf3 -c {dst_v4} -t {iperf_seconds} -f m")
        server.wait(timeout=10)
        print("\n".join(ln for ln in out.splitlines() if "sender" in ln or "receiver" in ln or "error" in ln))
        print_flows(meter, "cms", flows.sample())
        for r in topo.routers:
            print_routes(tb.routes.list(r.name), r.name)
            v = tb.controller.read_stat(r.name, "nfrouter", "verdicts")
            print(f"  verdicts: " + ", ".join(f"{k}={n}" for k, n in v.items() if n))
    except KeyboardInterrupt:
        print("\n[demo] interrupted")
    finally:
        tb.stop()
    left = leftovers(topo, tb.controller.scope, tb.host_pids)
    print("[demo] torn down cleanly" if not left else f"[demo] LEFT BEHIND: {left}")
    return 0 if not left else 1
