"""/metrics: the data plane's counters in Prometheus' exposition format, read at each scrape.

Series (every name starts innet_):
- route_packets_total, route_bytes_total {node, instance, prefix}: fast-path counters of a
  router instance's routes, the busiest ROUTE_SERIES per instance (a table holds up to
  262,144: one series each would swamp Prometheus); route_in_sync {..., path} is 1 where the
  fast path or the kernel FIB holds the route as desired; routes and routes_out_of_sync
  {node, instance} count them all.
- nf_counter_total {node, instance, nf, stat, counter}: every `counters` statistic of the
  catalog, e.g. nfrouter's verdicts (stat="verdicts", counter="forwarded").
- queue_{packets,bytes,drops}_total, queue_backlog_{packets,bytes} {node, instance,
  interface, level}: the queues of queueing instances (prio) where they are configured.
- flow_packets_per_second, flow_bytes_per_second {node, instance, rank, flow}: the top
  FLOW_SERIES flows of each watched instance's latest interval (controller.api.flows):
  ranks bound the series, at most FLOW_SERIES per watched instance.
- chain_hop_packets_total, chain_hop_bytes_total {service, graph, node, spi, si, action}: the
  forwarder counters of every (SPI, SI) hop of every service chain (controller.sfc), as
  GET /services/{id} shows them.
- instance_read_ok {node, instance}: 0 where this scrape could not read the instance.
- operation_seconds {operation, code}: a histogram of the API's operations, request to
  response (operation: the OpenAPI operation id, such as nf_deploy or routes_add).
"""
from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.flows import FlowSamplers
from controller.chains import FORWARDER, Plan
from controller.dataplane import nf_spec
from controller.errors import InnetError, QueueError
from controller.routes import ROUTER, RouteService

log = logging.getLogger("innet.api")
ROUTE_SERIES = 1000
FLOW_SERIES = 10
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)


class _Families:
    """The families of one scrape, filled instance by instance."""

    def __init__(self):
        node_inst = ["node", "instance"]
        self.route_packets = CounterMetricFamily("innet_route_packets", "packets that matched the route in the fast "
                                                 "path", labels=[*node_inst, "prefix"])
        self.route_bytes = CounterMetricFamily("innet_route_bytes", "bytes that matched the route in the fast path",
                                               labels=[*node_inst, "prefix"])
        self.route_in_sync = GaugeMetricFamily("innet_route_in_sync", "1 where the path (fast or kernel) holds the "
                                               "route as desired", labels=[*node_inst, "prefix", "path"])
        self.routes = GaugeMetricFamily("innet_routes", "routes of the router instance, desired or held by a path",
                                        labels=node_inst)
        self.routes_out_of_sync = GaugeMetricFamily("innet_routes_out_of_sync", "routes that a path does not hold "
                                                    "as desired", labels=node_inst)
        self.nf_counter = CounterMetricFamily("innet_nf_counter", "an NF instance's named counters (nfrouter "
                                              "verdicts, rxcount rx, ...)",
                                              labels=[*node_inst, "nf", "stat", "counter"])
        queue = [*node_inst, "interface", "level"]
        self.queue_packets = CounterMetricFamily("innet_queue_packets", "packets sent from the queue", labels=queue)
        self.queue_bytes = CounterMetricFamily("innet_queue_bytes", "bytes sent from the queue", labels=queue)
        self.queue_drops = CounterMetricFamily("innet_queue_drops", "packets the queue dropped", labels=queue)
        self.queue_backlog_packets = GaugeMetricFamily("innet_queue_backlog_packets", "packets queued now",
                                                       labels=queue)
        self.queue_backlog_bytes = GaugeMetricFamily("innet_queue_backlog_bytes", "bytes queued now", labels=queue)
        flow = [*node_inst, "rank", "flow"]
        self.flow_pps = GaugeMetricFamily("innet_flow_packets_per_second", "a top flow's packet rate over the "
                                          "latest interval of a watched instance", labels=flow)
        self.flow_bps = GaugeMetricFamily("innet_flow_bytes_per_second", "a top flow's byte rate over the latest "
                                          "interval of a watched instance", labels=flow)
        hop = ["service", "graph", "node", "spi", "si", "action"]
        self.hop_packets = CounterMetricFamily("innet_chain_hop_packets", "packets a service chain's forwarder "
                                               "dispatched on the hop (SPI, SI)", labels=hop)
        self.hop_bytes = CounterMetricFamily("innet_chain_hop_bytes", "bytes (NSH included) a service chain's "
                                             "forwarder dispatched on the hop (SPI, SI)", labels=hop)
        self.read_ok = GaugeMetricFamily("innet_instance_read_ok", "1 where this scrape read the instance",
                                         labels=node_inst)

    def __iter__(self):
        return iter(vars(self).values())


class DataPlaneCollector(Collector):
    def __init__(self, controller, samplers: FlowSamplers):
        self.controller, self.samplers = controller, samplers

    def collect(self):
        f = _Families()
        for inst in self.controller.instances():
            try:
                self._instance(f, inst)
                f.read_ok.add_metric([inst.node, inst.id], 1)
            except InnetError as exc:   # a node gone or a switch down must not fail the whole scrape
                log.warning("metrics: cannot read %s on %s: %s", inst.id, inst.node, exc.message)
                f.read_ok.add_metric([inst.node, inst.id], 0)
        self._chains(f)
        for sampler, interval in self.samplers.latest():
            by_rate = sorted(interval.sample.flows, key=lambda r: (-r.packets_per_s, r.flow.sort_key()))
            for rank, r in enumerate(by_rate[:FLOW_SERIES], 1):
                labels = [sampler.node, sampler.instance, str(rank), str(r.flow)]
                f.flow_pps.add_metric(labels, r.packets_per_s)
                if r.bytes_per_s is not None:
                    f.flow_bps.add_metric(labels, r.bytes_per_s)
        yield from f

    def _instance(self, f: _Families, inst) -> None:
        ctl, where = self.controller, [inst.node, inst.id]
        spec = nf_spec(inst.nf, inst.source)
        for stat in spec.stats.values():
            if stat.kind == "counters":
                for name, value in ctl.read_stat(inst.node, inst.id, stat.name).items():
                    f.nf_counter.add_metric([*where, inst.nf, stat.name, name], value)
        if inst.nf == ROUTER:
            self._routes(f, inst)
        if "queues" in spec.capabilities:
            for ifname in inst.interfaces:
                try:
                    queues = ctl.queue_stats(inst.node, inst.id, ifname)
                except QueueError:   # no queues configured on this interface
                    continue
                for q in queues:
                    labels = [*where, ifname, str(q.level)]
                    f.queue_packets.add_metric(labels, q.packets)
                    f.queue_bytes.add_metric(labels, q.bytes)
                    f.queue_drops.add_metric(labels, q.drops)
                    f.queue_backlog_packets.add_metric(labels, q.backlog_packets)
                    f.queue_backlog_bytes.add_metric(labels, q.backlog_bytes)

    def _chains(self, f: _Families) -> None:
        """Each service's hops, with the counters of its nodes' forwarders (one read per node)."""
        counters: dict[str, dict | None] = {}
        for key, (_, doc) in self.controller.store.services().items():
            placed = Plan.from_doc(doc)
            graphs = {p.spi: p.graph for p in placed.paths}
            for r in placed.rules:
                if r.table != "sfc_hops":
                    continue
                if r.node not in counters:
                    try:
                        counters[r.node] = {(c.entry.match["spi"], c.entry.match["si"]): (c.packets, c.bytes)
                                            for c in self.controller.read_counters(r.node, FORWARDER, "sfc_hops")}
                    except InnetError as exc:   # innet_instance_read_ok says so too
                        log.warning("metrics: cannot read the forwarder on %s: %s", r.node, exc.message)
                        counters[r.node] = None
                if counters[r.node] is None:
                    continue
                spi, si = r.match["spi"], r.match["si"]
                packets, nbytes = counters[r.node].get((spi, si), (0, 0))
                labels = [key, graphs.get(spi, ""), r.node, str(spi), str(si), r.action]
                f.hop_packets.add_metric(labels, packets)
                f.hop_bytes.add_metric(labels, nbytes)

    def _routes(self, f: _Families, inst) -> None:
        where = [inst.node, inst.id]
        routes = RouteService(self.controller, inst.id).list(inst.node)
        f.routes.add_metric(where, len(routes))
        f.routes_out_of_sync.add_metric(where, sum(1 for r in routes if not r.fast_path or r.kernel is False))
        for r in sorted(routes, key=lambda r: -r.packets)[:ROUTE_SERIES]:
            labels = [*where, r.prefix]
            f.route_packets.add_metric(labels, r.packets)
            f.route_bytes.add_metric(labels, r.bytes)
            f.route_in_sync.add_metric([*labels, "fast"], int(r.fast_path))
            if r.kernel is not None:
                f.route_in_sync.add_metric([*labels, "kernel"], int(r.kernel))


class Metrics:
    """The API's registry: the data plane read at each scrape, and the operation histogram."""

    def __init__(self, controller, samplers: FlowSamplers):
        self.registry = CollectorRegistry()
        self.registry.register(DataPlaneCollector(controller, samplers))
        self.operations = Histogram("innet_operation_seconds", "API operations, request to response",
                                    ["operation", "code"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Timing:
    """ASGI middleware: observes each request's time in the operation histogram, labelled by
    the operation id of the route it reached ('unrouted' when none did), and tells the client
    the time to its answer in a `Server-Timing: app;dur=MILLISECONDS` header (W3C Server
    Timing), so a client can tell the server's time from the network's and its own."""

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, code = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                took = f"app;dur={1000 * (time.perf_counter() - started):.3f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            operation = getattr(route, "operation_id", None) or getattr(route, "name", None) or "unrouted"
            self.histogram.labels(operation, str(code)).observe(time.perf_counter() - started)
