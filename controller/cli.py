"""`innet`: a thin command line over the controller and the testbed."""
from __future__ import annotations

import argparse
import logging
import sys

from controller.errors import InnetError


def _print_routes(routes, node: str) -> None:
    print(f"routes on {node}:")
    print(f"  {'prefix':<22} {'via':<18} {'interface':<10} {'next-hop MAC':<18} {'packets':>8} {'bytes':>10}")
    for r in routes:
        print(f"  {r.prefix:<22} {(r.via or ('local' if r.local else 'direct')):<18} {r.interface or '-':<10} "
              f"{r.mac or '-':<18} {r.packets:>8} {r.bytes:>10}")


def cmd_demo(args) -> int:
    from testbed.demo import run_demo
    return run_demo(args.topology, args.iperf_seconds, _print_routes)


def cmd_up(args) -> int:
    from controller.topology import load_topology
    from testbed.net import Testbed

    with Testbed(load_topology(args.topology)) as tb:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="innet", description="in-network offloading control plane")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the controller does")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="bring up a topology, route across XDP routers, ping, iperf3, tear down")
    p.add_argument("--topology", default="line3")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("up", help="bring a topology up with NFRouter on its routers until Ctrl-C")
    p.add_argument("topology")
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
