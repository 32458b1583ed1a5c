"""Rendering treats values as data; templates are checked before they can be published."""

from __future__ import annotations

import json

import pytest

from wharf.apps.catalog import CATALOG
from wharf.apps.model import TemplateVersion, check_version, import_yaml, render
from wharf.core.errors import InvalidError


def version(objects, properties, required=()) -> TemplateVersion:
    return TemplateVersion(
        version="1.0.0",
        parameters={"type": "object", "properties": properties, "required": list(required)},
        objects=objects,
    )


CONFIG = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "${name}"},
    "data": {"greeting": "hello ${who}!", "literal": "$${who}"},
}
DEPLOY = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "${name}"},
    "spec": {"replicas": "${replicas}", "paused": "${paused}"},
}
PROPS = {
    "name": {"type": "string"},
    "who": {"type": "string", "default": "world"},
    "replicas": {"type": "integer", "default": 2},
    "paused": {"type": "boolean"},
}


def test_whole_placeholders_keep_the_value_type_and_inline_ones_become_text():
    tv = version([CONFIG, DEPLOY], PROPS, required=["name"])
    config, deploy = render(tv, {"name": "shop", "paused": False})
    assert config["data"] == {"greeting": "hello world!", "literal": "${who}"}
    assert deploy["spec"] == {"replicas": 2, "paused": False}
    assert deploy["metadata"]["name"] == "shop"


@pytest.mark.parametrize(
    "attack",
    [
        "${replicas}",
        "{{ .Values.secret }}",
        "$(cat /etc/passwd)",
        "{% for x in range(10) %}x{% endfor %}",
        "__import__('os').system('id')",
        "$${name}",
        "${name",
    ],
)
def test_a_template_injection_attempt_is_rendered_as_a_literal_string(attack):
    tv = version([CONFIG, DEPLOY], PROPS, required=["name"])
    config, deploy = render(tv, {"name": "shop", "who": attack, "paused": True})
    assert config["data"]["greeting"] == f"hello {attack}!"
    assert deploy["spec"]["replicas"] == 2
    # Nothing else changed: the attack text is not scanned again.
    assert json.dumps(config).count(attack.replace('"', '\\"')) == 1


def test_values_are_checked_against_the_schema_with_the_field_named():
    tv = version([DEPLOY], {**PROPS, "tier": {"enum": ["web", "batch"]}}, required=["name"])
    with pytest.raises(InvalidError) as missing:
        render(tv, {"paused": True})
    assert "'name' is a required property" in missing.value.message
    with pytest.raises(InvalidError) as wrong_type:
        render(tv, {"name": "x", "replicas": "two"})
    assert wrong_type.value.field == "spec.values.replicas"
    with pytest.raises(InvalidError) as not_in_enum:
        render(tv, {"name": "x", "tier": "gpu"})
    assert not_in_enum.value.field == "spec.values.tier"


def test_a_version_must_declare_every_placeholder_and_render_only_known_kinds():
    with pytest.raises(InvalidError) as undeclared:
        check_version(version([CONFIG], {"name": {"type": "string"}}), "spec.versions[0]")
    assert "uses ${who}" in undeclared.value.message
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    with pytest.raises(InvalidError) as kind:
        check_version(version([pod], {}), "spec.versions[0]")
    assert kind.value.field == "spec.versions[0].objects[0].kind"
    bad_schema = TemplateVersion(version="1.0.0", parameters={"type": "nonsense"}, objects=[CONFIG])
    with pytest.raises(InvalidError) as schema:
        check_version(bad_schema, "spec.versions[0]")
    assert schema.value.field == "spec.versions[0].parameters"


def test_raw_yaml_imports_with_its_placeholders_as_required_parameters():
    text = """
apiVersion: v1
kind: Service
metadata: {name: "${name}"}
spec:
  ports: [{port: 80, targetPort: "${port}"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: "${name}"}
"""
    tv = import_yaml(text, "2.1.0")
    assert tv.parameters["required"] == ["name", "port"]
    service, account = render(tv, {"name": "api", "port": "8080"})
    assert service["spec"]["ports"][0]["targetPort"] == "8080"
    assert account["metadata"]["name"] == "api"
    with pytest.raises(InvalidError):
        import_yaml("kind: [unclosed")


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_template_renders_with_requests_limits_and_no_latest_tag(name):
    tv = TemplateVersion.model_validate(CATALOG[name]["versions"][0])
    check_version(tv, "spec.versions[0]")
    objects = render(tv, {"name": "demo", "image": "registry.example/demo:1.2.3"})
    kinds = {o["kind"] for o in objects}
    assert kinds & {"Deployment", "StatefulSet", "CronJob"}
    text = json.dumps(objects)
    assert "${" not in text
    assert ":latest" not in text
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
            "spec", {}
        ).get("template", {}).get("spec")
        for container in (pod or {}).get("containers", []):
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]
