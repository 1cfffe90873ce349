"""The REST API: a FastAPI application over one Controller (`innet api` serves it with uvicorn).

Each route is one call into controller.api.resources, which the CLI calls too. Handlers
are plain functions: FastAPI runs them in its thread pool, and the Controller serialises
writers (its lock in this process, the scope's writer lock across processes) while reads
go on beside them. A deploy that compiles completes within its request (seconds; built
programs are cached); meanwhile GET /operations shows it pending, like every change any
innet process is making in the scope.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from email import policy
from email.parser import BytesParser
from pathlib import PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, Body, FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from controller.api import errors, paths
from controller.api.auth import MAX_BODY, STATIC_PREFIX, Guard
from controller.api.flows import FlowSamplers
from controller.api.links import LinkLoad
from controller.api.metrics import Metrics, Timing
from controller.api.models import (ID_PATTERN, MAX_TOP_K, DeploymentOut, FlowEstimate, InstanceIn, InstanceOut,
                                   InstanceShown, NFOut, NodeOut, OperationOut, ParamsIn, PrefixesIn, Problem, Removed,
                                   RoutesChanged, RoutesIn, RouteOut, ServiceDeleted, ServiceDeployed, ServiceOut,
                                   ServiceSummary, StatusOut, TopFlows, TopologyOut)
from controller.api.resources import Resources
from controller.nsd.errors import NSDError
from controller.routes import ROUTER
from controller.service import Controller

NodeName = Annotated[str, Path(pattern=ID_PATTERN, description="a node of the testbed (GET /nodes)")]
InstanceName = Annotated[str, Path(pattern=ID_PATTERN, description="an NF instance id on the node")]
RouterInstance = Annotated[str, Query(pattern=ID_PATTERN, description="the router instance")]
ServiceName = Annotated[str, Path(min_length=1, max_length=200, description="the service's key (GET /services), "
                                                                            "or the name its descriptor gives")]
# what POST /services takes: the descriptor itself, in any format innet reads, as the body or as a file
DESCRIPTOR_BODY = {"required": True, "description": "a service descriptor (Smart-Orchestrator JSON, DESIRE6G lnsd "
                   "YAML, ETSI SOL006 YAML or JSON): the body itself, or a multipart/form-data file upload (field "
                   "`file`; other fields `bind` and `nf` as the query parameters)", "content": {
                       "application/yaml": {"schema": {"type": "string"}},
                       "application/json": {"schema": {"type": "object"}},
                       "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                           "file": {"type": "string", "format": "binary"},
                           "bind": {"type": "array", "items": {"type": "string"}},
                           "nf": {"type": "array", "items": {"type": "string"}}}}}}}
MAX_PAIRS = 256
# the status page: its own files, and the graph library `make setup` installs from npm beside them
STATIC_DIR = PurePosixPath(__file__).parent / "static"
ERRORS = {code: {"model": Problem, "description": what} for code, what in (
    (401, "no or a wrong bearer token"), (404, "an unknown node, instance, route or service"),
    (409, "the data plane or another writer stands in the way"), (413, "the body is too large"),
    (422, "the request cannot be carried out as written"), (503, "not ready; try again"))}


def create_app(controller: Controller, token: str, *, max_body: int = MAX_BODY, flow_interval_s: float = 1.0,
               load_interval_s: float = 1.0, watch: list[tuple[str, str]] = ()) -> FastAPI:
    """The API over `controller`, accepting `token`; `watch` names (node, instance) pairs
    whose flows are sampled from the start and for good (for /metrics); links' load is
    sampled every `load_interval_s` while GET /topology is read."""
    samplers = FlowSamplers(controller, flow_interval_s)
    load = LinkLoad(controller, load_interval_s)
    res = Resources(controller, samplers, load)
    metrics = Metrics(controller, samplers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for node, instance in watch:
            res.watch(node, instance)
        yield
        samplers.close()
        load.close()

    app = FastAPI(title="innet", version="0.1.0", lifespan=lifespan,
                  description="The control plane of innet: nodes, NF instances, routes, flows and metrics. "
                              "Every request but GET /healthz carries `Authorization: Bearer TOKEN`.")
    errors.install(app)
    app.add_middleware(Guard, token=token, max_body=max_body)
    app.add_middleware(Timing, histogram=metrics.operations)   # the outermost: it times refusals too
    app.openapi = lambda: _openapi(app)

    @app.get("/healthz", operation_id="healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Whether the API answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def status_page() -> FileResponse:
        """The live status page (no token: it holds no data; its script asks the API with one)."""
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="static")

    api = APIRouter(responses=ERRORS)

    @api.get("/metrics", operation_id="metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}})
    def prometheus_metrics() -> Response:
        """The data plane's counters and the API's operation latencies, for Prometheus."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/status", operation_id="status", tags=["service"])
    def status() -> StatusOut:
        """The testbed, its nodes and their NF instances, desired beside actual."""
        return res.status()

    @api.get("/topology", operation_id="topology", tags=["service"])
    def topology() -> TopologyOut:
        """The testbed's nodes and links, each link with its load (bits and packets per second
        each way) over the latest interval of the routers' interface counters. The first read
        starts the sampler and waits for its first interval."""
        return res.topology()

    @api.get("/operations", operation_id="operations", tags=["service"])
    def operations(state: Literal["pending", "done", "failed", "recovered"] | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[OperationOut]:
        """The scope's latest operations, newest first: what every innet process changed or is changing."""
        return res.operations(state, limit)

    @api.get("/nodes", operation_id="nodes", tags=["nodes"])
    def nodes() -> list[NodeOut]:
        return res.nodes()

    @api.get("/nodes/{node}/nfs", operation_id="nf_list", tags=["NF instances"])
    def nf_list(node: NodeName) -> list[InstanceOut]:
        """The node's NF instances, desired beside actual."""
        return res.nf_list(node)

    @api.post("/nodes/{node}/nfs", operation_id="nf_deploy", tags=["NF instances"])
    def nf_deploy(node: NodeName, spec: InstanceIn) -> DeploymentOut:
        """Deploy an NF instance; an existing id is redeployed with what changed (its entries
        and routes are written again). Completes within the request."""
        return res.nf_deploy(node, spec)

    @api.get("/nodes/{node}/nfs/{instance}", operation_id="nf_show", tags=["NF instances"])
    def nf_show(node: NodeName, instance: InstanceName) -> InstanceShown:
        """The instance as GET /nodes/{node}/nfs lists it, with the memory its state really takes:
        every map (XDP) or bound register array (BMv2), entries x bytes per entry, and their sum."""
        return res.nf_show(node, instance)

    @api.patch("/nodes/{node}/nfs/{instance}", operation_id="nf_set", tags=["NF instances"])
    def nf_set(node: NodeName, instance: InstanceName, change: ParamsIn) -> DeploymentOut:
        """Change some of an instance's parameters (a redeploy); the others keep their values."""
        return res.nf_set(node, instance, change.params)

    @api.delete("/nodes/{node}/nfs/{instance}", operation_id="nf_remove", tags=["NF instances"])
    def nf_remove(node: NodeName, instance: InstanceName) -> Removed:
        """Remove the instance with its entries, and its routes from the kernel too."""
        return res.nf_remove(node, instance)

    @api.get("/nodes/{node}/nfs/{instance}/stats/{stat}", operation_id="stats", tags=["NF instances"])
    def stats(node: NodeName, instance: InstanceName,
              stat: Annotated[str, Path(pattern=ID_PATTERN, examples=["verdicts"])]) -> dict[str, int]:
        """A `counters` statistic of the instance, e.g. nfrouter's verdicts."""
        return res.stats(node, instance, stat)

    @api.get("/nodes/{node}/routes", operation_id="routes_list", tags=["routes"])
    def routes_list(node: NodeName, instance: RouterInstance = ROUTER) -> list[RouteOut]:
        """Every route, desired or held by a path, with packet and byte counters and whether
        the fast path and the kernel FIB each hold it as desired."""
        return res.routes_list(node, instance)

    @api.post("/nodes/{node}/routes", operation_id="routes_add", tags=["routes"])
    def routes_add(node: NodeName, batch: RoutesIn, instance: RouterInstance = ROUTER) -> RoutesChanged:
        """Add or replace routes in the fast path and the kernel FIB, all or none."""
        return res.routes_add(node, [r.route() for r in batch.routes], instance)

    @api.delete("/nodes/{node}/routes", operation_id="routes_del", tags=["routes"])
    def routes_del(node: NodeName, batch: Annotated[PrefixesIn, Body()],
                   instance: RouterInstance = ROUTER) -> RoutesChanged:
        """Delete routes from both paths (404 when none of them exists)."""
        return res.routes_del(node, batch.prefixes, instance)

    @api.get("/nfs", operation_id="nfs", tags=["catalog"])
    def nfs() -> list[NFOut]:
        """The NF catalog: each NF's parameters, tables and statistics."""
        return res.nfs()

    @api.get("/flows/top", operation_id="hh", tags=["flows"])
    def flows_top(node: Annotated[str, Query(pattern=ID_PATTERN)],
                  nf: Annotated[str, Query(pattern=ID_PATTERN, description="the heavy-hitter instance (cms, "
                                                                           "precision)")],
                  k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 10,
                  by: Literal["packets", "bytes"] = "packets",
                  after: Annotated[int | None, Query(ge=0, description="the number of the interval you have: "
                                                                       "wait for the next")] = None) -> TopFlows:
        """The heavy hitters of the instance's latest interval, with rates. Every reader gets
        the interval of one sampler per instance (readers never close epochs themselves);
        the first reader of an instance waits for its first interval."""
        return res.hh(node, nf, k, by, after)

    @api.get("/flows/estimate", operation_id="estimate", tags=["flows"])
    def flows_estimate(node: Annotated[str, Query(pattern=ID_PATTERN)],
                       nf: Annotated[str, Query(pattern=ID_PATTERN, description="the cms instance")],
                       src: Annotated[str, Query(max_length=45, examples=["192.0.2.2"])],
                       dst: Annotated[str, Query(max_length=45, examples=["10.0.1.9"])],
                       proto: Annotated[int, Query(ge=0, le=255, description="IP protocol number, e.g. 17 (udp); "
                                                                             "the instance keys it in every key mode")],
                       sport: Annotated[int, Query(ge=0, le=65535, description="0 for a protocol without "
                                                                               "ports")] = 0,
                       dport: Annotated[int, Query(ge=0, le=65535)] = 0,
                       bank: Annotated[int | None, Query(ge=0, le=1, description="default: the active bank, the "
                                                                                 "epoch so far")] = None
                       ) -> FlowEstimate:
        """A cms instance's Count-Min estimate of any flow, held as a candidate or not: never below
        its true count in the bank. A pure read: it closes no epoch (but while an hh reader samples
        the instance, the active bank holds only the current interval)."""
        return res.estimate(node, nf, src, dst, proto, sport, dport, bank)

    @api.get("/services", operation_id="services_list", tags=["services"])
    def services_list() -> list[ServiceSummary]:
        """The deployed service chains: their paths (SPIs, routers) and NF instances, as desired."""
        return res.services_list()

    @api.post("/services", operation_id="services_deploy", tags=["services"],
              openapi_extra={"requestBody": DESCRIPTOR_BODY})
    async def services_deploy(
            request: Request,
            bind: Annotated[list[str], Query(max_length=MAX_PAIRS, description="NAME=HOST: run endpoint NAME on "
                                                                               "testbed host HOST (repeat)")] = [],
            nf: Annotated[list[str], Query(max_length=MAX_PAIRS, description="ID=NF: the descriptor's NF or VNFD "
                                                                             "id ID is catalog NF NF (repeat)")] = [],
            source: Annotated[str | None, Query(max_length=200, description="the descriptor's name in error "
                                                                            "messages (an upload: its file name)")]
            = None) -> ServiceDeployed:
        """Deploy a service chain from a descriptor on the running testbed, all of it or nothing:
        its NF instances behind the forwarders of their routers, then its NSH rules. The same
        descriptor again is a no-op (`change: unchanged`, same SPIs); a changed one moves the
        service to new paths before the old ones go (`updated`). A mistake in the descriptor
        answers 422 naming its path in the document (`errors[0].location`)."""
        document, filename, fields = _descriptor(request.headers.get("content-type", ""), await request.body())
        return await run_in_threadpool(res.services_deploy, document, _pairs("bind", [*bind, *fields["bind"]]),
                                       _pairs("nf", [*nf, *fields["nf"]]), source or filename)

    @api.get("/services/{name}", operation_id="services_show", tags=["services"])
    def services_show(name: ServiceName) -> ServiceOut:
        """A service: placement (routers, NF instances and their slots), desired beside actual
        (instance health, each rule in the data plane or not) and per-hop packet counters."""
        return res.services_show(name)

    @api.delete("/services/{name}", operation_id="services_delete", tags=["services"])
    def services_delete(name: ServiceName) -> ServiceDeleted:
        """Delete a service: its classifier rules, hops and NF instances, and the forwarders no
        other service uses."""
        return res.services_delete(name)

    app.include_router(api)
    app.include_router(paths.router(res), responses=ERRORS)
    return app


def _descriptor(content_type: str, body: bytes) -> tuple[bytes, str | None, dict[str, list[str]]]:
    """The descriptor in a POST /services body: the body itself, or the file of a
    multipart/form-data upload (field `file`, else the first part with a file name), with the
    upload's file name (its last component, for error messages) and its `bind` and `nf` fields."""
    fields: dict[str, list[str]] = {"bind": [], "nf": []}
    if not content_type.lower().startswith("multipart/form-data"):
        return body, None, fields
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    files = []
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name in fields and not part.get_filename():
            fields[name].append(part.get_payload(decode=True).decode("utf-8", "replace"))
        elif name == "file" or part.get_filename():
            files.append((name != "file", part.get_payload(decode=True) or b"", part.get_filename()))
    if not files:
        raise NSDError("body", "a multipart/form-data upload without the descriptor",
                       hint="send the descriptor as the form field `file` (curl -F file=@nsd.yaml), or as the body")
    _, content, filename = min(files, key=lambda f: f[0])
    return content, PurePosixPath(filename.replace("\\", "/")).name[:200] if filename else None, fields


def _pairs(what: str, values: list[str]) -> dict[str, str]:
    """['src=h1'] -> {'src': 'h1'}: the NAME=VALUE query parameters (or form fields) `what`."""
    out: dict[str, str] = {}
    if len(values) > MAX_PAIRS:
        raise NSDError(what, f"{len(values)} values; at most {MAX_PAIRS}")
    for value in values:
        name, equals, target = (part.strip() for part in value.partition("="))
        if not equals or not name or not target:
            raise NSDError(f"{what}={value}", f"expected {'NAME=HOST' if what == 'bind' else 'ID=NF'}",
                           hint="e.g. bind=src=h1" if what == "bind" else "e.g. nf=iperf3-client=rxcount")
        if name in out:
            raise NSDError(f"{what}={value}", f"'{name}' is given twice ({name}={out[name]} first)")
        out[name] = target
    return out


def _openapi(app: FastAPI) -> dict:
    """The generated schema, saying that every operation but healthz needs the bearer token."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        schema["paths"]["/healthz"]["get"]["security"] = []
        app.openapi_schema = schema
    return app.openapi_schema
