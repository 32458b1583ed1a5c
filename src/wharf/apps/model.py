"""Application templates: versioned, parameterised Kubernetes objects, rendered as data.

A template's objects carry explicit placeholders, `${name}`. Rendering replaces them in one
pass and never evaluates anything: a value is inserted as data (a whole-string placeholder
takes the value's own JSON type, one inside a longer string its text), and text that arrives
in a value — `${other}`, `{{ .Values.x }}`, `$(rm -rf /)` — stays exactly that text, because
substituted text is not scanned again. `$${x}` writes a literal `${x}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import yaml
from pydantic import Field, field_validator

from wharf.core.errors import InvalidError
from wharf.core.resources import Kind, Spec

PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
RENDERABLE_KINDS = {
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "ServiceAccount"),
}


class TemplateVersion(Spec):
    version: str
    published: bool = False
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the values (types, defaults, enums, required)",
    )
    objects: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError("use a semantic version such as 1.0.0")
        return value


class AppTemplateSpec(Spec):
    description: str = ""
    versions: list[TemplateVersion] = Field(min_length=1)


APP_TEMPLATE = Kind(
    name="AppTemplate",
    plural="apptemplates",
    scope="platform",
    spec=AppTemplateSpec,
    short_names=("apptemplate", "template", "templates", "tpl"),
    columns=(("VERSIONS", "status.versions"), ("DESCRIPTION", "spec.description")),
)


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string leaf with its dotted path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def placeholders(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Each parameter the objects use, with the first place it is used."""
    found: dict[str, str] = {}
    for path, text in _walk(objects, "objects"):
        for match in PLACEHOLDER.finditer(text):
            if not match.group(1):
                found.setdefault(match.group(2), path)
    return found


def check_version(tv: TemplateVersion, where: str) -> None:
    """A template version must be renderable: known kinds, declared parameters, valid schema."""
    for i, obj in enumerate(tv.objects):
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in RENDERABLE_KINDS:
            kinds = ", ".join(sorted(k for _, k in RENDERABLE_KINDS))
            raise InvalidError(
                f"{where}.objects[{i}]: {key[1]!r} ({key[0]}) is not a kind templates render "
                f"(they render: {kinds})",
                field=f"{where}.objects[{i}].kind",
            )
        if not isinstance(obj.get("metadata", {}).get("name"), str):
            raise InvalidError(
                f"{where}.objects[{i}].metadata.name: required",
                field=f"{where}.objects[{i}].metadata.name",
            )
    try:
        jsonschema.Draft202012Validator.check_schema(tv.parameters)
    except jsonschema.SchemaError as exc:
        raise InvalidError(
            f"{where}.parameters: not a valid JSON Schema: {exc.message}",
            field=f"{where}.parameters",
        ) from None
    declared = set(tv.parameters.get("properties", {}))
    for name, used_at in placeholders(tv.objects).items():
        if name not in declared:
            raise InvalidError(
                f"{used_at}: uses ${{{name}}}, which {where}.parameters does not declare",
                field=used_at.replace("objects", f"{where}.objects", 1),
            )
    resolve_values(tv, {}, where, require=False)


def resolve_values(
    tv: TemplateVersion, values: dict[str, Any], where: str = "spec.values", require: bool = True
) -> dict[str, Any]:
    """The values with the schema's defaults filled in, checked against the schema."""
    properties = tv.parameters.get("properties", {})
    resolved = {
        k: v["default"] for k, v in properties.items() if isinstance(v, dict) and "default" in v
    }
    resolved.update(values)
    validator = jsonschema.Draft202012Validator(tv.parameters)
    for error in sorted(validator.iter_errors(resolved), key=lambda e: list(e.path)):
        if not require and error.validator == "required":
            continue
        field = ".".join([where, *(str(p) for p in error.path)])
        raise InvalidError(f"{field}: {error.message}", field=field)
    return resolved


def _substitute(text: str, values: dict[str, Any], path: str) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole and not whole.group(1):
        name = whole.group(2)
        if name not in values:
            raise InvalidError(f"{path}: no value for ${{{name}}}", field=path)
        return values[name]

    def one(match: re.Match[str]) -> str:
        if match.group(1):  # $${x} is the escape for a literal ${x}
            return "${" + match.group(2) + "}"
        name = match.group(2)
        if name not in values:
            raise InvalidError(f"{path}: no value for ${{{name}}}", field=path)
        value = values[name]
        if isinstance(value, dict | list):
            raise InvalidError(
                f"{path}: ${{{name}}} is a {type(value).__name__} and can only stand alone",
                field=path,
            )
        return str(value).lower() if isinstance(value, bool) else str(value)

    return PLACEHOLDER.sub(one, text)


def _render(value: Any, values: dict[str, Any], path: str) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, values, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, values, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return _substitute(value, values, path)
    return value


def render(tv: TemplateVersion, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The template version's objects with every placeholder replaced by its value, as data."""
    resolved = resolve_values(tv, values)
    rendered: list[dict[str, Any]] = _render(tv.objects, resolved, "objects")
    return rendered


def import_yaml(text: str, version: str = "1.0.0", description: str = "") -> TemplateVersion:
    """A template version from raw Kubernetes YAML whose parameters are marked `${name}`.

    Each placeholder becomes a required string parameter; edit the schema afterwards to give
    types, defaults and enums.
    """
    try:
        objects = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise InvalidError(f"not valid YAML: {exc}", field="file") from None
    if not all(isinstance(o, dict) for o in objects):
        raise InvalidError("every YAML document must be a Kubernetes object", field="file")
    names = sorted(placeholders(objects))
    tv = TemplateVersion(
        version=version,
        description=description,
        parameters={
            "type": "object",
            "properties": {n: {"type": "string"} for n in names},
            "required": names,
        },
        objects=objects,
    )
    check_version(tv, "version")
    return tv
