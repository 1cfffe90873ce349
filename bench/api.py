"""The REST API under load: 50 concurrent clients mixing reads and writes against one `innet api`.

    .venv/bin/python bench/api.py [--quick] [--clients 50] [--seconds 30]   (as root)

A real Mininet line3 (XDP routers) in a scope of its own and a real `innet api` process over
it. Each client is a thread with its own HTTP connection that, until the time is up, picks a
request at random: 70 % reads (a router's routes with their counters, /nodes, /status,
/topology, /services, /nfs, /operations) and 30 % writes on its router (r1, r2, r3 in turn):
add a batch of 1-4 new routes, add again a route it has (a replace: still one route), or
delete one of its routes. Each client owns its prefixes (10.<100 + client>.<n>.0/24), so
the routes its accepted requests imply are known exactly. At the end every router's routes
are read back: no 5xx, no transport error, no lost, extra or duplicated route, each one in
both the fast path and the kernel FIB. Latency, p50 and p99 of reads and of writes: the
server's own (its Server-Timing header: request in to answer out, in the API process) beside
what the clients saw (with the queueing of 50 Python threads in one process on top).
`--quick`: 10 s instead of 30.
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the API process the tests start

import httpx  # noqa: E402

from apiserver import running_api  # noqa: E402
from bench.harness import run, say, start  # noqa: E402
from controller.api.auth import read_token, token_path  # noqa: E402
from controller.scope import Scope  # noqa: E402
from controller.service import Controller  # noqa: E402
from controller.topology import Topology, load_topology  # noqa: E402

FIRST_OCTET = 100   # client i owns 10.(100 + i).n.0/24


@dataclass
class Client:
    number: int
    router: str
    route: dict                                        # interface, mac, via towards a neighbouring router
    has: set[str] = field(default_factory=set)         # prefixes its accepted requests leave on the router
    statuses: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"read": [], "write": []})   # the clients'
    server: dict[str, list[float]] = field(default_factory=lambda: {"read": [], "write": []})      # the server's
    errors: list[str] = field(default_factory=list)    # transport errors: outcome unknown
    next_prefix: int = 0

    def prefix(self) -> str:
        self.next_prefix += 1
        return f"10.{FIRST_OCTET + self.number}.{self.next_prefix - 1}.0/24"


def towards_router(topo: Topology, router: str) -> dict:
    """A route's egress on `router`: its interface to a neighbouring router, that router's address and MAC."""
    iface = next(i for i in topo.nodes[router].interfaces if topo.nodes[i.peer.node].role == "router")
    return {"interface": iface.name, "via": str(iface.peer.ipv4.ip), "mac": iface.peer.mac}


def work(client: Client, http: httpx.Client, deadline: float, rng: random.Random) -> None:
    routes = f"/nodes/{client.router}/routes"
    while time.monotonic() < deadline:
        if rng.random() < 0.7:
            kind = "read"
            path = rng.choice([routes, routes, "/nodes", "/status", "/topology", "/services", "/nfs",
                               "/operations?limit=10"])
            request = http.build_request("GET", path)
            applied = None
        elif client.has and rng.random() < 0.4:
            kind, gone = "write", rng.choice(sorted(client.has))
            request = http.build_request("DELETE", routes, json={"prefixes": [gone]})
            applied = lambda: client.has.discard(gone)   # noqa: E731
        else:
            kind = "write"
            again = client.has and rng.random() < 0.25
            if not again and client.next_prefix > 250:   # its prefixes are used up: delete instead
                continue
            batch = [rng.choice(sorted(client.has))] if again else \
                [client.prefix() for _ in range(min(rng.randint(1, 4), 256 - client.next_prefix))]
            request = http.build_request("POST", routes, json={"routes": [{"prefix": p, **client.route}
                                                                          for p in batch]})
            applied = lambda batch=batch: client.has.update(batch)   # noqa: E731
        started = time.perf_counter()
        try:
            answer = http.send(request)
        except httpx.HTTPError as exc:
            client.errors.append(f"{request.method} {request.url.path}: {type(exc).__name__}: {exc}")
            continue
        client.latencies[kind].append(time.perf_counter() - started)
        client.server[kind].append(server_ms(answer))
        client.statuses[answer.status_code] += 1
        if answer.status_code == 200 and applied:
            applied()


def server_ms(answer: httpx.Response) -> float:
    """The server's own time for the request, from its Server-Timing header (controller.api.metrics.Timing)."""
    return float(answer.headers["server-timing"].partition("dur=")[2]) / 1000


def quantiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2], values[min(len(values) - 1, int(0.99 * len(values)))]


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def owned(prefix: str, clients: int) -> bool:
    octets = prefix.split(".")
    return len(octets) == 4 and octets[0] == "10" and FIRST_OCTET <= int(octets[1]) < FIRST_OCTET + clients


def check_final_state(http: httpx.Client, clients: list[Client], topo: Topology) -> list[str]:
    """What the routers hold against what the accepted requests imply: the problems found."""
    problems = []
    for router in (r.name for r in topo.routers):
        listed = http.get(f"/nodes/{router}/routes").json()
        ours = [r for r in listed if owned(r["prefix"], len(clients))]
        held = [r["prefix"] for r in ours]
        expected = set().union(*(c.has for c in clients if c.router == router))
        if len(held) != len(set(held)):
            problems.append(f"{router}: duplicated routes {sorted(p for p, n in Counter(held).items() if n > 1)}")
        if lost := expected - set(held):
            problems.append(f"{router}: {len(lost)} accepted routes missing, e.g. {sorted(lost)[:3]}")
        if extra := set(held) - expected:
            problems.append(f"{router}: {len(extra)} routes no accepted request left, e.g. {sorted(extra)[:3]}")
        if unsynced := [r["prefix"] for r in ours if not (r["fast_path"] and r["kernel"])]:
            problems.append(f"{router}: {len(unsynced)} routes not in both paths, e.g. {unsynced[:3]}")
        say(f"  {router}: {len(expected)} routes expected, {len(held)} held ({len(set(held))} distinct), "
            f"all in fast path and kernel FIB: {not unsynced}")
    return problems


def bench(clients_n: int, seconds: float) -> bool:
    from testbed.net import Testbed   # Mininet only when the bench runs

    topo = load_topology("line3")
    scope = Scope(f"bench-api-{uuid.uuid4().hex[:6]}")
    tb = Testbed(topo, Controller(scope), progress=lambda m: None)
    try:
        tb.start()
        with running_api(scope.name) as url:
            say(f"[api] line3 up (scope {scope.name}), innet api at {url}")
            headers = {"Authorization": f"Bearer {read_token(token_path(scope))}"}
            routers = [r.name for r in topo.routers]
            clients = [Client(i, routers[i % len(routers)], towards_router(topo, routers[i % len(routers)]))
                       for i in range(clients_n)]
            deadline = time.monotonic() + seconds
            sessions = [httpx.Client(base_url=url, headers=headers, timeout=120) for _ in clients]
            threads = [threading.Thread(target=work, args=(c, s, deadline, random.Random(c.number)))
                       for c, s in zip(clients, sessions)]
            say(f"[api] {clients_n} clients for {seconds:.0f} s")
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            for s in sessions:
                s.close()

            statuses = sum((c.statuses for c in clients), Counter())
            errors = [e for c in clients for e in c.errors]
            count = {kind: sum(len(c.server[kind]) for c in clients) for kind in ("read", "write")}
            say(f"[api] {sum(count.values())} requests in {elapsed:.1f} s ({sum(count.values()) / elapsed:.0f}/s): "
                f"{count['read']} reads, {count['write']} writes; statuses {dict(sorted(statuses.items()))}; "
                f"transport errors {len(errors)}")
            for kind in ("read", "write"):
                if count[kind]:
                    s50, s99 = quantiles([x for c in clients for x in c.server[kind]])
                    c50, c99 = quantiles([x for c in clients for x in c.latencies[kind]])
                    say(f"  {kind}s: server p50 {ms(s50)}, p99 {ms(s99)}; the clients saw p50 {ms(c50)}, "
                        f"p99 {ms(c99)}")
            say("[api] final state against what the accepted requests imply")
            with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                problems = check_final_state(http, clients, topo)
            problems += [f"{n} answers {code}" for code, n in statuses.items() if code >= 500]
            problems += [f"transport errors: {errors[:3]}"] if errors else []
            accepted = statuses[200]
            say(f"[api] {accepted} requests accepted; {'OK' if not problems else 'PROBLEMS:'}")
            for p in problems:
                say(f"  {p}")
            return not problems
    finally:
        tb.stop()
        scope.drop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s instead of 30")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, help="how long the clients run (default 30, --quick 10)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (10 if args.quick else 30)
    if not start(__file__, argv, args.quick, "Mininet", f"{args.clients} clients for {seconds:.0f} s"):
        return 1
    outcome = {}
    code = run(lambda: outcome.update(ok=bench(args.clients, seconds)))
    return code or (0 if outcome.get("ok") else 1)


if __name__ == "__main__":
    sys.exit(main())
