"""What the REST API takes and gives: pydantic models, and their making from library objects.

The CLI prints the same models (its --json output is their JSON), so a script reads one
shape whether it runs `innet ...` locally or against `innet --api URL ...`. Input models
check what they can with the library's own checks (a route's prefix with
controller.routes.check_route), so a mistake answers 422 with the place in the body.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictInt, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from controller.catalog import NFSpec
from controller.errors import EntryError
from controller.routes import Route, check_route
from controller.stats import FlowCount, FlowRate, Sample, StateMemory
from controller.targets.base import INSTANCE_ID

# Ids name pin directories and records (controller.targets.xdp.check_instance says the same).
ID_PATTERN = INSTANCE_ID
# A Linux interface name: at most 15 bytes, no '/' (it names files in /sys), no spaces or ':'.
IFNAME_PATTERN = r"^[^/\s:]{1,15}$"
MAX_BATCH = 262144   # routes per request: nfrouter's largest table (max_routes)
MAX_TOP_K = 100

InstanceId = Annotated[str, Field(pattern=ID_PATTERN, examples=["cms"])]
IfName = Annotated[str, Field(pattern=IFNAME_PATTERN, examples=["r1-eth1"])]


def _library_check(check, value):
    """Run a library check inside a validator: its EntryError becomes a validation error
    that keeps the message and the hint."""
    try:
        return check(value)
    except EntryError as exc:
        raise PydanticCustomError("innet", "{message}", {"message": exc.message, "hint": exc.hint}) from None


def _valid_prefix(text: str) -> str:
    _library_check(lambda p: check_route(Route(p, local=True)), text)   # a local route checks the prefix alone
    return text


Prefix = Annotated[str, Field(max_length=64, examples=["203.0.113.0/24"]), AfterValidator(_valid_prefix)]
# (forwarder instance, slot), schema'd without `prefixItems`: schemathesis 4 misreads a 3.1 tuple
# inside anyOf (a nullable one) as an invalid schema, so the pair is spelt as a draft-neutral array
ForwarderSlot = Annotated[tuple[str, int], WithJsonSchema({
    "type": "array", "minItems": 2, "maxItems": 2, "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "examples": [["sff", 0]]})]


# ---- errors ---------------------------------------------------------------------------------
class FieldError(BaseModel):
    location: str = Field(description="where in the request, e.g. body.routes[3].prefix")
    message: str
    hint: str | None = None


class Problem(BaseModel):
    """Every error answer: what was wrong, what to do next, and for a bad request each place."""
    error: str
    hint: str | None = None
    errors: list[FieldError] = []


# ---- nodes, status, operations ------------------------------------------------------------
class NodeOut(BaseModel):
    name: str
    netns: str | None
    role: str
    target: str
    kernel_slow_path: bool


class InstanceOut(BaseModel):
    """An NF instance, desired beside actual."""
    id: str
    nf: str
    target: str
    interfaces: list[str]
    params: dict[str, int]
    modes: dict[str, str] = Field(description="interface -> how the instance runs there (native, generic, ...)")
    health: str = Field(description="'ok', or why the data plane differs from the desired instance")


class NodeStatus(BaseModel):
    name: str
    role: str
    target: str
    problem: str | None
    routes: int
    instances: list[InstanceOut]


class OperationOut(BaseModel):
    """An entry of the scope's operation log: every change, by this API or any innet process."""
    id: int
    kind: str
    node: str | None
    subject: str | None
    detail: dict
    state: Literal["pending", "done", "failed", "recovered"]
    pid: int
    started: float
    finished: float | None
    error: str | None


class StatusOut(BaseModel):
    scope: str
    database: str
    testbed: dict | None
    testbed_running: bool
    nodes: list[NodeStatus]
    pending_operations: list[OperationOut]


# ---- NF instances ---------------------------------------------------------------------------
class InstanceIn(BaseModel):
    """An NF instance to deploy, or to redeploy when its id exists."""
    nf: str = Field(pattern=ID_PATTERN, description="the NF type, from the catalog (GET /nfs)", examples=["cms"])
    id: InstanceId | None = Field(None, description="the instance id (default: the NF's name)")
    interfaces: list[IfName] | None = Field(None, max_length=256, description="default: every interface but lo")
    params: dict[str, StrictInt] = Field({}, max_length=64, description="catalog parameters; the rest take defaults")
    target: Literal["xdp", "bmv2"] | None = Field(None, description="default: the node's target")


class ParamsIn(BaseModel):
    """Parameters to change; those not named keep their current values."""
    params: dict[str, StrictInt] = Field(max_length=64, examples=[{"max_routes": 4096}])


class DeploymentOut(BaseModel):
    node: str
    instance: str
    nf: str
    target: str
    interfaces: list[str]
    params: dict[str, int]
    modes: dict[str, str]
    problem: str | None
    cleared: list[str] = Field(description="instances whose tables this deploy emptied and refilled")
    behind: ForwarderSlot | None = Field(None, description="(forwarder instance, slot) of an NF behind a service "
                                                             "function forwarder")


class StateMapOut(BaseModel):
    """One map (XDP) or register array (BMv2) of an instance."""
    name: str
    entries: int
    entry_bytes: int = Field(description="bytes per entry as the target stores it (XDP: the value rounded up to 8 "
                                         "bytes, once per CPU for a per-CPU map; BMv2: the bitwidth in whole bytes)")
    bytes: int = Field(description="entries x entry_bytes")


class InstanceShown(InstanceOut):
    """An NF instance as `nf list` shows it, with the memory its state really takes."""
    node: str
    maps: list[StateMapOut] = Field(description="every map the instance pinned (XDP; its program excluded) or "
                                                "register array its statistics bind (BMv2)")
    state_bytes: int = Field(description="the maps' bytes, summed")

    @classmethod
    def of(cls, node: str, listed: InstanceOut, memory: StateMemory) -> "InstanceShown":
        return cls(**dict(listed), node=node, state_bytes=memory.bytes,
                   maps=[StateMapOut(name=m.name, entries=m.entries, entry_bytes=m.entry_bytes, bytes=m.bytes)
                         for m in memory.maps])


class Removed(BaseModel):
    node: str
    instance: str
    removed: bool


# ---- routes ---------------------------------------------------------------------------------
class RouteIn(BaseModel):
    prefix: Prefix
    interface: IfName | None = Field(None, description="egress interface (not for a local route)")
    mac: str | None = Field(None, max_length=17, description="the next hop's MAC", examples=["02:00:00:03:02:02"])
    via: str | None = Field(None, max_length=45, description="gateway, needed unless the prefix is one host")
    local: bool = Field(False, description="the prefix is the node's own: deliver to its stack")

    @model_validator(mode="after")
    def _whole_route(self) -> "RouteIn":
        _library_check(check_route, self.route())
        return self

    def route(self) -> Route:
        return Route(self.prefix, self.interface, self.mac, self.via, self.local)


class RoutesIn(BaseModel):
    """Routes to add or replace in one batch, all or none, in both paths."""
    routes: list[RouteIn] = Field(min_length=1, max_length=MAX_BATCH)


class PrefixesIn(BaseModel):
    """Routes to delete in one batch, from both paths."""
    prefixes: list[Prefix] = Field(min_length=1, max_length=MAX_BATCH)


class RouteOut(BaseModel):
    """A route, desired or held by a path, with its fast-path counters and whether each path agrees."""
    prefix: str
    interface: str | None
    mac: str | None
    via: str | None
    local: bool
    packets: int
    bytes: int
    fast_path: bool = Field(description="the fast path (the router's tables) holds the route as desired")
    kernel: bool | None = Field(description="the kernel FIB holds it as desired (null: the node has no kernel path)")
    fast_path_holds: str | None = Field(description="where the fast path differs: what it holds")
    kernel_holds: str | None = Field(description="where the kernel FIB differs: what it holds")


class RoutesChanged(BaseModel):
    node: str
    instance: str
    routes: int = Field(description="how many routes were written, or deleted")


# ---- the catalog ----------------------------------------------------------------------------
class FieldOut(BaseModel):
    name: str
    type: str
    kind: str
    below: int | str | None = None


class ParameterOut(BaseModel):
    name: str
    doc: str
    default: int
    min: int
    max: int
    power_of_two: bool


class TableOut(BaseModel):
    name: str
    doc: str
    match: list[FieldOut]
    actions: dict[str, list[FieldOut]]
    size: int | str = Field(description="entries, or the parameter that sets them")


class StatOut(BaseModel):
    name: str
    doc: str
    kind: str
    index: list[str]
    cells: list[int | str]
    fields: list[FieldOut]


class NFOut(BaseModel):
    name: str
    description: str
    targets: list[str]
    capabilities: list[str]
    parameters: list[ParameterOut]
    tables: list[TableOut]
    stats: list[StatOut]

    @classmethod
    def of(cls, nf: NFSpec) -> "NFOut":
        def fields(items) -> list[FieldOut]:
            return [FieldOut(name=f.name, type=f.type, kind=f.kind, below=f.below) for f in items]
        return cls(name=nf.name, description=nf.description, targets=sorted(nf.programs),
                   capabilities=sorted(nf.capabilities),
                   parameters=[ParameterOut(name=p.name, doc=p.doc, default=p.default, min=p.min, max=p.max,
                                            power_of_two=p.power_of_two) for p in nf.parameters.values()],
                   tables=[TableOut(name=t.name, doc=t.doc, match=fields(t.match),
                                    actions={a: fields(fs) for a, fs in t.actions.items()}, size=t.size_param)
                           for t in nf.tables.values()],
                   stats=[StatOut(name=s.name, doc=s.doc, kind=s.kind, index=list(s.index), cells=list(s.cells),
                                  fields=fields(s.fields)) for s in nf.stats.values()])


# ---- flows ----------------------------------------------------------------------------------
class FlowKeyOut(BaseModel):
    """A flow as the API names it: as text, and its 5-tuple."""
    flow: str = Field(examples=["10.0.1.1:5001 -> 10.0.3.2:80 tcp"])
    src: str
    dst: str
    sport: int
    dport: int
    proto: int

    @staticmethod
    def key_of(f) -> dict:
        """The fields of controller.stats.Flow `f`."""
        return {"flow": str(f), "src": str(f.src), "dst": str(f.dst), "sport": f.sport, "dport": f.dport,
                "proto": f.proto}


class FlowOut(FlowKeyOut):
    packets: int
    bytes: int | None
    packets_per_s: float
    bytes_per_s: float | None

    @classmethod
    def of(cls, r: FlowRate) -> "FlowOut":
        return cls(**cls.key_of(r.flow), packets=r.packets, bytes=r.bytes, packets_per_s=r.packets_per_s,
                   bytes_per_s=r.bytes_per_s)


class TopFlows(BaseModel):
    """The top flows of one closed interval (a cms epoch; for precision, the counters' growth)."""
    node: str
    instance: str
    interval: int = Field(description="the interval's number, counted by its one owner since it started")
    ended: float = Field(description="when the interval closed (Unix time)")
    duration: float = Field(description="seconds the interval lasted")
    packets: int | None = Field(description="every packet of the interval (null: the NF cannot tell)")
    bytes: int | None
    flows: list[FlowOut]

    @classmethod
    def of(cls, node: str, instance: str, interval: int, ended: float, sample: Sample,
           flows: list[FlowRate]) -> "TopFlows":
        return cls(node=node, instance=instance, interval=interval, ended=ended, duration=sample.duration,
                   packets=sample.packets, bytes=sample.bytes, flows=[FlowOut.of(r) for r in flows])


class FlowEstimate(FlowKeyOut):
    """A Count-Min instance's estimate of one flow in one bank: never below the flow's true count
    there, and equal to it when no other flow shares its cell in some row."""
    node: str
    instance: str
    bank: int = Field(description="the bank read: by default the active one, which holds the epoch so far (since "
                                  "the last epoch closed: while an hh reader samples the instance, its current "
                                  "interval)")
    flow: str = Field(description="the flow as the instance keys it (ports 0 when it keys address pairs)",
                      examples=["192.0.2.2:40000 -> 10.0.1.9:5001 udp"])
    packets: int
    bytes: int | None = Field(description="null: the NF counts packets only")

    @classmethod
    def of(cls, node: str, instance: str, bank: int, count: FlowCount) -> "FlowEstimate":
        return cls(**cls.key_of(count.flow), node=node, instance=instance, bank=bank, packets=count.packets,
                   bytes=count.bytes)


# ---- service chains -------------------------------------------------------------------------
class ServicePathOut(BaseModel):
    """One forwarding graph as placed: its service path (SPI) and the routers its packets cross."""
    graph: str
    spi: int = Field(description="the NSH service path identifier of this graph")
    routers: list[str] = Field(description="the routers the graph's packets cross, ingress first")
    hops: list[tuple[str, str]] = Field(description="(NF instance, node) in the order packets meet them")


class PlacedInstanceOut(BaseModel):
    """An NF instance of a service, behind the forwarder of its node."""
    node: str
    id: str
    nf: str
    slot: int = Field(description="its slot in the node's forwarder (sfc_hops to_nf)")
    params: dict[str, int] = {}
    health: str | None = Field(None, description="'ok', or why the data plane differs from the desired instance "
                                                 "(null in a listing: not read)")
    packets: int | None = Field(None, description="packets its forwarder handed to it: the counters of the service's "
                                                  "to_nf hops of its slot (null in a listing: not read)")


class ForwarderOut(BaseModel):
    """The service function forwarder (classifier, NSH dispatch) of one router of the service."""
    node: str
    instance: str
    health: str


class ClassifierOut(BaseModel):
    """A classifier rule at a graph's ingress: matching packets enter the path at (spi, si)."""
    node: str
    src_addr: str
    dst_addr: str
    proto: int = Field(description="0: any")
    src_port: int = Field(description="0: any")
    dst_port: int = Field(description="0: any")
    spi: int
    si: int
    installed: bool = Field(description="the node's forwarder holds the rule as desired")


class HopOut(BaseModel):
    """One (SPI, SI) entry of a node's forwarder, with its packet counters."""
    node: str
    spi: int
    si: int
    action: Literal["to_nf", "forward", "decap"]
    params: dict[str, int | str]
    packets: int
    bytes: int
    installed: bool = Field(description="the node's forwarder holds the entry as desired")


class ServiceSummary(BaseModel):
    """A deployed service as the store holds it (desired state; no data-plane read)."""
    key: str = Field(description="the service's id in /services/{id} and its instance ids", examples=["ping-demo"])
    name: str = Field(description="the name the descriptor gives")
    format: str = Field(description="the descriptor's format")
    paths: list[ServicePathOut]
    routers: list[str] = Field(description="every router that takes part, in path order")
    instances: list[PlacedInstanceOut]
    rules: int = Field(description="classifier and forwarder entries over all routers")


class ServiceOut(ServiceSummary):
    """A service: placement, desired beside actual, per-hop counters."""
    status: Literal["ok", "degraded"] = Field(description="'ok' when every instance runs as desired and every "
                                                          "rule is in the data plane")
    problems: list[str] = Field(description="what differs from the desired state (innet reconcile repairs it)")
    forwarders: list[ForwarderOut]
    classifier: list[ClassifierOut]
    hops: list[HopOut]


class ServiceDeployed(ServiceOut):
    change: Literal["created", "updated", "unchanged"] = Field(
        description="created: a new service; updated: a changed descriptor moved it to new paths (fresh SPIs); "
                    "unchanged: the same descriptor again, a no-op")


class ServiceDeleted(BaseModel):
    key: str
    deleted: bool


# ---- the testbed as the status page draws it --------------------------------------------
class TopologyNodeOut(BaseModel):
    name: str
    role: str = Field(description="host or router")
    target: str = Field(description="what runs the node: kernel (a host), xdp or bmv2")
    registered: bool = Field(description="the controller knows the node (its testbed is up)")


class LinkEndOut(BaseModel):
    node: str
    interface: str


class LinkLoadOut(BaseModel):
    """A link's load over the latest interval, from one router interface's counters."""
    measured_at: LinkEndOut = Field(description="the router interface whose counters tell")
    a_to_b_bits_per_s: float
    b_to_a_bits_per_s: float
    a_to_b_packets_per_s: float
    b_to_a_packets_per_s: float
    a_to_b_bytes: int = Field(description="bytes sent from a to b since the interface came up")
    b_to_a_bytes: int
    utilisation: float | None = Field(description="the busier direction's share of the link's bandwidth "
                                                   "(null: the link has none configured)")


class LinkOut(BaseModel):
    index: int
    a: LinkEndOut
    b: LinkEndOut
    bw_mbit: float | None = Field(description="the configured bandwidth in Mbit/s (null: unshaped)")
    load: LinkLoadOut | None = Field(description="null: no end of the link is a router that could be read")


class TopologyOut(BaseModel):
    """The testbed's nodes and links with each link's load over the latest interval."""
    topology: str | None = Field(description="the running testbed's topology (null: none recorded)")
    running: bool = Field(description="a testbed process holds the scope")
    nodes: list[TopologyNodeOut]
    links: list[LinkOut]
    interval: int = Field(description="the load interval's number, counted since the sampler started")
    ended: float = Field(description="when the load interval closed (Unix time)")
    duration: float = Field(description="seconds the load interval lasted")
