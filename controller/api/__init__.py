"""innet's REST API (`innet api`): FastAPI over controller.service, with Prometheus metrics.

app (routes), resources (the operations, shared with the CLI), models (pydantic, in and
out), auth (token, bind, body limit), errors (InnetError -> JSON and a status), flows (one
epoch owner per watched instance), metrics (/metrics), client (the same operations over
HTTP, for `innet --api URL`).
"""
