"""`innet`: a thin command line over the controller and the testbed."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from controller.errors import InnetError


def _print_routes(routes, node: str) -> None:
    print(f"routes on {node}:")
    print(f"  {'prefix':<22} {'via':<18} {'interface':<10} {'next-hop MAC':<18} {'packets':>8} {'bytes':>10}")
    for r in routes:
        print(f"  {r.prefix:<22} {(r.via or ('local' if r.local else 'direct')):<18} {r.interface or '-':<10} "
              f"{r.mac or '-':<18} {r.packets:>8} {r.bytes:>10}")


def cmd_demo(args) -> int:
    from testbed.demo import run_demo
    return run_demo(args.topology, args.iperf_seconds, _print_routes, _print_flows, args.target)


def cmd_up(args) -> int:
    from controller.topology import load_topology
    from testbed.net import Testbed

    topo = load_topology(args.topology)
    with Testbed(topo.retarget(args.target) if args.target else topo) as tb:
        print(f"[innet] {tb.topo.name} is up; nodes: {', '.join(tb.topo.nodes)}. Ctrl-C (or EOF) tears it down.")
        if args.cli:
            from mininet.cli import CLI
            CLI(tb.net)
        else:
            try:
                sys.stdin.read()
            except KeyboardInterrupt:
                pass
    return 0


def cmd_topology(args) -> int:
    from controller.topology import load_topology

    topo = load_topology(args.topology)
    print(f"topology {topo.name}")
    for link in topo.links:
        bw = f"  {link.bw} Mbit/s" if link.bw else ""
        print(f"  {link.a.name} {link.a.ipv4} <-> {link.b.name} {link.b.ipv4}{bw}")
    for r in topo.routers:
        print(f"  {r.name} ({r.target}): {len(topo.static_routes(r.name))} static routes")
    return 0


def _params(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InnetError(f"parameter {pair!r} is not KEY=VALUE")
        out[key] = int(value, 0) if value.lstrip("-").isdigit() or value.startswith("0x") else value
    return out


def _controller():
    from controller.core import Controller

    ctl = Controller.from_saved()
    if not ctl.nodes:
        raise InnetError("no running nodes are known", hint="bring a topology up first: innet up line3")
    return ctl


def cmd_nodes(args) -> int:
    for n in _controller().nodes.values():
        print(f"{n.name:<8} {n.role:<7} {n.target:<6} {n.netns}")
    return 0


def cmd_nf(args) -> int:
    ctl = _controller()
    if args.action == "deploy":
        d = ctl.deploy(args.node, args.nf, args.iface or None, _params(args.param))
        print(f"{d.nf} on {d.node}: " + ", ".join(f"{i} ({d.modes.get(i, '?')})" for i in d.interfaces))
    else:
        print("removed" if ctl.remove(args.node, args.nf) else f"{args.nf} was not deployed on {args.node}")
    return 0


def cmd_routes(args) -> int:
    from controller.routes import RouteService

    routes = RouteService(_controller())
    if args.action == "add":
        routes.add(args.node, args.prefix, args.dev, args.mac, args.via, args.local)
    elif args.action == "del":
        if not routes.delete(args.node, args.prefix):
            raise InnetError(f"{args.node} has no route {args.prefix}")
    _print_routes(routes.list(args.node), args.node)
    return 0


def cmd_stats(args) -> int:
    for name, value in _controller().read_stat(args.node, args.nf, args.stat).items():
        print(f"{name:<20} {value:>12}")
    return 0


def _queue_rows(ctl, node: str, interfaces: list[str], last: dict, interval: float) -> list[str]:
    from controller.errors import QueueError

    regs = ctl.read_registers(node, "prio", "levels")
    lines = []
    for ifname in interfaces:
        try:
            stats = ctl.queue_stats(node, "prio", ifname)
        except QueueError:
            lines.append(f"{node}:{ifname}: no queues configured (innet queues {node} {ifname} ...)")
            continue
        lines.append(f"{node}:{ifname}")
        lines.append(f"  {'level':>5} {'rate':>10} {'ceil':>10} {'packets':>10} {'bytes':>12} {'drops':>8} "
                     f"{'backlog':>12} {'now Mbit/s':>10} {'classified':>10}")
        for q in stats:
            before = last.get((ifname, q.level))
            now = f"{(q.bytes - before) * 8 / interval / 1e6:.2f}" if before is not None else "-"
            last[(ifname, q.level)] = q.bytes
            lines.append(f"  {q.level:>5} {q.rate_bps / 1e6:>8g}M {q.ceil_bps / 1e6:>8g}M {q.packets:>10} "
                         f"{q.bytes:>12} {q.drops:>8} {f'{q.backlog_packets}p/{q.backlog_bytes}B':>12} {now:>10} "
                         f"{int(regs['packets'][q.level]):>10}")
    return lines


def _show(title: str, interval: float, once: bool, lines, wait_first: bool = False) -> int:
    """Print `lines()` once, or redraw it every `interval` seconds until Ctrl-C; `wait_first`
    when the first lines need an interval to measure."""
    try:
        if wait_first:
            time.sleep(interval)
        while True:
            text = "\n".join(lines())
            if once:
                print(text)
                return 0
            print("\033[H\033[J" + f"{title}, every {interval:g} s (Ctrl-C stops)\n" + text, flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def cmd_prio(args) -> int:
    ctl = _controller()
    deployment = ctl.deployment(args.node, "prio")
    if deployment is None:
        raise InnetError(f"prio is not deployed on {args.node}", hint=f"innet nf deploy {args.node} prio --iface IFACE")
    interfaces = [args.interface] if args.interface else list(deployment.interfaces)
    last: dict = {}
    return _show(f"innet prio {args.node}", args.interval, args.once,
                 lambda: _queue_rows(ctl, args.node, interfaces, last, args.interval))


def cmd_queues(args) -> int:
    from controller.queues import QueueLevel, parse_rate

    levels = []
    for i, spec in enumerate(args.level):
        rate, _, ceil = spec.partition(":")
        levels.append(QueueLevel(i, parse_rate(rate, f"level {i} rate"), parse_rate(ceil, f"level {i} ceil") if ceil else None))
    done = _controller().configure_queues(args.node, args.nf, args.interface, parse_rate(args.link_rate, "--link-rate"),
                                          levels)
    for q in done:
        print(f"level {q.level}: rate {q.rate_bps} bit/s, ceil {q.ceil_bps} bit/s")
    return 0


def _hh_table(node: str, nf: str, sample, threshold: float | None) -> list[str]:
    def si(value) -> str:
        if value is None:
            return "-"
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= scale:
                return f"{value / scale:.1f}{unit}"
        return f"{value:.0f}"

    total = ""
    if sample.packets is not None:
        total = f", {sample.packets} packets, {si(sample.bytes * 8 / sample.duration)}bit/s in all"
    lines = [f"{nf} on {node}: top {len(sample.flows)} flows of the last {sample.duration:.2f} s{total}",
             f"  {'#':>3} {'flow':<58} {'packets':>10} {'bytes':>10} {'pkt/s':>8} {'bit/s':>8} {'share':>6}"]
    for i, r in enumerate(sample.flows, 1):
        share = f"{100 * r.packets / sample.packets:.1f}%" if sample.packets else "-"
        big = "  ELEPHANT" if threshold is not None and r.bytes_per_s is not None and r.bytes_per_s >= threshold else ""
        lines.append(f"  {i:>3} {str(r.flow):<58} {r.packets:>10} {si(r.bytes):>10} {si(r.packets_per_s):>8} "
                     f"{si(r.bits_per_s):>8} {share:>6}{big}")
    if not sample.flows:
        lines.append("  (no flows counted)")
    return lines


def _print_flows(node: str, nf: str, sample) -> None:
    print("\n".join(_hh_table(node, nf, sample, None)))


def cmd_hh(args) -> int:
    from controller.queues import parse_rate
    from controller.stats import FlowMonitor, elephant_threshold

    threshold = None
    if args.elephant:
        if args.elephant.endswith("%"):
            if not args.link:
                raise InnetError("--elephant as a percentage needs --link (the link's rate)", hint="e.g. --link 1gbit")
            threshold = elephant_threshold(link_bps=parse_rate(args.link, "--link"),
                                           fraction=float(args.elephant[:-1]) / 100)
        else:
            threshold = elephant_threshold(bytes_per_s=parse_rate(args.elephant, "--elephant") / 8)
    monitor = FlowMonitor(_controller(), args.node, args.nf, args.top, args.by)
    if threshold is not None and not monitor.counts_bytes:
        raise InnetError(f"{args.nf} counts packets only, so it cannot flag elephants by rate",
                         hint="deploy cms for byte rates, or drop --elephant")
    monitor.start()
    return _show(f"innet hh {args.node} {args.nf}", args.interval, args.once,
                 lambda: _hh_table(args.node, args.nf, monitor.sample(), threshold), wait_first=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="innet", description="in-network offloading control plane")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the controller does")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="bring up a topology, route across its routers, ping, iperf3, tear down")
    p.add_argument("--topology", default="line3", help="e.g. line3, or mixed (a BMv2 switch and an XDP router)")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="run every router on this target "
                   "(default: as the topology says)")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("up", help="bring a topology up with NFRouter on its routers until Ctrl-C")
    p.add_argument("topology")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="run every router on this target")
    p.add_argument("--cli", action="store_true", help="open Mininet's CLI")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("topology", help="show a topology's addressing plan and routes")
    p.add_argument("topology")
    p.set_defaults(func=cmd_topology)
    p = sub.add_parser("nodes", help="the nodes of the running topology")
    p.set_defaults(func=cmd_nodes)
    p = sub.add_parser("nf", help="deploy or remove an NF on a node")
    p.add_argument("action", choices=["deploy", "remove"])
    p.add_argument("node")
    p.add_argument("nf")
    p.add_argument("--iface", action="append", default=[], help="interface (repeat; default: all)")
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE catalog parameter")
    p.set_defaults(func=cmd_nf)
    p = sub.add_parser("routes", help="list, add or delete a node's routes (fast and slow path)")
    p.add_argument("action", choices=["list", "add", "del"])
    p.add_argument("node")
    p.add_argument("prefix", nargs="?")
    p.add_argument("--dev")
    p.add_argument("--mac")
    p.add_argument("--via")
    p.add_argument("--local", action="store_true")
    p.set_defaults(func=cmd_routes)
    p = sub.add_parser("stats", help="an NF's statistic, e.g. innet stats r1 nfrouter verdicts")
    p.add_argument("node")
    p.add_argument("nf")
    p.add_argument("stat")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("prio", help="per-level queue statistics of the prio NF, refreshing")
    p.add_argument("node")
    p.add_argument("--interface", help="one interface (default: every interface prio runs on)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.set_defaults(func=cmd_prio)
    p = sub.add_parser("queues", help="set up a queueing NF's priority queues on an interface, e.g. "
                                      "innet queues r1 r1-eth1 --link-rate 20mbit --level 2mbit --level 4mbit:20mbit --level 10mbit")
    p.add_argument("node")
    p.add_argument("interface")
    p.add_argument("--nf", default="prio")
    p.add_argument("--link-rate", required=True, help="the link's rate, e.g. 20mbit")
    p.add_argument("--level", action="append", required=True,
                   help="RATE[:CEIL] of level 0, then 1, ... (repeat once per level; CEIL defaults to the link rate)")
    p.set_defaults(func=cmd_queues)
    p = sub.add_parser("hh", help="top-k heavy hitters of a cms or precision NF, per interval, refreshing")
    p.add_argument("node")
    p.add_argument("nf", help="cms or precision")
    p.add_argument("--top", type=int, default=10, help="how many flows (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per interval (a cms epoch)")
    p.add_argument("--once", action="store_true", help="one interval, then exit")
    p.add_argument("--by", choices=["packets", "bytes"], default="packets", help="rank flows by")
    p.add_argument("--elephant", help="flag flows at or above RATE bit/s (e.g. 10mbit), or P%% of --link")
    p.add_argument("--link", help="the link's rate, for --elephant P%%")
    p.set_defaults(func=cmd_hh)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InnetError as exc:
        print(f"innet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
