"""schemathesis over the API's own OpenAPI schema, against a real `innet api` process over a
real Mininet line3 testbed: for every operation, requests generated from the schema (its
examples first, so r1 and its nfrouter are hit, then a bounded number of generated ones)
never answer 5xx, answer only the statuses and content types the schema declares, with
bodies that match the declared models, and are refused without the token.
"""
from __future__ import annotations

import uuid

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, Phase, given, settings, strategies   # noqa: E402  (after the skip)
from schemathesis.checks import not_a_server_error   # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth,   # noqa: E402
                                               response_schema_conformance, status_code_conformance)

from controller.api.auth import read_token, token_path   # noqa: E402
from controller.scope import Scope   # noqa: E402
from controller.service import Controller   # noqa: E402
from controller.topology import load_topology   # noqa: E402
from apiserver import running_api   # noqa: E402

pytestmark = pytest.mark.testbed
EXAMPLES = 60   # generated requests per operation: the whole run (testbed included) stays under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth]

# generated names almost never name what exists: most requests have theirs replaced by these,
# so they reach the data plane rather than stop at a 404
REAL = {"node": ("r1", "r2", "h1"), "instance": ("nfrouter", "rxcount"), "nf": ("cms", "nfrouter"),
        "stat": ("verdicts", "rx")}


def aim(case, draw) -> None:
    """Point the case's names (in its path or query) at real ones, each with probability 3/4."""
    for where in (case.path_parameters, case.query):
        for name, real in REAL.items():
            if where is not None and name in where and draw(strategies.integers(0, 3)):
                where[name] = draw(strategies.sampled_from(real))


@pytest.fixture(scope="module")
def served():
    """A running API over line3: its URL and its Authorization header."""
    from testbed.net import Testbed

    scope = Scope(f"t-{uuid.uuid4().hex[:8]}")
    tb = Testbed(load_topology("line3"), Controller(scope), progress=lambda msg: None).start()
    try:
        with running_api(scope.name) as url:
            yield url, {"Authorization": f"Bearer {read_token(token_path(scope))}"}
    finally:
        tb.stop()
        scope.drop()


def test_every_operation_answers_as_its_schema_says(served):
    url, auth = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=auth, timeout=30)
    failures, tried = {}, 0
    # one hypothesis run per operation (schemathesis' pytest plugin cannot load a schema from a
    # fixture under pytest 9), its schema examples among the generated requests; no shrinking:
    # the first failure of an operation is reported as it came. Deletes go last, so the
    # instances they may remove are there for the other operations first.
    for operation in sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: op.method.upper() == "DELETE"):

        @given(case=strategies.one_of(*operation.get_strategies_from_examples(), operation.as_strategy()),
               data=strategies.data())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])
        def answers_by_schema(case, data):
            aim(case, data.draw)
            case.call_and_validate(headers=auth, checks=CHECKS, timeout=120)
        try:
            answers_by_schema()
        except Exception as exc:   # a check's failure, with the request that made it
            failures[operation.label] = str(exc)
        tried += 1
    assert tried >= 18, "every operation of the schema was tried"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
