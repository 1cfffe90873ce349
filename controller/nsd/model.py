"""One model of a network service, whichever descriptor format it came from.

A Service names its endpoints (the application functions whose traffic the service carries),
its NF instances (each of a catalog NF type) and its forwarding graphs: one per direction, each
an ordered list of NF instances between a source and a destination endpoint, with a classifier
that picks the graph's traffic and an optional end-to-end delay budget. Placement reads it as
it is: graph.hops are instance names in traversal order, instance.node/target are constraints.

Rules that hold whatever the format are checked here (ModelError, with the place in the model);
a parser turns that place back into the path in its document (controller.nsd.draft).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, IPvAnyAddress,
                      IPvAnyNetwork, StrictBool, StrictInt, model_validator)

from controller.catalog import service_nfs
from controller.errors import CatalogError
from controller.nsd.budget import delay_ms
from controller.nsd.errors import ModelError

Target = Literal["xdp", "bmv2"]
Direction = Literal["upstream", "downstream"]
Format = Literal["smart-orchestrator", "desire6g-lnsd", "etsi-sol006"]


def _plain_name(value: str) -> str:
    # names are looked up in references such as "pkt-src:1" and --bind NAME=HOST
    if not value or any(c.isspace() or c in ":=" for c in value):
        raise ValueError(f"'{value}' is not a usable name: give non-empty text without spaces, ':' or '='")
    return value


Name = Annotated[str, AfterValidator(_plain_name)]
Port = Annotated[StrictInt, Field(ge=0, le=65535)]
DelayMs = Annotated[float, BeforeValidator(delay_ms)]


# endpoints and NF instances share one namespace: links refer to either by name
NAMED_SECTIONS = {"endpoints": "an endpoint", "nf_instances": "an NF instance"}


def name_taken(loc: tuple, name: str, holder_section: str) -> ModelError:
    return ModelError(loc, f"duplicate name '{name}': {NAMED_SECTIONS[holder_section]} already has it",
                      hint="endpoints and NF instances share one namespace; rename one")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Endpoint(_Frozen):
    """An application function (microservice) at one end of a forwarding graph."""
    name: Name
    addresses: tuple[IPvAnyAddress, ...] = ()   # as the descriptor gives them; resolving fills them from the host
    host: str | None = None                     # the testbed host it runs on; None: a host of its own name
    is_ue: StrictBool = False                   # a user equipment: upstream traffic leaves it


class NFInstance(_Frozen):
    name: Name
    nf: str                                     # the catalog NF type (nfs/<nf>.yaml)
    parameters: dict[str, StrictInt] = {}       # as given; the catalog's defaults fill the rest at deploy
    node: str | None = None                     # the router the descriptor asks for, if any
    target: Target | None = None                # the data plane the descriptor asks for, if any
    implicit: StrictBool = False                # not in the descriptor: added for a link that names no NF


class Classifier(_Frozen):
    """Which packets enter a graph. An address left out means the endpoint's own addresses."""
    ip_proto: Annotated[StrictInt, Field(ge=0, le=255)] | None = None
    source_address: IPvAnyNetwork | None = None
    destination_address: IPvAnyNetwork | None = None
    source_port: Port | None = None
    destination_port: Port | None = None


class ForwardingGraph(_Frozen):
    """One direction of the service: source -> hops[0] -> ... -> hops[-1] -> destination."""
    name: Name
    source: str
    destination: str
    hops: tuple[str, ...] = Field(min_length=1)
    direction: Direction | None = None
    classifier: Classifier = Classifier()
    delay_budget_ms: DelayMs | None = None      # one way, source to destination


class Service(_Frozen):
    name: str = Field(min_length=1)
    format: Format
    endpoints: tuple[Endpoint, ...] = Field(min_length=2)
    nf_instances: tuple[NFInstance, ...] = ()
    forwarding_graphs: tuple[ForwardingGraph, ...] = Field(min_length=1)

    @property
    def delay_budget_ms(self) -> float | None:
        """The tightest budget of any graph, None where no graph has one."""
        budgets = [g.delay_budget_ms for g in self.forwarding_graphs if g.delay_budget_ms is not None]
        return min(budgets, default=None)

    @model_validator(mode="after")
    def _consistent(self) -> "Service":
        self._names_unique()
        self._addresses_unique()
        self._instances_fit_catalog()
        self._graphs_consistent()
        self._instances_used()
        return self

    def _names_unique(self) -> None:
        holders: dict[str, str] = {}
        for section in NAMED_SECTIONS:
            for i, member in enumerate(getattr(self, section)):
                if member.name in holders:
                    raise name_taken((section, i, "name"), member.name, holders[member.name])
                holders[member.name] = section

    def _addresses_unique(self) -> None:
        owner: dict = {}
        for i, e in enumerate(self.endpoints):
            for j, address in enumerate(e.addresses):
                if owner.get(address, e.name) != e.name:
                    raise ModelError(("endpoints", i, "addresses", j),
                                     f"address {address} also belongs to endpoint '{owner[address]}'",
                                     hint="two endpoints with one address cannot be told apart by a classifier")
                owner[address] = e.name

    def _instances_fit_catalog(self) -> None:
        catalog = service_nfs()
        for i, inst in enumerate(self.nf_instances):
            if inst.nf not in catalog:
                raise ModelError(("nf_instances", i, "nf"),
                                 f"unknown NF type '{inst.nf}' (catalog: {', '.join(catalog)})",
                                 hint="name a catalog NF (nfs/*.yaml), or map the descriptor's id to one (nf_map)")
            spec = catalog[inst.nf]
            if inst.target is not None and inst.target not in spec.programs:
                raise ModelError(("nf_instances", i, "target"),
                                 f"NF {inst.nf} has no {inst.target} program (it has: {', '.join(spec.programs)})")
            try:
                spec.resolve_parameters(inst.parameters)
            except CatalogError as exc:
                raise ModelError(("nf_instances", i, "parameters"), exc.message, exc.hint) from None

    def _graphs_consistent(self) -> None:
        endpoints = {e.name: e for e in self.endpoints}
        instances = {n.name for n in self.nf_instances}
        seen: set[str] = set()
        for g_index, graph in enumerate(self.forwarding_graphs):
            loc = ("forwarding_graphs", g_index)
            if graph.name in seen:
                raise ModelError((*loc, "name"), f"duplicate graph name '{graph.name}'",
                                 hint="each forwarding graph (one direction of the service) needs its own name")
            seen.add(graph.name)
            for end in ("source", "destination"):
                name = getattr(graph, end)
                if name not in endpoints:
                    raise ModelError((*loc, end), f"unknown endpoint '{name}' (endpoints: {', '.join(endpoints)})")
            if graph.source == graph.destination:
                raise ModelError((*loc, "destination"), f"the graph starts and ends at '{graph.source}'")
            on_path: set[str] = set()
            for h_index, hop in enumerate(graph.hops):
                if hop not in instances:
                    known = ", ".join(instances) or "none"
                    raise ModelError((*loc, "hops", h_index), f"unknown NF instance '{hop}' (NF instances: {known})")
                if hop in on_path:
                    raise ModelError((*loc, "hops", h_index), f"the path visits '{hop}' twice (a cycle)",
                                     hint="a forwarding graph visits each NF instance once")
                on_path.add(hop)
            self._direction_fits_ue(graph, loc, endpoints)
            self._classifier_fits_endpoints(graph, loc, endpoints)

    @staticmethod
    def _direction_fits_ue(graph: ForwardingGraph, loc: tuple, endpoints: dict[str, Endpoint]) -> None:
        # upstream leaves the UE, downstream reaches it; only a path with one UE end can be checked
        source_ue, destination_ue = endpoints[graph.source].is_ue, endpoints[graph.destination].is_ue
        if graph.direction is None or source_ue == destination_ue:
            return
        expected = "upstream" if source_ue else "downstream"
        if graph.direction != expected:
            ue = graph.source if source_ue else graph.destination
            raise ModelError((*loc, "direction"),
                             f"direction {graph.direction}, but the path runs from '{graph.source}' to "
                             f"'{graph.destination}' and '{ue}' is the UE: that is {expected}",
                             hint="upstream traffic leaves the UE, downstream traffic reaches it")

    @staticmethod
    def _classifier_fits_endpoints(graph: ForwardingGraph, loc: tuple, endpoints: dict[str, Endpoint]) -> None:
        match = graph.classifier
        given = {"source_address": (match.source_address, graph.source),
                 "destination_address": (match.destination_address, graph.destination)}
        for field, (network, name) in given.items():
            addresses = endpoints[name].addresses
            if network is not None and addresses and not any(a in network for a in addresses):
                raise ModelError((*loc, "classifier", field),
                                 f"{network} holds no address of endpoint '{name}' "
                                 f"({', '.join(map(str, addresses))})",
                                 hint="the classifier picks the traffic between the graph's own endpoints")
        if match.source_address and match.destination_address \
                and match.source_address.version != match.destination_address.version:
            raise ModelError((*loc, "classifier", "destination_address"),
                             f"source {match.source_address} and destination {match.destination_address} "
                             "are of different IP versions")

    def _instances_used(self) -> None:
        used = {hop for g in self.forwarding_graphs for hop in g.hops}
        for i, inst in enumerate(self.nf_instances):
            if inst.name not in used:
                raise ModelError(("nf_instances", i, "name"), f"NF instance '{inst.name}' is on no forwarding graph",
                                 hint="add it to a graph's links, or remove it")

