"""Property-based conformance: schemathesis reads the served OpenAPI document, generates
requests every operation's schema allows, and sends them as the platform admin to a whole
server with both lab clusters. No answer may be a 5xx, every answer must match its documented
status, content type and schema, and no body the schema allows may be refused for its shape.

WHARF_CONFORMANCE_EXAMPLES sets the examples per operation (default 50: about 2,300 cases
over the 51 operations on each database; operations with little to vary give fewer);
WHARF_CONFORMANCE_SEED replays a run; the suite's runs use a fixed seed so that what CI
checked is what a developer replays, and WHARF_CONFORMANCE_SEED=random explores new cases.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import Wharf
from wharf.core.resources import resource_model

SUITE_SEED = 20261129
# Rules JSON Schema cannot state, so the schema allows bodies the model refuses: uniqueness
# of list items by one field (environment names; uniqueItems compares whole items), a valid
# cron expression, a time zone in the IANA database.
UNSTATABLE = ("must be unique", "is not a cron expression", "is not an IANA time zone")
EXAMPLES = int(os.environ.get("WHARF_CONFORMANCE_EXAMPLES", "50"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _kind_of(path: str, wharf: Wharf) -> Any:
    """The kind whose manifest a route takes (None for the other routes)."""
    for rules in wharf.platform.rules:
        if f"/{rules.kind.plural}" in path and not path.endswith(("/rollback", "/kubeconfig")):
            return rules.kind
    return None


def _accepted_shape(case: Any, status: int, body: Any, wharf: Wharf) -> None:
    """A body its schema allows is one its model accepts, and the server never answers it
    with a shape error (a 422 listing the fields at fault); it may still refuse it for what
    it refers to (no such cluster, over quota, another name in the URL)."""
    if status == 422 and isinstance(body, dict):
        errors = (body.get("details") or {}).get("errors") or [{"message": body.get("message")}]
        if all(any(rule in str(e.get("message")) for rule in UNSTATABLE) for e in errors):
            return  # refused only for rules JSON Schema cannot state
    kind = _kind_of(case.operation.path, wharf)
    if kind is not None and isinstance(case.body, dict) and case.body.get("kind") == kind.name:
        resource_model(kind).model_validate(case.body)
        kind.parse_spec(case.body.get("spec", {}))
    if status == 422 and isinstance(body, dict):
        assert not (body.get("details") or {}).get("errors"), (
            f"{case.operation.label}: a request its schema allows was refused for its shape: {body}"
        )


# About 2,300 requests per database: 4 minutes on a quiet machine, past the suite's 10-minute
# guard against hangs when three test files share two cores (it is slow, not stuck).
@pytest.mark.timeout(1500)
def test_every_operation_conforms_to_its_documented_schema(wharf: Wharf) -> None:
    asked = os.environ.get("WHARF_CONFORMANCE_SEED", str(SUITE_SEED))
    run_seed = random.randrange(2**32) if asked == "random" else int(asked)
    schema = schemathesis.openapi.from_asgi("/openapi.json", wharf.app)
    headers = {"Authorization": f"Bearer {wharf.admin.token}"}
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @seed(run_seed)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def send(case: Any) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)
            try:
                body = response.json()
            except ValueError:
                body = None
            _accepted_shape(case, response.status_code, body, wharf)

        send()
    total = sum(statuses.values())
    print(
        f"\nconformance: {total} cases over {operations} operations, seed {run_seed} "
        f"(WHARF_CONFORMANCE_SEED={run_seed} replays it); answers by status: "
        f"{dict(sorted(statuses.items()))}"
    )
    assert operations >= 50
    assert not any(s >= 500 for s in statuses)
