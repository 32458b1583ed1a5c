"""The OpenAPI document says exactly what each route takes and returns.

Each kind's routes name its own schema (`Tenant`, `ProjectList`, …) for bodies and answers; the
4xx answers carry Wharf's error body (`ErrorBody`), not FastAPI's validation shape, because
that is what the server sends. Bodies of the kinds'
routes are read as plain JSON (see `resources.api`), so their request schemas are written here
rather than derived from a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from wharf.core.errors import ErrorBody
from wharf.core.resources import API_VERSION, Kind

REF = "#/components/schemas/"
ERRORS = {
    401: ("unauthenticated", "No valid token: send Authorization: Bearer <token>"),
    403: ("forbidden", "The caller may see the object but not do this to it"),
    404: ("not_found", "No such object, or one the caller may not know of"),
    409: ("conflict", "The name is taken, or metadata.resourceVersion is stale: read again"),
    413: ("too_large", "The body is over the server's bound (WHARF_MAX_BODY_BYTES)"),
    422: ("invalid", "Bad input: `field` names where, `message` says what is wrong"),
    429: ("throttled", "Too many failed password checks: wait the Retry-After seconds"),
}
ERROR_EXAMPLES = {
    401: "send Authorization: Bearer <token> (see `wharf login`)",
    403: "dev may not change Tenant 'demo'",
    404: "Project 'shop' not found in tenant 'demo'",
    409: "Project 'shop' was changed by someone else (resourceVersion 7 is stale): read it "
    "again and retry",
    413: "the body is over 1048576 bytes",
    422: "spec.quota.cpu: would exceed tenant demo by 2 (tenant demo 16, others hold 14, this "
    "asks 4)",
    429: "too many failed sign-ins: try again in 60 s",
}
# What a client writes for each kind (the demo's objects and their like).
EXAMPLES: dict[str, dict[str, Any]] = {
    "Cluster": {
        "metadata": {"name": "lab1", "labels": {"env": "lab"}},
        "spec": {"kubeconfig": "apiVersion: v1\nkind: Config\n…", "description": "Lab cluster"},
    },
    "NodePool": {
        "metadata": {"name": "gpu"},
        "spec": {
            "cluster": "lab1",
            "nodeSelector": {"pool": "gpu"},
            "taints": [{"key": "gpu", "effect": "NoSchedule"}],
            "tenants": ["demo"],
        },
    },
    "Tenant": {
        "metadata": {"name": "demo", "labels": {"department": "retail"}},
        "spec": {
            "displayName": "Retail department",
            "admins": ["dev"],
            "quota": {"cpu": "16", "memory": "32Gi", "pods": "100"},
            "clusters": ["lab1", "lab2"],
        },
    },
    "Project": {
        "metadata": {"name": "shop", "tenant": "demo"},
        "spec": {
            "displayName": "Online shop",
            "members": [{"user": "dev", "role": "developer"}],
            "quota": {"cpu": "8", "memory": "16Gi", "pods": "40"},
            "environments": [
                {"name": "dev", "clusters": ["lab1", "lab2"]},
                {"name": "prod", "clusters": ["lab1", "lab2"], "quota": {"cpu": "6"}},
            ],
        },
    },
    "AppTemplate": {
        "metadata": {"name": "hello"},
        "spec": {
            "description": "One container behind a Service",
            "versions": [
                {
                    "version": "1.0.0",
                    "published": True,
                    "parameters": {
                        "type": "object",
                        "properties": {"image": {"type": "string"}},
                        "required": ["image"],
                    },
                    "objects": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "hello"},
                            "data": {"image": "${image}"},
                        }
                    ],
                }
            ],
        },
    },
    "Application": {
        "metadata": {"name": "storefront", "tenant": "demo"},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "storefront", "image": "registry.example/shop/storefront:1.0.0"},
            "overrides": {"lab2": {"replicas": 3, "env": {"REGION": "south"}}},
            "config": {"configMaps": {"settings": {"THEME": "autumn"}}},
            "strategy": {
                "type": "canary",
                "canary": {
                    "steps": [
                        {"setWeight": 20},
                        {"analysis": {"templates": ["error-rate"]}},
                        {"setWeight": 100},
                    ]
                },
                "waves": [{"clusters": ["lab1"]}, {"clusters": ["lab2"]}],
                "bakeSeconds": 60,
            },
        },
    },
    "AnalysisTemplate": {
        "metadata": {"name": "error-rate", "tenant": "demo"},
        "spec": {
            "metrics": [
                {
                    "name": "errors",
                    "query": 'sum(rate(http_requests_total{app="${app}",code=~"5.."}[1m])) / '
                    'sum(rate(http_requests_total{app="${app}"}[1m]))',
                    "interval": 30,
                    "count": 5,
                    "successCondition": "result < 0.01",
                    "failureCondition": "result > 0.05",
                }
            ]
        },
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def example_of(kind: Kind[Any]) -> dict[str, Any]:
    example = EXAMPLES.get(kind.name, {"metadata": {"name": "example"}, "spec": {}})
    return {"apiVersion": API_VERSION, "kind": kind.name, **example}


def response_of(
    model: type[BaseModel], description: str, status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """An answer documented by a model (the route itself returns the JSON already made)."""
    return {status: {"model": model, "description": description}}


def kind_body(kind: Kind[Any]) -> dict[str, Any]:
    """The request body of a kind's create and apply routes: the kind's own schema."""
    return {
        "requestBody": {
            "required": True,
            "description": f"A whole {kind.name}: apiVersion, kind, metadata, spec",
            "content": {
                "application/json": {
                    "schema": ref(kind.name),
                    "example": example_of(kind),
                }
            },
        }
    }


def kinds_body(
    kinds: Iterable[Kind[Any]],
) -> tuple[dict[str, Any], dict[int | str, dict[str, Any]]]:
    """Request body and answers of POST /apply: any kind, told apart by `kind`."""
    kinds = list(kinds)
    any_kind = {
        "oneOf": [ref(k.name) for k in kinds],
        "discriminator": {"propertyName": "kind", "mapping": {k.name: REF + k.name for k in kinds}},
    }
    body = {
        "requestBody": {
            "required": True,
            "description": "A whole manifest of any kind, as `wharf apply -f` sends it",
            "content": {"application/json": {"schema": any_kind, "example": example_of(kinds[0])}},
        }
    }
    answers: dict[int | str, dict[str, Any]] = {
        status: {"description": what, "content": {"application/json": {"schema": any_kind}}}
        for status, what in ((200, "Updated (or unchanged)"), (201, "Created"))
    }
    return body, answers


# Routes that take credentials of their own (a password, a registry's secret), not a token.
SIGN_INS = ("/api/v1/login", "/api/v1/registry/token")
OWN_CREDENTIALS = (*SIGN_INS, "/api/v1/registries/{name}/events", "/api/v1/alerting/receiver")
# Routes that check a password under the login throttle (a long-lived token, a password
# change), so a token in hand guesses no faster than a login: 429 too.
THROTTLED = (*SIGN_INS, "/api/v1/tokens", "/api/v1/users/{name}/password")


def _errors_of(path: str, method: str, operation: dict[str, Any]) -> Iterator[int]:
    """The 4xx answers an operation can give: from its token, path and whether it writes.
    Any authenticated call may name something unknown (in its path, query or body): 404."""
    caller = bool(operation.get("security"))
    if caller or path in OWN_CREDENTIALS:
        yield 401
    if caller:
        yield 403
    if caller or any(p.get("in") == "path" for p in operation.get("parameters", [])):
        yield 404
    if caller and method in ("post", "put", "delete"):
        yield 409
    if method in ("post", "put", "patch"):
        yield 413  # every body is bounded before it is read
    yield 422
    if path in THROTTLED and method in ("post", "put"):
        yield 429


def _error_response(status: int) -> dict[str, Any]:
    code, what = ERRORS[status]
    example = {"code": code, "message": ERROR_EXAMPLES[status], "docs": f"…#{code}"}
    return {
        "description": what,
        "content": {"application/json": {"schema": ref("ErrorBody"), "example": example}},
    }


def describe(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, with Wharf's error body for every 4xx answer."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        openapi_version=app.openapi_version,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template=REF + "{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # the server answers with ErrorBody, never these
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in _errors_of(path, method, operation):
                responses[str(status)] = _error_response(status)
    return doc


def install(app: FastAPI) -> None:
    """Serve `describe(app)` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
