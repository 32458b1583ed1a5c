"""Typed specs to the point of use: a stored object's spec is read as its kind's model, an old
row that today's rules refuse is a clear OutdatedSpecError (never a crash deep inside), and
no service or controller reaches into a spec with dict keys."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import wharf
from wharf.apps.model import APPLICATION, ApplicationSpec
from wharf.clusters.model import NODE_POOL, TenantGrants
from wharf.core.errors import ConflictError, OutdatedSpecError
from wharf.core.resources import spec_of
from wharf.store.resources import StoredResource
from wharf.tenancy.model import PROJECT, TENANT, ProjectSpec, TenantSpec

SOURCE = Path(wharf.__file__).parent
# Where a kind's spec is used: every capability's services and controllers.
USE_SITES = sorted(
    [
        *SOURCE.glob("*/service.py"),
        *SOURCE.glob("*/controller.py"),
        SOURCE / "tenancy/kubeconfig.py",
    ]
)
# Revision rows are history: shown as they were stored, under whatever rules held then.
HISTORY = {("apps/service.py", "list_revisions")}


def stored(kind: str, spec: dict[str, Any], tenant: str = "", name: str = "x") -> StoredResource:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return StoredResource(
        1, kind, tenant, name, "uid", 1, 1, {}, {}, spec, {}, created_at=when, updated_at=when
    )


def test_a_stored_spec_is_read_as_its_kinds_model_with_defaults():
    spec = PROJECT.typed(stored("Project", {"quota": {"cpu": "2"}}, tenant="t1", name="web"))
    assert isinstance(spec, ProjectSpec)
    assert spec.quota == {"cpu": "2"}
    assert spec.podSecurity == "baseline"  # a row from before the field existed
    assert spec.containerDefaults.default == {"cpu": "500m", "memory": "512Mi"}
    tenant = TENANT.typed(stored("Tenant", {"admins": ["ann"], "nodePools": ["gpu"]}))
    assert isinstance(tenant, TenantSpec)
    assert tenant.admins == ["ann"]


def test_a_kind_refuses_to_read_another_kinds_row():
    with pytest.raises(TypeError, match="a Tenant is not a Project"):
        PROJECT.typed(stored("Tenant", {}))


def test_an_old_row_todays_rules_refuse_is_a_clear_outdated_spec_error():
    old = stored(
        "Application",
        {"project": "web", "environment": "dev", "template": {"name": "nginx"}, "gone": 1},
        tenant="t1",
        name="shop",
    )
    with pytest.raises(OutdatedSpecError) as caught:
        APPLICATION.typed(old)
    exc = caught.value
    assert isinstance(exc, ConflictError)
    assert exc.status == 409
    assert exc.code == "conflict"  # one of the documented codes
    assert exc.field == "spec.template.version"
    assert "Application 'shop' in tenant 't1'" in exc.message
    assert "no longer meets today's rules" in exc.message
    assert "apply it again with a valid spec" in exc.message
    assert exc.details == {"kind": "Application", "name": "shop"}


def test_a_view_reads_only_what_it_names():
    tenant = stored("Tenant", {"clusters": ["a"], "nodePools": ["gpu"], "quota": {"cpu": "4"}})
    assert spec_of(tenant, TenantGrants) == TenantGrants(clusters=["a"], nodePools=["gpu"])


def test_dump_is_the_stored_form():
    spec = NODE_POOL.parse_spec({"cluster": "c1", "nodeSelector": {"zone": "a"}})
    assert NODE_POOL.dump(spec) == {
        "cluster": "c1",
        "nodeSelector": {"zone": "a"},
        "taints": [],
        "tenants": [],
    }
    app = APPLICATION.parse_spec(
        {
            "project": "web",
            "environment": "dev",
            "template": {"name": "nginx", "version": "1.0.0"},
            "overrides": {"c1": {"env": {"A": "1"}}},
        }
    )
    assert isinstance(app, ApplicationSpec)
    assert "replicas" not in APPLICATION.dump(app)["overrides"]["c1"]  # unset stays unset


def _dict_reads(text: str, module: str) -> list[str]:
    """`x.spec[...]` and `x.spec.get(...)`, and ad-hoc `Model.model_validate(x.spec)`, with
    the function they are in."""
    tree = ast.parse(text)
    found: list[str] = []

    def is_spec(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "spec"

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        hit = (isinstance(node, ast.Subscript) and is_spec(node.value)) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and (
                (node.func.attr == "get" and is_spec(node.func.value))
                or (node.func.attr == "model_validate" and any(map(is_spec, node.args)))
            )
        )
        where = (module, function)
        if hit and where not in HISTORY:
            found.append(f"{where[0]}:{getattr(node, 'lineno', '?')} in {function}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


def test_services_and_controllers_read_typed_specs_not_dict_keys():
    assert len(USE_SITES) >= 8  # apps, clusters, tenancy, resources, ... (the glob works)
    found = [
        hit
        for path in USE_SITES
        for hit in _dict_reads(path.read_text(), str(path.relative_to(SOURCE)))
    ]
    assert found == [], "read the kind's typed spec (Kind.typed, Change.spec) instead"


def test_the_guard_sees_a_dict_read():
    text = (
        "def f(stored, row):\n"
        "    a = stored.spec['quota']\n"
        "    b = stored.spec.get('admins', [])\n"
        "    c = ProjectSpec.model_validate(stored.spec)\n"
        "    d = PROJECT.typed(stored).quota\n"
        "def list_revisions(row):\n"
        "    return row.spec['template']\n"
    )
    hits = _dict_reads(text, "apps/service.py")
    assert hits == [f"apps/service.py:{n} in f" for n in (2, 3, 4)]
