"""`innet`: a thin command line over the controller (controller.service) and the testbed.

It lives beside the testbed, not in the library, because `up` and `demo` bring Mininet
testbeds up. The commands that the REST API serves too (nodes, status, operations, nf,
routes, stats, nfs, hh, estimate, service) call one operation of controller.api.resources
each, with the same name as the API's operation id (`nf deploy` is nf_deploy; `service
deploy`, also spelt `services deploy`, is services_deploy), and print its model (`--json`:
the API's JSON). With `--api URL` they call the same operation of a running API instead
(controller.api.client). `innet api` serves the API. `--scope NAME` picks the state scope
(controller.scope).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from controller.errors import InnetError


def _console():
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 200)   # piped: full lines, no wrapping


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if c in ("packets", "bytes", "routes") else "left")
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    _console().print(table)


def _json(value) -> None:
    print(json.dumps(_plain(value), indent=1, default=str))


def _plain(value):
    """API models (alone, in lists or dicts) as the JSON the API answers."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _print_routes(routes, node: str) -> None:
    rows = []
    for r in routes:
        paths = []
        if not r.fast_path:
            paths.append(f"fast path holds {r.fast_path_holds}")
        if r.kernel is False:
            paths.append(f"kernel FIB holds {r.kernel_holds}")
        rows.append([r.prefix, r.via or ("local" if r.local else "direct"), r.interface, r.mac, r.packets, r.bytes,
                     "; ".join(paths) or "ok"])
    _table(f"routes on {node}", ["prefix", "via", "interface", "next-hop MAC", "packets", "bytes", "paths"], rows)


def cmd_demo(args) -> int:
    from testbed.demo import run_demo
    return run_demo(args.topology, args.iperf_seconds, _print_routes, _print_flows, args.target)


class _Stop(Exception):
    """A signal asked the testbed to stop."""


def _stop_on_signals() -> None:
    def stop(signum, frame):
        raise _Stop(signal.Signals(signum).name)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def cmd_up(args) -> int:
    from controller.topology import load_topology
    from testbed.net import Testbed

    topo = load_topology(args.topology)
    _stop_on_signals()   # before the build: a SIGTERM while it builds tears down what is up
    tb = Testbed(topo.retarget(args.target) if args.target else topo, tap_links=args.tap_links)
    try:
        tb.start()
        print(f"[innet] {tb.topo.name} is up in scope {tb.controller.scope.name}; nodes: {', '.join(tb.topo.nodes)}. "
              f"Ctrl-C, or kill -TERM {os.getpid()}, tears it down.", flush=True)
        if args.cli:
            from mininet.cli import CLI
            CLI(tb.net)
        elif args.until_eof:
            sys.stdin.read()
        else:
            while True:
                signal.pause()
    except (KeyboardInterrupt, _Stop) as why:
        print(f"[innet] {why or 'interrupted'}: tearing {topo.name} down", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second signal must not cut the teardown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tb.stop()
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


def _params(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key] = int(value, 0) if sep else int("no value")
        except ValueError:
            raise InnetError(f"parameter {pair!r} is not KEY=INTEGER", hint="e.g. --param columns=4096") from None
    return out


def _controller(need_nodes: bool = True):
    """The scope's controller, after clearing what a killed testbed left and recovering what a
    killed command left half done."""
    from controller.service import Controller
    from testbed.net import clear_stale

    ctl = Controller(progress=lambda line: print(line, file=sys.stderr))
    if ctl.store.testbed() is not None and not ctl.scope.testbed_held():
        for line in clear_stale(ctl):
            print(f"[innet] {line}", file=sys.stderr)
    ctl.recover()
    if need_nodes and not ctl.nodes:
        raise InnetError(f"no running nodes are known in scope '{ctl.scope.name}'",
                         hint="bring a topology up first: innet up line3 (or pick its scope with --scope)")
    return ctl


def _operations(args, need_nodes: bool = True, flow_interval_s: float = 1.0):
    """What the command calls: the API at --api URL (controller.api.client), or the operations
    over this machine's controller (controller.api.resources, its flow intervals
    `flow_interval_s` long); both answer the same models."""
    if args.api:
        from controller.api.auth import read_token, token_path
        from controller.api.client import ApiClient
        from controller.scope import current

        token_file = args.api_token_file or token_path(current())
        return ApiClient(args.api, read_token(token_file))
    from controller.api.flows import FlowSamplers
    from controller.api.resources import Resources

    ctl = _controller(need_nodes)
    return Resources(ctl, FlowSamplers(ctl, flow_interval_s))


def _answer(args, value, show) -> int:
    """Print `value` (API models) as JSON with --json, else as `show(value)` prints it."""
    _json(value) if args.json else show(value)
    return 0


def cmd_nodes(args) -> int:
    return _answer(args, _operations(args).nodes(), lambda nodes: _table(
        "nodes", ["node", "role", "target", "namespace"], [[n.name, n.role, n.target, n.netns] for n in nodes]))


def _deployment_line(d) -> str:
    return f"{d.instance} ({d.nf}) on {d.node}: " + ", ".join(f"{i} ({d.modes.get(i, '?')})" for i in d.interfaces)


def cmd_nf(args) -> int:
    from controller.api.models import InstanceIn

    ops = _operations(args)
    if args.action == "list":
        nodes = [args.node] if args.node else [n.name for n in ops.nodes()]
        return _answer(args, {node: ops.nf_list(node) for node in nodes}, _print_instances)
    if not args.node or not args.nf:
        raise InnetError(f"innet nf {args.action} needs NODE and {'NF' if args.action == 'deploy' else 'INSTANCE'}",
                         hint=f"e.g. innet nf {args.action} r1 cms")
    if args.action == "show":
        return _answer(args, ops.nf_show(args.node, args.id or args.nf), _print_instance_state)
    if args.action == "remove":
        removed = ops.nf_remove(args.node, args.id or args.nf)
        _json(removed) if args.json else print(f"removed {removed.instance} from {removed.node}")
        return 0
    if args.action == "deploy":
        d = ops.nf_deploy(args.node, InstanceIn(nf=args.nf, id=args.id, interfaces=args.iface or None,
                                                params=_params(args.param), target=args.target))
    else:   # set: NF names the instance (its id)
        if not args.param:
            raise InnetError("innet nf set needs --param KEY=VALUE", hint=f"e.g. innet nf set {args.node} "
                                                                           f"{args.nf} --param columns=4096")
        d = ops.nf_set(args.node, args.id or args.nf, _params(args.param))
    _json(d) if args.json else print(_deployment_line(d))
    return 0


def _print_instances(instances: dict) -> None:
    """Instances (InstanceOut) by node."""
    rows = [[node, i.id, i.nf, i.target, ", ".join(f"{x} ({i.modes.get(x, '-')})" for x in i.interfaces),
             " ".join(f"{k}={v}" for k, v in i.params.items()), i.health]
            for node, listed in instances.items() for i in listed]
    _table("NF instances", ["node", "instance", "nf", "target", "interfaces", "parameters", "health"], rows)


def _print_instance_state(shown) -> None:
    """An instance (InstanceShown) and its state memory, one line per map."""
    print(f"{shown.id} ({shown.nf}, {shown.target}) on {shown.node}: "
          + ", ".join(f"{i} ({shown.modes.get(i, '-')})" for i in shown.interfaces)
          + f"; {' '.join(f'{k}={v}' for k, v in shown.params.items()) or 'no parameters'}; health {shown.health}")
    width = max((len(m.name) for m in shown.maps), default=0)
    for m in shown.maps:
        print(f"  {m.name:<{width}} {m.entries:>9} x {m.entry_bytes:>5} B = {m.bytes:>11} B")
    print(f"  {'state memory':<{width}} {shown.state_bytes:>33} B ({shown.state_bytes / 1024:.1f} KiB)")


def cmd_status(args) -> int:
    return _answer(args, _operations(args, need_nodes=False).status(), _print_status)


def _print_status(status) -> None:
    tb = status.testbed
    console = _console()
    console.print(f"scope [bold]{status.scope}[/bold] ({status.database})")
    if tb:
        console.print(f"testbed {tb['topology']} (pid {tb['pid']}, "
                      f"{'running' if status.testbed_running else 'NOT running'})")
    else:
        console.print("no testbed is up in this scope")
    _table("nodes", ["node", "role", "target", "instances", "routes", "health"],
           [[n.name, n.role, n.target, len(n.instances), n.routes,
             n.problem or ("ok" if all(i.health == "ok" for i in n.instances) else "see innet nf list")]
            for n in status.nodes])
    if status.nodes:
        _print_instances({n.name: n.instances for n in status.nodes})
    for op in status.pending_operations:
        console.print(f"pending operation {op.id}: {op.kind} {op.subject} on {op.node} (pid {op.pid})")


def cmd_operations(args) -> int:
    return _answer(args, _operations(args, need_nodes=False).operations(args.state, args.limit), lambda ops: _table(
        "operations, newest first", ["id", "kind", "node", "subject", "state", "pid", "started", "seconds", "error"],
        [[o.id, o.kind, o.node, o.subject, o.state, o.pid, time.strftime("%H:%M:%S", time.localtime(o.started)),
          f"{o.finished - o.started:.3f}" if o.finished else "running", o.error] for o in ops]))


def cmd_nfs(args) -> int:
    return _answer(args, _operations(args, need_nodes=False).nfs(), lambda nfs: _table(
        "NF catalog", ["nf", "targets", "parameters", "tables", "statistics"],
        [[nf.name, ", ".join(nf.targets), " ".join(f"{p.name}={p.default}" for p in nf.parameters),
          ", ".join(t.name for t in nf.tables), ", ".join(s.name for s in nf.stats)] for nf in nfs]))


def cmd_api(args) -> int:
    import uvicorn

    from controller.api.app import create_app
    from controller.api.auth import check_bind, server_token

    check_bind(args.host, args.token_file)
    watch = []
    for item in args.watch:
        node, sep, instance = item.partition("/")
        if not sep or not node or not instance:
            raise InnetError(f"--watch {item!r} is not NODE/INSTANCE", hint="e.g. --watch r1/cms")
        watch.append((node, instance))
    ctl = _controller(need_nodes=False)
    token, path = server_token(ctl.scope, args.token_file)
    app = create_app(ctl, token, flow_interval_s=args.flow_interval, watch=watch)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"[innet] API of scope {ctl.scope.name} at http://{host}:{args.port} (docs at /docs); bearer token in "
          f"{path}. Ctrl-C or kill -TERM {os.getpid()} stops it.", flush=True)
    _stop_on_signals()   # uvicorn shuts down gracefully, then raises the signal again: it ends here
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    except (KeyboardInterrupt, _Stop) as why:
        print(f"[innet] {why or 'interrupted'}: the API stopped", flush=True)
    return 0


def cmd_reconcile(args) -> int:
    ctl = _controller()
    report = ctl.reconcile(args.node or None)
    if args.json:
        _json(report)
    else:
        print("\n".join(report) if report else "the data plane already matches the desired state")
    return 0


def cmd_routes(args) -> int:
    from controller.routes import Route, parse_routes

    ops = _operations(args)
    if args.action == "add":
        if args.file:
            text = sys.stdin.read() if args.file == "-" else _read_file(args.file)
            batch = parse_routes(text, args.file)
        elif args.prefix:
            batch = [Route(args.prefix, args.dev, args.mac, args.via, args.local)]
        else:
            raise InnetError("innet routes add needs a PREFIX or --file FILE")
        started = time.perf_counter()
        ops.routes_add(args.node, batch, args.instance)
        if len(batch) > 1:
            print(f"{len(batch)} routes written to {args.node} in {time.perf_counter() - started:.2f} s",
                  file=sys.stderr)
        if args.file:
            return 0
    elif args.action == "del":
        prefixes = parse_prefixes(_read_file(args.file)) if args.file else [args.prefix]
        if prefixes == [None]:
            raise InnetError("innet routes del needs a PREFIX or --file FILE")
        deleted = ops.routes_del(args.node, prefixes, args.instance)
        if args.file:
            print(f"{deleted.routes} routes deleted from {args.node}", file=sys.stderr)
            return 0
    return _answer(args, ops.routes_list(args.node, args.instance), lambda listed: _print_routes(listed, args.node))


def parse_prefixes(text: str) -> list[str]:
    """The first word of each line (a routes file works as is)."""
    return [line.split("#", 1)[0].split()[0] for line in text.splitlines() if line.split("#", 1)[0].split()]


def _read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise InnetError(f"cannot read {path}: {exc.strerror}") from None


def cmd_service(args) -> int:
    """Service chains from descriptors (controller.sfc through controller.api.resources): on this
    machine's testbed, or with --api through a running API (the descriptor file is read here)."""
    from controller.nsd.binding import parse_bindings

    nf_map = {}
    for pair in args.nf:
        key, equals, nf = pair.partition("=")
        if not equals or not key or not nf:
            raise InnetError(f"--nf {pair}: expected ID=NF", hint="e.g. --nf iperf3-client=rxcount")
        nf_map[key] = nf
    if args.topology and args.action != "plan":
        raise InnetError(f"--topology is for innet service plan; {args.action} acts on the running testbed")
    if args.action == "plan":
        if not args.name:
            raise InnetError("innet service plan needs a descriptor FILE",
                             hint="e.g. innet service plan nsds/ping-demo.json --bind src=h1 --bind dst=h2")
        document, bind = _read_file(args.name), parse_bindings(args.bind)
        if args.topology:
            from controller.sfc import plan_descriptor
            from controller.topology import load_topology
            planned = plan_descriptor(document, load_topology(args.topology), bind, nf_map, source=args.name)
        elif args.api:
            raise InnetError("innet service plan places on this machine's testbed: the API has no plan operation",
                             hint="run it without --api where the testbed runs, or plan on a topology: "
                                  "--topology line3")
        else:
            from controller.sfc import ChainService
            planned = ChainService(_controller(need_nodes=False)).preview(document, bind, nf_map, source=args.name)
        return _answer(args, planned, _print_service_plan)
    ops = _operations(args)
    if args.action == "list":
        return _answer(args, ops.services_list(), lambda services: _table(
            "services", ["service", "graphs", "routers", "NF instances", "rules"],
            [[s.key, ", ".join(f"{x.graph} (SPI {x.spi})" for x in s.paths), " ".join(s.routers),
              " ".join(i.id for i in s.instances) or "-", s.rules] for s in services]))
    if not args.name:
        what = "a descriptor FILE" if args.action == "deploy" else "NAME"
        raise InnetError(f"innet service {args.action} needs {what}", hint=f"e.g. innet service {args.action} "
                         f"{'nsds/ping-demo.json --bind src=h1 --bind dst=h2' if args.action == 'deploy' else 'ping-demo'}")
    if args.action == "deploy":
        started = time.perf_counter()
        shown = ops.services_deploy(_read_file(args.name), parse_bindings(args.bind), nf_map, source=args.name)
        what = {"unchanged": "unchanged (already deployed)", "updated": "updated", "created": "deployed"}[shown.change]
        print(f"service {shown.key} {what}: {len(shown.instances)} NF instances, {shown.rules} rules on "
              f"{', '.join(shown.routers)} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    elif args.action == "delete":
        deleted = ops.services_delete(args.name)
        _json(deleted) if args.json else print(f"service {deleted.key} deleted", file=sys.stderr)
        return 0
    else:
        shown = ops.services_show(args.name)
    return _answer(args, shown, _print_service)


def _print_service(shown) -> None:
    """A service (ServiceOut): its paths, NF instances and hops with counters, and what differs from
    the desired state."""
    console = _console()
    console.print(f"service [bold]{shown.name}[/bold] ({shown.format})")
    for path in shown.paths:
        hops = " -> ".join(f"{i} @{n}" for i, n in path.hops) or "no NF"
        console.print(f"  {path.graph}: SPI {path.spi}, routers {' -> '.join(path.routers)}; {hops}")
    _table("NF instances", ["instance", "NF", "node", "slot", "health", "packets"],
           [[i.id, i.nf, i.node, i.slot, i.health, i.packets] for i in shown.instances])
    _table("hops", ["node", "SPI", "SI", "action", "parameters", "packets", "bytes"],
           [[h.node, h.spi, h.si, h.action, " ".join(f"{k}={v}" for k, v in h.params.items()), h.packets, h.bytes]
            for h in shown.hops])
    for problem in shown.problems:
        console.print(f"  [bold]not as desired[/bold]: {problem} (innet reconcile repairs it)")


def _print_service_plan(planned: dict) -> None:
    """A plan (controller.sfc.plan_summary): placement, paths with delay against budget, rules."""
    console = _console()
    change = {"created": "a deploy would create it", "updated": "a deploy would update the deployed one",
              "unchanged": "deployed as planned: a deploy changes nothing"}.get(planned.get("change"))
    console.print(f"service [bold]{planned['name']}[/bold] ({planned['format']})" + (f": {change}" if change else ""))
    _table("NF instances", ["instance", "NF", "node", "target", "slot", "parameters"],
           [[i["id"], i["nf"], i["node"], i["target"], i["slot"],
             " ".join(f"{k}={v}" for k, v in i["params"].items()) or "-"] for i in planned["instances"]])
    for path in planned["paths"]:
        hops = " -> ".join(f"{i} @{n}" for i, n in path["hops"]) or "no NF"
        budget = "no budget" if path["budget_ms"] is None else f"budget {path['budget_ms']:g} ms"
        console.print(f"  {path['graph']} (SPI {path['spi']}): {' – '.join(path['path'])}; {hops}; delay "
                      f"{path['delay_ms']:.4g} ms (links {path['links_ms']:.4g} + routers "
                      f"{path['processing_ms']:.4g}), {budget}")
    nodes = list(dict.fromkeys(r["node"] for r in planned["rules"]))   # per node, each in path order
    _table("rules", ["node", "table", "match", "action", "parameters"],
           [[r["node"], r["table"], " ".join(f"{k}={v}" for k, v in r["match"].items()), r["action"],
             " ".join(f"{k}={v}" for k, v in r["params"].items())]
            for r in sorted(planned["rules"], key=lambda r: nodes.index(r["node"]))])


def cmd_stats(args) -> int:
    return _answer(args, _operations(args).stats(args.node, args.nf, args.stat), lambda values: _table(
        f"{args.nf}.{args.stat} on {args.node}", ["name", "value"], [[k, v] for k, v in values.items()]))


def _queue_rows(ctl, node: str, instance: str, interfaces: list[str], last: dict, interval: float) -> list[str]:
    from controller.errors import QueueError

    regs = ctl.read_registers(node, instance, "levels")
    lines = []
    for ifname in interfaces:
        try:
            stats = ctl.queue_stats(node, instance, ifname)
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


def _show(title: str, interval: float, once: bool, lines, paced: bool = False) -> int:
    """Print `lines()` once, or redraw it every `interval` seconds until Ctrl-C (only on a
    terminal: piped, it prints once); `paced` when `lines()` itself waits for the next interval."""
    once = once or not sys.stdout.isatty()
    try:
        while True:
            text = "\n".join(lines())
            if once:
                print(text)
                return 0
            print("\033[H\033[J" + f"{title}, every {interval:g} s (Ctrl-C stops)\n" + text, flush=True)
            if not paced:
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def cmd_prio(args) -> int:
    ctl = _controller()
    deployment = ctl.deployment(args.node, args.id)
    if deployment is None:
        raise InnetError(f"prio is not deployed on {args.node}", hint=f"innet nf deploy {args.node} prio --iface IFACE")
    interfaces = [args.interface] if args.interface else list(deployment.interfaces)
    last: dict = {}
    return _show(f"innet prio {args.node}", args.interval, args.once,
                 lambda: _queue_rows(ctl, args.node, args.id, interfaces, last, args.interval))


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


def _hh_table(top, threshold: float | None) -> list[str]:
    """The lines of one interval's top flows (a TopFlows), elephants flagged at `threshold` bytes/s."""
    def si(value) -> str:
        if value is None:
            return "-"
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= scale:
                return f"{value / scale:.1f}{unit}"
        return f"{value:.0f}"

    total = ""
    if top.packets is not None:
        total = f", {top.packets} packets, {si(top.bytes * 8 / top.duration)}bit/s in all"
    lines = [f"{top.instance} on {top.node}: top {len(top.flows)} flows of the last {top.duration:.2f} s{total}",
             f"  {'#':>3} {'flow':<58} {'packets':>10} {'bytes':>10} {'pkt/s':>8} {'bit/s':>8} {'share':>6}"]
    for i, r in enumerate(top.flows, 1):
        share = f"{100 * r.packets / top.packets:.1f}%" if top.packets else "-"
        big = "  ELEPHANT" if threshold is not None and r.bytes_per_s is not None and r.bytes_per_s >= threshold else ""
        bits = None if r.bytes_per_s is None else 8 * r.bytes_per_s
        lines.append(f"  {i:>3} {r.flow:<58} {r.packets:>10} {si(r.bytes):>10} {si(r.packets_per_s):>8} "
                     f"{si(bits):>8} {share:>6}{big}")
    if not top.flows:
        lines.append("  (no flows counted)")
    return lines


def _print_flows(node: str, nf: str, sample) -> None:
    """A FlowMonitor's sample, as innet hh prints an interval."""
    from controller.api.models import TopFlows

    print("\n".join(_hh_table(TopFlows.of(node, nf, 1, time.time(), sample, sample.flows), None)))


def cmd_hh(args) -> int:
    from controller.queues import parse_rate
    from controller.stats import elephant_threshold

    threshold = None
    if args.elephant:
        if args.elephant.endswith("%"):
            if not args.link:
                raise InnetError("--elephant as a percentage needs --link (the link's rate)", hint="e.g. --link 1gbit")
            threshold = elephant_threshold(link_bps=parse_rate(args.link, "--link"),
                                           fraction=float(args.elephant[:-1]) / 100)
        else:
            threshold = elephant_threshold(bytes_per_s=parse_rate(args.elephant, "--elephant") / 8)
    ops = _operations(args, flow_interval_s=args.interval)
    shown = None

    def next_interval() -> list[str]:
        nonlocal shown
        top = ops.hh(args.node, args.nf, args.top, args.by, after=shown)
        shown = top.interval
        if threshold is not None and any(f.bytes_per_s is None for f in top.flows):
            raise InnetError(f"{args.nf} counts packets only, so it cannot flag elephants by rate",
                             hint="deploy cms for byte rates, or drop --elephant")
        return [json.dumps(_plain(top))] if args.json else _hh_table(top, threshold)
    try:
        return _show(f"innet hh {args.node} {args.nf}", args.interval, args.once, next_interval, paced=True)
    finally:
        if not args.api:   # this process owned the instance's intervals while it ran
            ops.samplers.close()


def _flow_arg(text: str) -> tuple[str, str, int, int, int]:
    """--flow SRC,DST,PROTO or SRC,DST,SPORT,DPORT,PROTO -> (src, dst, sport, dport, proto); PROTO
    a number or a name (udp, tcp, icmp, ...)."""
    from controller.stats import PROTO_NAMES

    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 5):
        raise InnetError(f"--flow {text!r} is not SRC,DST,PROTO or SRC,DST,SPORT,DPORT,PROTO",
                         hint="e.g. --flow 10.0.1.1,10.0.3.2,40000,5001,udp (the data plane keys the protocol "
                              "in every key mode)")
    src, dst, *ports, proto = parts
    numbers = {name: number for number, name in PROTO_NAMES.items()}
    if proto.lower() not in numbers and not proto.isdigit():
        raise InnetError(f"--flow {text!r}: protocol {proto!r} is neither a number nor one of "
                         f"{', '.join(numbers)}")
    for port in ports:
        if not port.isdigit():
            raise InnetError(f"--flow {text!r}: port {port!r} is not a number")
    sport, dport = (int(p) for p in ports) if ports else (0, 0)
    return src, dst, sport, dport, numbers.get(proto.lower()) or int(proto)


def cmd_estimate(args) -> int:
    src, dst, sport, dport, proto = _flow_arg(args.flow)
    estimate = _operations(args).estimate(args.node, args.nf, src, dst, proto, sport, dport, args.bank)
    return _answer(args, estimate, lambda e: print(
        f"{e.instance} on {e.node}, bank {e.bank}: {e.flow}: at most {e.packets} packets"
        + ("" if e.bytes is None else f", {e.bytes} bytes")))


def cmd_te(args) -> int:
    """The path allocator's closed loop (controller.te.loop): run it, show its overrides and
    decisions, clear them, or demo it on a fresh diamond."""
    if args.api and args.action != "status":
        raise InnetError(f"innet te {args.action} runs on this machine: the API serves only the loop's status",
                         hint="run it where the testbed runs, without --api")
    if args.action == "demo":
        from testbed.te_demo import run_demo
        return run_demo(args.topology, args.target, args.seconds, args.plot or None, args.bw)
    if args.action == "status":
        return _answer(args, _operations(args, need_nodes=False).te_status(args.limit), _print_paths)
    from controller.te.loop import clear_overrides
    ctl = _controller()
    if args.action == "clear":
        removed = clear_overrides(ctl)
        print(f"removed {len(removed)} path override(s); those flows take their routed paths again", file=sys.stderr)
        return 0
    return _run_loop(ctl, args)


def _run_loop(ctl, args) -> int:
    import threading

    from controller.te.elephants import parse_threshold
    from controller.te.loop import Monitor, PathLoop

    monitors = None
    if args.monitor:
        monitors = []
        for item in args.monitor:
            node, slash, instance = item.partition("/")
            if not slash or not node or not instance:
                raise InnetError(f"--monitor {item}: expected NODE/INSTANCE", hint="e.g. --monitor r1/cms")
            monitors.append(Monitor(node, instance))
    log = lambda line: print(f"[te] {line}", flush=True)   # noqa: E731
    loop = PathLoop(ctl, monitors, parse_threshold(args.elephant), args.allocator, args.k, args.min_gain,
                    act=not args.dry_run, progress=log)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    if args.duration:
        threading.Timer(args.duration, stop.set).start()
    log(f"watching {', '.join(map(str, loop.monitors))} every {args.interval:g} s; elephants: "
        f"{loop.policy.describe()}; allocator {args.allocator}{' (dry run)' if args.dry_run else ''}; "
        "Ctrl-C or SIGTERM stops (overrides stay: innet te clear removes them)")
    for line in loop.start():
        log(line)
    try:
        loop.run(args.interval, stop, args.epochs)
    except KeyboardInterrupt:
        pass
    log(f"stopped after {loop.epoch} epochs; {len(ctl.store.path_overrides())} override(s) in place")
    return 0


def _print_paths(view) -> None:
    import datetime

    _table("path overrides", ["flow", "path", "pinned on", "since"],
           [[o.shown, " > ".join(o.path), " ".join(p.node for p in o.pins) + (f" (+{o.retiring} retiring)"
             if o.retiring else ""), datetime.datetime.fromtimestamp(o.since).strftime("%H:%M:%S")]
            for o in view.overrides])
    _table("decisions (newest first)", ["at", "decision"],
           [[datetime.datetime.fromtimestamp(d.at).strftime("%H:%M:%S.%f")[:-3], d.summary] for d in view.decisions])


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `innet ... | head` ends quietly
    parser = argparse.ArgumentParser(prog="innet", description="in-network offloading control plane")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the controller does")
    parser.add_argument("--scope", help="state scope: its own database, pins and switches "
                                        "(default $INNET_SCOPE, else 'default')")
    parser.add_argument("--api", metavar="URL", help="act through the innet API at URL (e.g. http://127.0.0.1:8181) "
                                                     "instead of on this machine")
    parser.add_argument("--token-file", dest="api_token_file", metavar="FILE",
                        help="with --api: the API's bearer token (default: the scope's, as innet api made it)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, json_output: bool = False, local_only: bool = False,
                aliases: list[str] = ()):
        p = sub.add_parser(name, help=help, aliases=list(aliases))
        p.set_defaults(func=func, local_only=local_only)
        if json_output:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = command("demo", cmd_demo, "bring up a topology, route across its routers, ping, iperf3, tear down",
                local_only=True)
    p.add_argument("--topology", default="line3", help="e.g. line3, or mixed (a BMv2 switch and an XDP router)")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="run every router on this target "
                   "(default: as the topology says)")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p = command("up", cmd_up, "bring a topology up with NFRouter on its routers until Ctrl-C, SIGTERM or SIGHUP",
                local_only=True)
    p.add_argument("topology")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="run every router on this target")
    p.add_argument("--cli", action="store_true", help="open Mininet's CLI")
    p.add_argument("--until-eof", action="store_true", help="also stop at the end of standard input")
    p.add_argument("--tap-links", action="store_true", help="carry every link between routers through a link "
                   "emulator (a bridge, node link<N>), so a capture on its ports sees what the routers send each other")
    p = command("topology", cmd_topology, "show a topology's addressing plan and routes")
    p.add_argument("topology")
    command("nodes", cmd_nodes, "the nodes of the running topology", json_output=True)
    command("status", cmd_status, "testbed, nodes, NF instances: desired beside actual", json_output=True)
    p = command("operations", cmd_operations, "the scope's latest operations (changes), newest first",
                json_output=True)
    p.add_argument("--state", choices=["pending", "done", "failed", "recovered"])
    p.add_argument("--limit", type=int, default=20)
    command("nfs", cmd_nfs, "the NF catalog: parameters, tables, statistics", json_output=True)
    p = command("api", cmd_api, "serve the REST API (and /metrics) of the scope until Ctrl-C or SIGTERM",
                local_only=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other than "
                                                      "loopback needs --token-file)")
    p.add_argument("--port", type=int, default=8181)
    p.add_argument("--token-file", help="the bearer token clients must send (default: the scope's, made on the "
                                        "first start, readable by root only)")
    p.add_argument("--flow-interval", type=float, default=1.0, help="seconds per interval of /flows/top (a cms "
                                                                    "epoch)")
    p.add_argument("--watch", action="append", default=[], metavar="NODE/INSTANCE",
                   help="sample this heavy-hitter instance from the start, for /metrics (repeat)")
    p = command("reconcile", cmd_reconcile, "bring the data plane to the desired state; says what it changed",
                json_output=True, local_only=True)
    p.add_argument("node", nargs="*", help="only these nodes (default: all)")
    p = command("nf", cmd_nf, "list, show (with the state memory of every map), deploy, set (change parameters "
                "of) or remove NF instances", json_output=True)
    p.add_argument("action", choices=["list", "show", "deploy", "set", "remove"])
    p.add_argument("node", nargs="?")
    p.add_argument("nf", nargs="?", help="deploy: the NF type; show, set, remove: the instance id")
    p.add_argument("--id", help="the instance id (default: the NF's name)")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="the target (default: the node's)")
    p.add_argument("--iface", action="append", default=[], help="interface (repeat; default: all)")
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE catalog parameter; a changed "
                   "value redeploys the instance and refills its entries (deploy: the others take defaults; "
                   "set: they keep their values)")
    p = command("routes", cmd_routes, "list, add or delete a node's routes (fast and slow path)", json_output=True)
    p.add_argument("action", choices=["list", "add", "del"])
    p.add_argument("node")
    p.add_argument("prefix", nargs="?")
    p.add_argument("--dev")
    p.add_argument("--mac")
    p.add_argument("--via")
    p.add_argument("--local", action="store_true")
    p.add_argument("--file", help="add/del many routes in one batch: lines of PREFIX [via GW] dev IFACE mac MAC, "
                                  "or PREFIX local ('-': standard input)")
    p.add_argument("--instance", default="nfrouter", help="the router instance (default nfrouter)")
    p = command("service", cmd_service, "service chains from descriptors (Smart-Orchestrator JSON, DESIRE6G lnsd, "
                "ETSI SOL006): plan, deploy, list, show, delete", json_output=True, aliases=["services"])
    p.add_argument("action", choices=["plan", "deploy", "list", "show", "delete"])
    p.add_argument("name", nargs="?", help="plan, deploy: the descriptor file; show, delete: the service")
    p.add_argument("--bind", action="append", default=[], metavar="NAME=HOST",
                   help="run endpoint NAME on testbed host HOST (repeat)")
    p.add_argument("--nf", action="append", default=[], metavar="ID=NF",
                   help="the descriptor's NF/VNFD id ID is catalog NF NF (repeat)")
    p.add_argument("--topology", help="plan: place on this topology (name or file) with nothing else deployed, "
                                      "instead of on the running testbed")
    p = command("stats", cmd_stats, "an NF instance's statistic, e.g. innet stats r1 nfrouter verdicts",
                json_output=True)
    p.add_argument("node")
    p.add_argument("nf", help="the instance id")
    p.add_argument("stat")
    p = command("prio", cmd_prio, "per-level queue statistics of a prio instance, refreshing on a terminal",
                local_only=True)
    p.add_argument("node")
    p.add_argument("--id", default="prio", help="the prio instance (default prio)")
    p.add_argument("--interface", help="one interface (default: every interface prio runs on)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p = command("queues", cmd_queues, "set up a queueing NF's priority queues on an interface, e.g. "
                "innet queues r1 r1-eth1 --link-rate 20mbit --level 2mbit --level 4mbit:20mbit --level 10mbit",
                local_only=True)
    p.add_argument("node")
    p.add_argument("interface")
    p.add_argument("--nf", default="prio", help="the instance id (default prio)")
    p.add_argument("--link-rate", required=True, help="the link's rate, e.g. 20mbit")
    p.add_argument("--level", action="append", required=True,
                   help="RATE[:CEIL] of level 0, then 1, ... (repeat once per level; CEIL defaults to the link rate)")
    p = command("hh", cmd_hh, "top-k heavy hitters of a cms or precision instance, per interval, refreshing",
                json_output=True)
    p.add_argument("node")
    p.add_argument("nf", help="the instance id (cms or precision by default)")
    p.add_argument("--top", type=int, default=10, help="how many flows (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per interval (a cms epoch; with --api, "
                                                               "the API's --flow-interval rules)")
    p.add_argument("--once", action="store_true", help="one interval, then exit")
    p.add_argument("--by", choices=["packets", "bytes"], default="packets", help="rank flows by")
    p.add_argument("--elephant", help="flag flows at or above RATE bit/s (e.g. 10mbit), or P%% of --link")
    p.add_argument("--link", help="the link's rate, for --elephant P%%")
    p = command("estimate", cmd_estimate, "a cms instance's Count-Min estimate of one flow, any flow key (a read: "
                "no epoch is closed)", json_output=True)
    p.add_argument("node")
    p.add_argument("nf", help="the cms instance id")
    p.add_argument("--flow", required=True, metavar="SRC,DST[,SPORT,DPORT],PROTO",
                   help="the flow key; PROTO a number or a name (udp, tcp, icmp, ...)")
    p.add_argument("--bank", type=int, choices=[0, 1], help="the bank to read (default: the active one, the epoch "
                                                            "so far)")
    p = command("te", cmd_te, "the path allocator's closed loop: run it, its status (overrides, decisions), "
                "clear its overrides, or a demo on diamond", json_output=True)
    p.add_argument("action", choices=["run", "status", "clear", "demo"])
    p.add_argument("--monitor", action="append", default=[], metavar="NODE/INSTANCE",
                   help="run: read flows from this heavy-hitter instance (repeat; default: every cms or "
                        "precision on a router)")
    p.add_argument("--interval", type=float, default=0.25, help="run: seconds per epoch (default 0.25)")
    p.add_argument("--elephant", default="10%", help="run: a flow is an elephant at this rate (e.g. 20mbit) or "
                                                     "share of its path's bottleneck (default 10%%)")
    p.add_argument("--allocator", default="local-search",
                   choices=["random", "subset-sum", "global-first-fit", "brute-force", "local-search"])
    p.add_argument("--k", type=int, default=3, help="run: candidate paths per flow besides its own (default 3)")
    p.add_argument("--min-gain", type=float, default=0.05, help="run: move flows only if the objective gains this "
                                                                "share (default 0.05)")
    p.add_argument("--dry-run", action="store_true", help="run: decide and log, install nothing")
    p.add_argument("--epochs", type=int, help="run: stop after this many epochs")
    p.add_argument("--duration", type=float, help="run: stop after this many seconds")
    p.add_argument("--limit", type=int, default=20, help="status: how many decisions (default 20)")
    p.add_argument("--topology", default="diamond", help="demo: the topology (default diamond)")
    p.add_argument("--target", choices=["xdp", "bmv2"], help="demo: run every router on this target")
    p.add_argument("--seconds", type=float, default=8.0, help="demo: seconds per run (default 8)")
    p.add_argument("--plot", default="te-demo.png", help="demo: the PNG to write ('' for none)")
    p.add_argument("--bw", type=float, help="demo: every link with a bandwidth gets this one, Mbit/s (default: the "
                                            "topology's; 10 on BMv2, which forwards less than diamond's 100)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.scope:
            from controller.scope import check_name
            os.environ["INNET_SCOPE"] = check_name(args.scope)   # child processes (probes) inherit it
        if args.api and args.local_only:
            raise InnetError(f"innet {args.command} acts on this machine only: the API has no such operation",
                             hint="run it without --api, on the machine the testbed runs on")
        return args.func(args)
    except InnetError as exc:
        print(f"innet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
