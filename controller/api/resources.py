"""The API's operations as calls into the library, answering in the API's models.

The FastAPI routes (controller.api.app) call these, and so does the CLI when it acts
locally; `innet --api URL` calls controller.api.client.ApiClient instead, whose methods
have the same names and answer the same models over HTTP. What an operation checks or
answers is therefore written once, here.
"""
from __future__ import annotations

from dataclasses import asdict

from controller.api.errors import NotFound
from controller.api.flows import FlowSamplers
from controller.api.models import (DeploymentOut, InstanceIn, InstanceOut, NFOut, NodeOut, OperationOut, Removed,
                                   RoutesChanged, RouteOut, StatusOut, TopFlows)
from controller.catalog import load_catalog
from controller.errors import TargetError, TopologyError
from controller.routes import ROUTER, Route, RouteService
from controller.service import Controller
from controller.store import InstanceRow


class Resources:
    def __init__(self, controller: Controller, samplers: FlowSamplers | None = None):
        self.controller = controller
        self.samplers = samplers or FlowSamplers(controller)   # no thread until an instance is watched

    # ---- lookups that answer 404 ------------------------------------------------------
    def _node(self, node: str) -> None:
        try:
            self.controller.node(node)
        except TopologyError as exc:
            raise NotFound(exc.message, exc.hint) from None

    def _instance(self, node: str, instance: str) -> InstanceRow:
        self._node(node)
        try:
            return self.controller.instance(node, instance)
        except TargetError as exc:
            raise NotFound(exc.message, exc.hint) from None

    # ---- nodes and status ---------------------------------------------------------------
    def nodes(self) -> list[NodeOut]:
        return [NodeOut(**asdict(n)) for n in self.controller.nodes.values()]

    def status(self) -> StatusOut:
        return StatusOut.model_validate(self.controller.status())

    def operations(self, state: str | None = None, limit: int = 50) -> list[OperationOut]:
        return [OperationOut(**asdict(op)) for op in self.controller.store.operations(state, limit)]

    # ---- NF instances ---------------------------------------------------------------------
    def nf_list(self, node: str) -> list[InstanceOut]:
        self._node(node)
        (status,) = [n for n in self.status().nodes if n.name == node]
        return status.instances

    def nf_deploy(self, node: str, spec: InstanceIn) -> DeploymentOut:
        """Deploy the instance, or redeploy it with what changed (its entries and routes stay)."""
        self._node(node)
        d = self.controller.deploy(node, spec.nf, spec.interfaces, spec.params, spec.id, spec.target)
        return DeploymentOut.model_validate(asdict(d))

    def nf_set(self, node: str, instance: str, params: dict[str, int]) -> DeploymentOut:
        """Change some parameters of an instance; the others keep their values."""
        row = self._instance(node, instance)
        return self.nf_deploy(node, InstanceIn(nf=row.nf, id=row.id, interfaces=list(row.interfaces),
                                               params={**row.params, **params}, target=row.target))

    def nf_remove(self, node: str, instance: str) -> Removed:
        self._node(node)
        if not self.controller.remove(node, instance):
            raise NotFound(f"no NF instance '{instance}' on {node}", hint=f"innet nf list {node} lists them")
        return Removed(node=node, instance=instance, removed=True)

    def stats(self, node: str, instance: str, stat: str) -> dict[str, int]:
        self._instance(node, instance)
        return self.controller.read_stat(node, instance, stat)

    def nfs(self) -> list[NFOut]:
        return [NFOut.of(nf) for nf in load_catalog().values()]

    # ---- routes ---------------------------------------------------------------------------
    def routes_list(self, node: str, instance: str = ROUTER) -> list[RouteOut]:
        self._instance(node, instance)
        return [RouteOut.model_validate(asdict(r)) for r in RouteService(self.controller, instance).list(node)]

    def routes_add(self, node: str, routes: list[Route], instance: str = ROUTER) -> RoutesChanged:
        """Add or replace routes in both paths, all or none."""
        self._instance(node, instance)
        added = RouteService(self.controller, instance).add_many(node, routes)
        return RoutesChanged(node=node, instance=instance, routes=len(added))

    def routes_del(self, node: str, prefixes: list[str], instance: str = ROUTER) -> RoutesChanged:
        self._instance(node, instance)
        deleted = RouteService(self.controller, instance).delete_many(node, prefixes)
        if not deleted:
            listed = ", ".join(prefixes[:3]) + (f" and {len(prefixes) - 3} more" if len(prefixes) > 3 else "")
            raise NotFound(f"{node} has no route {listed}", hint=f"innet routes list {node} lists them")
        return RoutesChanged(node=node, instance=instance, routes=deleted)

    # ---- flows ----------------------------------------------------------------------------
    def hh(self, node: str, instance: str, k: int = 10, by: str = "packets", after: int | None = None) -> TopFlows:
        """The top k flows of the instance's latest interval, from its one sampler; with
        `after` (the number of the interval the caller has), the next one is waited for."""
        self._instance(node, instance)
        return self.samplers.top(node, instance, k, by, after)

    def watch(self, node: str, instance: str) -> None:
        """Sample the instance's flows from now on, read or not (its top flows stay in /metrics)."""
        self._instance(node, instance)
        self.samplers.watch(node, instance, keep=True)
