"""`wharf explain`: a kind's fields from its JSON Schema, as `kubectl explain` prints them."""

from __future__ import annotations

import pytest

from wharf.apps.model import APP_TEMPLATE, APPLICATION
from wharf.clusters.model import CLUSTER, NODE_POOL
from wharf.core.errors import NotFoundError
from wharf.core.resources import Kind, kind_schema
from wharf.resources.explain import explain
from wharf.tenancy.model import PROJECT, TENANT

KINDS = [CLUSTER, NODE_POOL, TENANT, PROJECT, APP_TEMPLATE, APPLICATION]


def test_explain_application_spec_overrides_says_how_to_write_one():
    text = explain(kind_schema(APPLICATION), ["spec", "overrides"])
    assert "FIELD:    spec.overrides <map[string]ClusterOverride>" in text
    assert "By cluster name" in text  # what the keys are
    for field, kind in [
        ("replicas", "<integer>"),
        ("registry", "<string>"),
        ("env", "<map[string]string>"),
        ("resources", "<ContainerResources>"),
    ]:
        assert f"  {field}\t{kind}" in text
    assert "LIMITS:   >= 0; <= 1000" in text
    assert "mirror.local:5000" in text
    outline = "WRITE IT AS:\n  overrides:\n    <key>:  # ClusterOverride\n      replicas:"
    assert outline in text


def test_explain_shows_allowed_values_defaults_and_required_fields():
    text = explain(kind_schema(PROJECT), ["spec", "podSecurity"])
    assert "ALLOWED:  baseline, restricted, privileged" in text
    assert 'DEFAULT:  "baseline"' in text
    environments = explain(kind_schema(PROJECT), ["spec", "environments"])
    assert "  name\t<string> -required-" in environments
    assert "LIMITS:   at most 12 characters" in environments
    assert "  - name: <string>" in environments
    top = explain(kind_schema(PROJECT), [])
    assert "KIND:     Project" in top
    assert "  spec\t<ProjectSpec> -required-" not in top  # a Project's spec may be left out
    assert "  metadata\t<Metadata> -required-" in top


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_spec_field_of_every_kind_is_described(kind: Kind):
    defs = kind.spec.model_json_schema().get("$defs", {})
    models = {kind.spec.__name__: kind.spec.model_json_schema(), **defs}
    undescribed = [
        f"{model}.{field}"
        for model, schema in models.items()
        for field, sub in schema.get("properties", {}).items()
        if not sub.get("description")
    ]
    assert undescribed == []
    assert "DESCRIPTION:\n    Desired state" in explain(kind_schema(kind), ["spec"])


def test_explain_names_the_fields_there_are_when_one_is_not():
    with pytest.raises(NotFoundError) as caught:
        explain(kind_schema(TENANT), ["spec", "quotas"])
    assert "no field 'quotas'" in caught.value.message
    assert "quota, clusters" in caught.value.message
