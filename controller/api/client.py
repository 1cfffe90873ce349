"""The API's operations over HTTP: ApiClient has Resources' methods (same names, same
arguments, same models back), so `innet --api URL` runs every command unchanged against a
running API. An error answer is raised as an InnetError carrying the API's message and hint.
Standard library only (urllib): the client needs nothing the API server does not.
"""
from __future__ import annotations

import json
import urllib.error
from collections.abc import Mapping
import urllib.parse
import urllib.request

from controller.api.models import (DeploymentOut, FlowEstimate, InstanceIn, InstanceOut, InstanceShown, NFOut,
                                   NodeOut, OperationOut, Removed, RoutesChanged, RouteOut, ServiceDeleted,
                                   ServiceDeployed, ServiceOut, ServiceSummary, StatusOut, TopFlows, TopologyOut)
from controller.api.paths import PathsOut
from controller.errors import InnetError
from controller.routes import ROUTER, Route


class ApiError(InnetError):
    """The API answered with an error."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 600):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method: str, path: str, body=None, *, raw: tuple[bytes, str] | None = None, **query):
        """`body` goes as JSON; `raw` is (bytes, content type) to send as they are. A query
        value that is a list is sent once per item."""
        query = {k: v for k, v in query.items() if v is not None}
        url = self.url + urllib.parse.quote(path) + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
        data, content_type = raw or (None if body is None else json.dumps(body).encode(), "application/json")
        request = urllib.request.Request(url, data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            try:
                problem = json.load(exc)
            except ValueError:
                problem = {"error": f"{exc.code} {exc.reason}"}
            raise ApiError(exc.code, problem.get("error") or f"{exc.code} {exc.reason}", problem.get("hint")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InnetError(f"cannot reach the innet API at {self.url}: {reason}",
                             hint="is `innet api` running there? (it listens on 127.0.0.1:8181 by default)") from None

    def nodes(self) -> list[NodeOut]:
        return [NodeOut.model_validate(n) for n in self._call("GET", "/nodes")]

    def status(self) -> StatusOut:
        return StatusOut.model_validate(self._call("GET", "/status"))

    def topology(self) -> TopologyOut:
        return TopologyOut.model_validate(self._call("GET", "/topology"))

    def te_status(self, limit: int = 20) -> PathsOut:
        return PathsOut.model_validate(self._call("GET", "/paths", limit=limit))

    def operations(self, state: str | None = None, limit: int = 50) -> list[OperationOut]:
        return [OperationOut.model_validate(o) for o in self._call("GET", "/operations", state=state, limit=limit)]

    def nf_list(self, node: str) -> list[InstanceOut]:
        return [InstanceOut.model_validate(i) for i in self._call("GET", f"/nodes/{node}/nfs")]

    def nf_show(self, node: str, instance: str) -> InstanceShown:
        return InstanceShown.model_validate(self._call("GET", f"/nodes/{node}/nfs/{instance}"))

    def nf_deploy(self, node: str, spec: InstanceIn) -> DeploymentOut:
        return DeploymentOut.model_validate(self._call("POST", f"/nodes/{node}/nfs", spec.model_dump()))

    def nf_set(self, node: str, instance: str, params: dict[str, int]) -> DeploymentOut:
        return DeploymentOut.model_validate(self._call("PATCH", f"/nodes/{node}/nfs/{instance}", {"params": params}))

    def nf_remove(self, node: str, instance: str) -> Removed:
        return Removed.model_validate(self._call("DELETE", f"/nodes/{node}/nfs/{instance}"))

    def stats(self, node: str, instance: str, stat: str) -> dict[str, int]:
        return self._call("GET", f"/nodes/{node}/nfs/{instance}/stats/{stat}")

    def nfs(self) -> list[NFOut]:
        return [NFOut.model_validate(nf) for nf in self._call("GET", "/nfs")]

    def routes_list(self, node: str, instance: str = ROUTER) -> list[RouteOut]:
        return [RouteOut.model_validate(r) for r in self._call("GET", f"/nodes/{node}/routes", instance=instance)]

    def routes_add(self, node: str, routes: list[Route], instance: str = ROUTER) -> RoutesChanged:
        body = {"routes": [{"prefix": r.prefix, "interface": r.interface, "mac": r.mac, "via": r.via, "local": r.local}
                           for r in routes]}   # the API checks them, and says where a mistake is
        return RoutesChanged.model_validate(self._call("POST", f"/nodes/{node}/routes", body, instance=instance))

    def routes_del(self, node: str, prefixes: list[str], instance: str = ROUTER) -> RoutesChanged:
        return RoutesChanged.model_validate(self._call("DELETE", f"/nodes/{node}/routes", {"prefixes": prefixes},
                                                       instance=instance))

    def hh(self, node: str, instance: str, k: int = 10, by: str = "packets", after: int | None = None) -> TopFlows:
        return TopFlows.model_validate(self._call("GET", "/flows/top", node=node, nf=instance, k=k, by=by,
                                                  after=after))

    def estimate(self, node: str, instance: str, src: str, dst: str, proto: int, sport: int = 0, dport: int = 0,
                 bank: int | None = None) -> FlowEstimate:
        return FlowEstimate.model_validate(self._call("GET", "/flows/estimate", node=node, nf=instance, src=src,
                                                      dst=dst, proto=proto, sport=sport, dport=dport, bank=bank))

    def services_deploy(self, document: str | bytes | Mapping, bind: Mapping[str, str] | None = None,
                        nf_map: Mapping[str, str] | None = None, source: str | None = None) -> ServiceDeployed:
        if isinstance(document, Mapping):
            raw = (json.dumps(dict(document)).encode(), "application/json")
        else:   # YAML or JSON text, as written: the API reads the format from it
            raw = (document.encode() if isinstance(document, str) else document, "application/yaml")
        return ServiceDeployed.model_validate(self._call(
            "POST", "/services", raw=raw, source=source, bind=[f"{k}={v}" for k, v in (bind or {}).items()],
            nf=[f"{k}={v}" for k, v in (nf_map or {}).items()]))

    def services_list(self) -> list[ServiceSummary]:
        return [ServiceSummary.model_validate(s) for s in self._call("GET", "/services")]

    def services_show(self, name: str) -> ServiceOut:
        return ServiceOut.model_validate(self._call("GET", f"/services/{name}"))

    def services_delete(self, name: str) -> ServiceDeleted:
        return ServiceDeleted.model_validate(self._call("DELETE", f"/services/{name}"))
