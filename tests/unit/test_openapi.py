"""The OpenAPI document names a schema for every body and answer, and matches the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from wharf.core.config import Settings
from wharf.core.resources import Kind
from wharf.server import create_app

REF = "#/components/schemas/"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Kind]]:
    db = tmp_path_factory.mktemp("openapi") / "w.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", secret_key="k"))
    kinds = [r.kind for r in app.state.platform.rules]
    return TestClient(app).get("/openapi.json").json(), kinds


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in METHODS
    ]


def _named(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """A body is documented when it refers to named schemas (one, or one of several)."""
    refs = [schema] if "$ref" in schema else schema.get("oneOf", [])
    return bool(refs) and all(
        r.get("$ref", "").startswith(REF) and r["$ref"][len(REF) :] in components for r in refs
    )


def _free(schema: dict[str, Any]) -> bool:
    """Any JSON at all: no type, or an object with neither properties nor a value schema."""
    if any(k in schema for k in ("$ref", "anyOf", "oneOf", "allOf", "enum", "const")):
        return False
    if "type" not in schema:
        return True
    return (
        schema["type"] == "object"
        and not schema.get("properties")
        and schema.get("additionalProperties", True) is True
    )


def _plain(schema: Any) -> Any:
    """The schema without `default: null`, which FastAPI leaves out of the document."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def _undocumented_free_fields(name: str, schema: dict[str, Any]) -> list[str]:
    out = []
    for field, sub in schema.get("properties", {}).items():
        if _free(sub) and not sub.get("description"):
            out.append(f"{name}.{field}")
    return out


def test_every_body_and_answer_of_every_route_is_a_named_schema(served):
    doc, _ = served
    components = doc["components"]["schemas"]
    loose = []
    for method, path, op in _operations(doc):
        body = op.get("requestBody", {}).get("content", {})
        for media, content in body.items():
            if not _named(content.get("schema", {}), components):
                loose.append(f"{method} {path} request ({media})")
        for status, answer in op["responses"].items():
            for media, content in answer.get("content", {}).items():
                if not _named(content.get("schema", {}), components):
                    loose.append(f"{method} {path} {status} ({media})")
    assert loose == []
    assert len(_operations(doc)) >= 50


def test_no_schema_holds_a_free_object_without_saying_what_goes_in_it(served):
    doc, _ = served
    components = doc["components"]["schemas"]
    assert [f for n, s in components.items() for f in _undocumented_free_fields(n, s)] == []


def test_every_4xx_answer_is_wharfs_error_body(served):
    doc, _ = served
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert {"code", "message", "field", "details"} <= set(error["properties"])
    for method, path, op in _operations(doc):
        errors = {s: a for s, a in op["responses"].items() if s.startswith("4")}
        assert "422" in errors, f"{method} {path}"
        for status, answer in errors.items():
            content = answer["content"]["application/json"]
            assert content["schema"] == {"$ref": REF + "ErrorBody"}, f"{method} {path} {status}"
            assert content["example"]["code"]
        if op.get("security"):
            assert {"401", "403"} <= set(errors), f"{method} {path}"


def test_every_kind_has_a_schema_of_its_own_that_is_its_model(served):
    doc, kinds = served
    components = doc["components"]["schemas"]
    assert {k.name for k in kinds} == {
        "Cluster",
        "NodePool",
        "Tenant",
        "Project",
        "AppTemplate",
        "Application",
        "Registry",
        "Robot",
        "RetentionPolicy",
        "ImmutableTags",
        "ReplicationRule",
        "SignaturePolicy",
        "AnalysisTemplate",
        "NodePortRange",
        "DomainGrant",
        "Certificate",
        "TrafficPolicy",
        "ReleaseWebhook",
        "AlertRule",
        "NotificationChannel",
    }
    for kind in kinds:
        schema = components[kind.name]
        assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
        assert schema["properties"]["kind"]["const"] == kind.name
        assert schema["properties"]["spec"]["$ref"] == REF + kind.spec.__name__
        model = kind.spec.model_json_schema(ref_template=REF + "{model}")
        defs = model.pop("$defs", {})
        assert _plain(components[kind.spec.__name__]) == _plain(model)
        for name, sub in defs.items():
            assert _plain(components[name]) == _plain(sub), f"{kind.name}: {name}"
        page = components[f"{kind.name}List"]
        assert page["properties"]["items"]["items"] == {"$ref": REF + kind.name}
        assert components["ListMeta"]["properties"]["continue"]


def test_each_kind_route_takes_and_returns_its_kind(served):
    doc, kinds = served
    for kind in kinds:
        base = (
            f"/api/v1/{kind.plural}"
            if kind.scope == "platform"
            else (f"/api/v1/tenants/{{tenant}}/{kind.plural}")
        )
        put = doc["paths"][f"{base}/{{name}}"]["put"]
        body = put["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": REF + kind.name}
        assert body["example"]["kind"] == kind.name
        assert put["responses"]["201"]["content"]["application/json"]["schema"] == {
            "$ref": REF + kind.name
        }
        listed = doc["paths"][base]["get"]["responses"]["200"]["content"]["application/json"]
        assert listed["schema"] == {"$ref": REF + f"{kind.name}List"}


def test_docs_openapi_json_is_the_document_the_server_serves(served):
    doc, _ = served
    published = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert published == doc, "docs/openapi.json is stale: uv run wharf openapi > docs/openapi.json"


def test_each_kind_s_json_schema_is_served_at_a_stable_url(tmp_path):
    with _admin(tmp_path) as (signed_in, auth):
        kinds = signed_in.get("/api/v1/kinds", headers=auth).json()["items"]
    client = TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}")))
    for info in kinds:
        assert info["schema"] == f"/api/v1/schemas/{info['kind'].lower()}.json"
        answer = client.get(info["schema"])  # no token: editors fetch it as it is
        assert answer.status_code == 200, answer.text
        schema = answer.json()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == info["kind"]
        assert schema["properties"]["kind"]["const"] == info["kind"]
        jsonschema.Draft202012Validator.check_schema(schema)
    application = client.get("/api/v1/schemas/application.json").json()
    jsonschema.validate(_demo("Application"), application)
    bad = _demo("Application")
    bad["spec"]["overrides"] = {"lab1": {"replicas": "three"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, application)
    missing = client.get("/api/v1/schemas/nothing.json")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def _demo(kind: str) -> dict[str, Any]:
    demo = Path(__file__).parents[2] / "examples" / "demo.yaml"
    return next(d for d in yaml.safe_load_all(demo.read_text()) if d["kind"] == kind)


@contextmanager
def _admin(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A server without controllers and the admin's Authorization header."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        secret_key="k",
        admin_password="admin-password-1",
        controllers=False,
    )
    with TestClient(create_app(settings)) as client:
        login = {"username": "admin", "password": "admin-password-1"}
        token = client.post("/api/v1/login", json=login).json()["token"]
        yield client, {"Authorization": f"Bearer {token}"}


def test_a_token_lifetime_past_its_limit_is_a_422_not_a_500(tmp_path):
    # Found by the conformance run: 86400000000000 seconds overflowed a timedelta.
    with _admin(tmp_path) as (client, auth):
        body = {"name": "ci", "expiresIn": 86400000000000}
        answer = client.post("/api/v1/tokens", json=body, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "body.expiresIn"


def test_a_resource_version_that_is_not_a_number_is_a_422_not_a_500(tmp_path):
    # Found by the conformance run: int("allowed") raised inside the write.
    with _admin(tmp_path) as (client, auth):
        body: dict[str, Any] = {"kind": "Tenant", "metadata": {"name": "shop"}}
        assert client.put("/api/v1/tenants/shop", json=body, headers=auth).status_code == 201
        body["metadata"]["resourceVersion"] = "allowed"
        answer = client.put("/api/v1/tenants/shop", json=body, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "metadata.resourceVersion"


def test_a_nul_character_anywhere_in_a_request_is_a_422_on_every_database(tmp_path):
    # Found by the conformance run: PostgreSQL cannot store U+0000 (a 500 there, not SQLite).
    with _admin(tmp_path) as (client, auth):
        login = client.post("/api/v1/login", json={"username": "\x00", "password": "x"})
        labelled = {"kind": "Tenant", "metadata": {"name": "shop", "labels": {"a": "b\x00"}}}
        body = client.put("/api/v1/tenants/shop", json=labelled, headers=auth)
        query = client.get("/api/v1/audit?actor=%00", headers=auth)
        path = client.get("/api/v1/tenants/a%00b", headers=auth)
        fine = {"kind": "Tenant", "metadata": {"name": "shop"}, "spec": {"displayName": "ok"}}
        stored = client.put("/api/v1/tenants/shop", json=fine, headers=auth)
    for answer, where in ((login, "body"), (body, "body"), (query, "query"), (path, "path")):
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == where
    assert stored.status_code == 201, stored.text


def test_a_wild_kubeconfig_lifetime_is_a_4xx_not_a_500(tmp_path):
    # Found by the conformance run: the token-lifetime check overflowed before the range check.
    with _admin(tmp_path) as (client, auth):
        answer = client.post(
            "/api/v1/tenants/0/projects/0/kubeconfig",
            params={"env": "dev", "ttl": -86399999913601},
            headers=auth,
        )
    assert 400 <= answer.status_code < 500, answer.text
