"""Errors as the API answers them: a JSON Problem (message, hint, places) and a 4xx status,
never a traceback.

innet's own errors keep their message and hint; their class says the status: 404 for what
does not exist, 409 where the data plane or another writer stands in the way, 422 for a
request innet cannot carry out as written. A mistake in a service descriptor (NSDError) is a
422 whose message starts with the path in the document, which `errors[0].location` gives
alone; a service that cannot be placed on the testbed (ChainError) is a 422 too.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from controller.api.models import FieldError, Problem
from controller.chains import ChainError
from controller.errors import InnetError, TargetError
from controller.nsd.errors import NSDError
from controller.scope import ScopeError
from controller.store import SlotsFull, StoreError

log = logging.getLogger("innet.api")


class NotFound(InnetError):
    """An unknown node, NF instance, route or service."""


class TooBusy(InnetError):
    """The API cannot take this on now (no flow interval closed in time); try again."""


# most specific first
_STATUS: list[tuple[type[InnetError], int]] = [
    (NotFound, 404),
    (NSDError, 422),     # a mistake in a service descriptor, at a path in the document
    (ChainError, 422),   # a service the testbed cannot carry as described
    (SlotsFull, 409),    # the table is full
    (ScopeError, 409),   # another writer held the scope's lock for too long
    (TargetError, 409),  # the data plane refused the change (it holds something in the way, or failed)
    (TooBusy, 503),
    (StoreError, 500),
    (InnetError, 422),   # catalog, entry, topology, queue and statistics errors: the request as written
]


def status_of(exc: InnetError) -> int:
    return next(code for cls, code in _STATUS if isinstance(exc, cls))


def problem(status: int, error: str, hint: str | None = None, errors: list[FieldError] = (),
            headers: dict | None = None) -> JSONResponse:
    body = Problem(error=error, hint=hint, errors=list(errors))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def location(loc: tuple) -> str:
    """('body', 'routes', 3, 'prefix') -> 'body.routes[3].prefix'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(InnetError)
    async def innet_error(request: Request, exc: InnetError):
        places = [FieldError(location=exc.where or "(document)", message=exc.problem, hint=exc.hint)] \
            if isinstance(exc, NSDError) else []
        return problem(status_of(exc), exc.message, exc.hint, places)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [FieldError(location=location(e["loc"]), message=e["msg"], hint=(e.get("ctx") or {}).get("hint"))
                  for e in exc.errors()]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return problem(422, f"{first.location}: {first.message}{more}", first.hint, errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}: {exc}",
                       "a bug in innet; the API's log has the traceback")
