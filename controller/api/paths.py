"""GET /paths (operation te_status): the path allocator's per-flow overrides and its latest
decisions. The closed loop (controller.te.loop, `innet te run`) keeps both in the store."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from controller.te.live import parse_flow_key


class PinOut(BaseModel):
    node: str
    egress_port: str
    dst_mac: str


class PathOverrideOut(BaseModel):
    flow: str = Field(description="'src dst sport dport proto', as the heavy-hitter NFs key it")
    shown: str = Field(description="the flow as `innet hh` prints it")
    path: list[str] = Field(description="the nodes it crosses, source host first")
    pins: list[PinOut] = Field(description="the routers' flow_routes entries that hold it there, ingress first")
    retiring: int = Field(description="entries of the path it left not yet removed (0 once a move is complete)")
    since: float


class DecisionOut(BaseModel):
    id: int
    at: float
    summary: str
    moves: list[dict]
    elephants: dict[str, dict]
    decision_ms: float | None
    install_ms: float | None


class PathsOut(BaseModel):
    overrides: list[PathOverrideOut]
    decisions: list[DecisionOut] = Field(description="newest first")


def paths_view(controller, limit: int = 20) -> PathsOut:
    overrides = [PathOverrideOut(flow=row.flow, shown=str(parse_flow_key(row.flow)), path=list(row.path),
                                 pins=[PinOut(node=p["node"], egress_port=p["params"]["egress_port"],
                                              dst_mac=p["params"]["dst_mac"]) for p in row.entries],
                                 retiring=len(row.retiring), since=row.since)
                 for row in controller.store.path_overrides().values()]
    decisions = [DecisionOut(id=d.id, at=d.at, summary=d.summary, moves=d.detail.get("moves", []),
                             elephants=d.detail.get("elephants", {}),
                             decision_ms=_ms(d.detail.get("decision_s")), install_ms=_ms(d.detail.get("install_s")))
                 for d in controller.store.decisions(limit)]
    return PathsOut(overrides=overrides, decisions=decisions)


def router(resources) -> APIRouter:
    api = APIRouter()

    @api.get("/paths", operation_id="te_status", tags=["traffic engineering"])
    def te_status(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> PathsOut:
        """The per-flow path overrides the closed loop (innet te run) holds, and its latest
        decisions: elephants, their demands and paths, moves and their timing."""
        return resources.te_status(limit)
    return api


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 3)
