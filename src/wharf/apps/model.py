"""Application templates: versioned, parameterised Kubernetes objects, rendered as data.

A template's objects carry explicit placeholders, `${name}`. Rendering replaces them in one
pass and never evaluates anything: a value is inserted as data (a whole-string placeholder
takes the value's own JSON type, one inside a longer string its text), and text that arrives
in a value — `${other}`, `{{ .Values.x }}`, `$(rm -rf /)` — stays exactly that text, because
substituted text is not scanned again. `$${x}` writes a literal `${x}`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, Literal

import jsonschema
import yaml
from pydantic import Field, field_validator

from wharf.core import documents
from wharf.core.errors import InvalidError
from wharf.core.quantity import parse_quantity
from wharf.core.resources import Kind, Spec
from wharf.tenancy.model import APP_LABEL as APP_LABEL  # placement leaves it to apps

PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
# Kubernetes' own rules: ConfigMap and Secret keys (IsConfigMapKey) and environment variable
# names (IsEnvVarName, the portable form); the objects' names are DNS labels here.
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
CONFIG_NAME_MAX = 63  # the object is named <application>-<name>, a DNS subdomain
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
    """One version of a template: its parameters and the objects they fill in."""

    version: str = Field(
        description="A semantic version such as 1.0.0",
        json_schema_extra={"pattern": SEMVER.pattern},
    )
    published: bool = Field(
        default=False,
        description="Published versions are immutable and may be delivered; drafts may change",
    )
    description: str = Field(default="", description="What changed in this version")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the values (types, defaults, enums, required)",
    )
    objects: list[dict[str, Any]] = Field(
        min_length=1,
        description="Kubernetes objects (Deployment, Service, …) with ${name} placeholders "
        "for the values",
    )

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError("use a semantic version such as 1.0.0")
        return value


class AppTemplateSpec(Spec):
    """A catalog entry: parameterised Kubernetes objects, versioned, rendered as data."""

    description: str = Field(default="", description="What the template delivers")
    versions: list[TemplateVersion] = Field(
        min_length=1, description="Its versions; published ones never change"
    )


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
        objects = [d for d in documents.load_all(text) if d]
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


# -- applications ----------------------------------------------------------------------------

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
RELEASE_ROLE = "wharf.io/release-role"  # on a release's canary objects: "canary"
CONFIG_HASH = "wharf.io/config-hash"


class TemplateRef(Spec):
    """Which template version the application renders."""

    name: str = Field(description="An AppTemplate's name (wharf get templates)")
    version: str = Field(description="One of its published versions, e.g. 1.0.0")


class ContainerResources(Spec):
    """Requests and limits for every container of the workloads."""

    requests: dict[str, str] = Field(
        default_factory=dict, description="Resource: quantity, e.g. cpu: 250m, memory: 256Mi"
    )
    limits: dict[str, str] = Field(
        default_factory=dict, description="Resource: quantity, e.g. cpu: '1', memory: 512Mi"
    )


class ClusterOverride(Spec):
    """What differs in one cluster; anything left out is as the template renders it."""

    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replicas of Deployments and StatefulSets"
    )
    registry: str | None = Field(
        default=None,
        description="Image registry mirror that replaces each image's registry, e.g. "
        "mirror.local:5000",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables (name: value) set in every container, over the "
        "template's own",
    )
    resources: ContainerResources | None = Field(
        default=None, description="Requests and limits that replace every container's"
    )


class Configuration(Spec):
    """ConfigMaps and Secrets delivered with the application, each read as environment
    variables by every container (envFrom)."""

    configMaps: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="name: {KEY: value}; becomes ConfigMap <app>-<name>",
    )
    secrets: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="name: {KEY: value}; becomes Secret <app>-<name>; sealed at rest, shown "
        "masked, and a masked value sent back keeps the old one",
    )


def config_key_problem(key: str) -> str | None:
    """Why Kubernetes would refuse a ConfigMap or Secret key, or None."""
    if len(key) > 253:
        return "is longer than 253 characters"
    if not CONFIG_KEY.match(key):
        return "may hold only letters, digits, '-', '_' and '.'"
    if key in (".", "..") or key.startswith(".."):
        return "may not be '.' or start with '..'"
    return None


def check_configuration(config: Configuration, overrides: dict[str, ClusterOverride]) -> None:
    """Names and keys that reach a cluster, checked as Kubernetes would, before they go."""
    for section, objects in (("configMaps", config.configMaps), ("secrets", config.secrets)):
        for name, data in objects.items():
            where = f"spec.config.{section}.{name}"
            if not CONFIG_NAME.match(name) or len(name) > CONFIG_NAME_MAX:
                raise InvalidError(
                    f"{where}: {name!r} is not a valid name: at most {CONFIG_NAME_MAX} lowercase "
                    "letters, digits and '-', starting and ending with a letter or digit",
                    field=where,
                )
            for key in data:
                problem = config_key_problem(key)
                if problem:
                    raise InvalidError(
                        f"{where}: key {key!r} {problem}", field=f"{where}.{key}", key=key
                    )
    for cluster, override in overrides.items():
        for name in override.env:
            if not ENV_NAME.match(name) or len(name) > 253:
                where = f"spec.overrides.{cluster}.env"
                raise InvalidError(
                    f"{where}: {name!r} is not a valid environment variable name",
                    field=f"{where}.{name}",
                )


# -- release strategy ------------------------------------------------------------------------


class PauseStep(Spec):
    """Wait: a number of seconds, or (no duration) until someone promotes."""

    duration: int | None = Field(
        default=None, ge=1, le=86400, description="Seconds; leave out to wait for a promote"
    )


class AnalysisStep(Spec):
    """Judge the canary by the metrics of analysis templates (wharf get analysistemplates)."""

    templates: list[str] = Field(
        min_length=1, max_length=10, description="Names of AnalysisTemplates in the tenant"
    )
    args: dict[str, str] = Field(
        default_factory=dict, description="Values for the templates' own args (name: value)"
    )


class CanaryStep(Spec):
    """One step of a canary: exactly one of setWeight, setReplicas, pause, analysis."""

    setWeight: int | None = Field(
        default=None, ge=0, le=100, description="Percent of the traffic (or replicas) to the canary"
    )
    setReplicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replicas of the canary workload"
    )
    pause: PauseStep | None = Field(default=None, description="Wait, or wait for a promote")
    analysis: AnalysisStep | None = Field(default=None, description="Measure, then go on or stop")

    def chosen(self) -> list[str]:
        """The kinds of step set (exactly one is valid; the service says so)."""
        names = ("setWeight", "setReplicas", "pause", "analysis")
        return [n for n in names if getattr(self, n) is not None]


class HeaderRoute(Spec):
    """Requests with this header (and value) go to the canary, whatever the weight."""

    name: str = Field(
        description="HTTP header name, e.g. X-Canary",
        json_schema_extra={"pattern": "^[A-Za-z0-9-]+$"},
    )
    value: str = Field(default="always", description="The value that routes to the canary")

    @field_validator("name")
    @classmethod
    def _header(cls, value: str) -> str:
        if not HEADER_NAME.match(value):
            raise ValueError("a header name is letters, digits and '-'")
        return value


class NginxRouting(Spec):
    """ingress-nginx canary annotations on a copy of the application's Ingress."""

    host: str = Field(description="The host the application's Ingress serves")
    header: HeaderRoute | None = Field(default=None, description="Route a header to the canary")


class TrafficRouting(Spec):
    """How traffic is shifted; without one, by the ratio of canary to stable replicas."""

    nginx: NginxRouting | None = Field(default=None, description="ingress-nginx canary")


class CanaryStrategy(Spec):
    """A canary workload beside the stable one, moved by steps."""

    steps: list[CanaryStep] = Field(min_length=1, max_length=50, description="In order")
    trafficRouting: TrafficRouting | None = Field(
        default=None, description="Router; none: replica ratio"
    )


class BlueGreenStrategy(Spec):
    """A preview workload of the new revision beside the live one, each with its Service;
    promotion switches the live Service's selector to the preview pods."""

    autoPromote: bool = Field(
        default=False, description="Switch as soon as the preview is up; else wait for a promote"
    )
    scaleDownDelaySeconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="After the switch, how long the old pods stay (abort switches back to "
        "them at once, creating no pod) before the stable workload takes the new revision",
    )


class Wave(Spec):
    """A set of clusters released together: by name, or by the clusters' labels."""

    clusters: list[str] = Field(default_factory=list, description="Cluster names")
    selector: dict[str, str] = Field(
        default_factory=dict, description="Cluster labels (all must match)"
    )
    maxParallel: int | None = Field(
        default=None,
        ge=1,
        description="Clusters of the wave released at the same time (all when left out); the "
        "next starts when one is promoted",
    )


class ReleaseStrategy(Spec):
    """How a new revision reaches the environment's clusters."""

    type: Literal["rolling", "canary", "blueGreen"] = Field(
        default="rolling", description="rolling: every cluster at once (the default)"
    )
    canary: CanaryStrategy | None = Field(default=None, description="Steps of a canary")
    blueGreen: BlueGreenStrategy | None = Field(
        default=None, description="Preview and switch (type blueGreen; defaults when left out)"
    )
    waves: list[Wave] = Field(
        default_factory=list,
        max_length=20,
        description="Clusters in order; leave out for one wave of every cluster",
    )
    bakeSeconds: int = Field(default=0, ge=0, le=86400, description="Wait between waves")
    onFailure: Literal["rollbackAll", "clusterOnly"] = Field(
        default="rollbackAll",
        description="rollbackAll: a failed cluster stops later waves and rolls back every "
        "cluster already changed; clusterOnly: only that cluster is rolled back",
    )


class ApplicationSpec(Spec):
    """A template version delivered with values to every cluster of a project's environment."""

    project: str = Field(description="The project (in the same tenant) it belongs to")
    environment: str = Field(
        description="The project's environment to deliver to: every cluster it is placed on"
    )
    template: TemplateRef = Field(description="The template version to render")
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Values for the template's parameters: their types, defaults and required "
        "names are the template version's parameters schema (wharf get template NAME -o yaml)",
    )
    overrides: dict[str, ClusterOverride] = Field(
        default_factory=dict,
        description="By cluster name: what differs in that cluster (replicas, registry mirror, "
        "env, resources); clusters not named get the template as rendered",
    )
    config: Configuration = Field(
        default_factory=Configuration, description="ConfigMaps and Secrets delivered with it"
    )
    strategy: ReleaseStrategy = Field(
        default_factory=ReleaseStrategy,
        description="How a new revision is released: rolling (default) or canary, in waves of "
        "clusters, judged by analysis templates (docs/releases.md)",
    )


APPLICATION = Kind(
    name="Application",
    plural="applications",
    scope="tenant",
    spec=ApplicationSpec,
    secret_fields=("config.secrets",),
    short_names=("application", "app", "apps"),
    columns=(
        ("PROJECT", "spec.project"),
        ("ENV", "spec.environment"),
        ("TEMPLATE", "spec.template.name"),
        ("STATE", "status.state"),
        ("REVISION", "status.revision"),
    ),
)


def config_hash(config: Configuration) -> str:
    """A digest of the configuration: it goes on the pod template, so a change rolls pods."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template if isinstance(template, dict) else None


def _mirror(image: str, registry: str) -> str:
    first, _, rest = image.partition("/")
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else image
    return f"{registry.rstrip('/')}/{path}"


def desired_objects(
    app: str,
    spec: ApplicationSpec,
    rendered: list[dict[str, Any]],
    cluster: str,
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    """The objects for one cluster: rendered, configuration added, overrides applied, labelled."""
    override = spec.overrides.get(cluster, ClusterOverride())
    objects = copy.deepcopy(rendered)
    refs: list[dict[str, Any]] = []
    for name, data in sorted(spec.config.configMaps.items()):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{app}-{name}"},
                "data": data,
            }
        )
        refs.append({"configMapRef": {"name": f"{app}-{name}"}})
    for name, data in sorted(spec.config.secrets.items()):
        # `data`, not `stringData`: the cluster stores and returns `data` only, so the desired
        # object can be compared with the live one (and nothing is written when they match).
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": f"{app}-{name}"},
                "data": _encoded(data),
            }
        )
        refs.append({"secretRef": {"name": f"{app}-{name}"}})
    digest = config_hash(spec.config)
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        meta["labels"] = {**meta.get("labels", {}), **labels, APP_LABEL: app}
        if obj["kind"] == "Secret" and "stringData" in obj:
            obj["data"] = {**obj.get("data", {}), **_encoded(obj.pop("stringData"))}
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        if override.replicas is not None and obj["kind"] in ("Deployment", "StatefulSet"):
            obj["spec"]["replicas"] = override.replicas
        template = _pod_spec(obj)
        if template is None:
            continue
        template_meta = template.setdefault("metadata", {})
        template_meta["annotations"] = {**template_meta.get("annotations", {}), CONFIG_HASH: digest}
        # Pods carry the ownership labels too (not in the selector), so watches find them.
        template_meta["labels"] = {**template_meta.get("labels", {}), **labels, APP_LABEL: app}
        for container in template.get("spec", {}).get("containers", []):
            if override.registry:
                container["image"] = _mirror(container["image"], override.registry)
            if override.env:
                env = [e for e in container.get("env", []) if e.get("name") not in override.env]
                env += [{"name": k, "value": v} for k, v in sorted(override.env.items())]
                container["env"] = env
            if override.resources is not None:
                container["resources"] = override.resources.model_dump(exclude_defaults=True)
            if refs:
                container["envFrom"] = [*container.get("envFrom", []), *refs]
    return objects


def _encoded(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(str(v).encode()).decode() for k, v in data.items()}


def workload_requests(objects: list[dict[str, Any]]) -> dict[str, Fraction]:
    """What the workloads ask of a namespace quota: requests x replicas, and pods."""
    total: dict[str, Fraction] = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        replicas = int(obj.get("spec", {}).get("replicas", 1) or 0)
        template = _pod_spec(obj) or {}
        total["pods"] = total.get("pods", Fraction(0)) + replicas
        for container in template.get("spec", {}).get("containers", []):
            for name, value in container.get("resources", {}).get("requests", {}).items():
                key = f"requests.{name}"
                total[key] = total.get(key, Fraction(0)) + replicas * parse_quantity(str(value))
    return total


CheckLevel = Literal["refuse", "warn", "off"]


def delivery_findings(
    objects: list[dict[str, Any]], allowed_registries: list[str]
) -> list[tuple[str, str]]:
    """(check, message) for each container that breaks a delivery rule."""
    findings: list[tuple[str, str]] = []
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        template = _pod_spec(obj) or {}
        for container in template.get("spec", {}).get("containers", []):
            where = f"{obj['kind']} {obj['metadata']['name']}, container {container.get('name')}"
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1].partition("@")[0]
            if ":" not in tag or tag.endswith(":latest"):
                findings.append(("latestTag", f"{where}: image {image} has no tag or :latest"))
            if allowed_registries and not any(
                image.startswith(r.rstrip("/") + "/") for r in allowed_registries
            ):
                findings.append(
                    (
                        "registry",
                        f"{where}: {image} is not from an allowed registry "
                        f"({', '.join(allowed_registries)})",
                    )
                )
            resources = container.get("resources", {})
            if not resources.get("requests") or not resources.get("limits"):
                findings.append(("resources", f"{where}: set both requests and limits"))
            long_running = obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
            if long_running and not (
                container.get("readinessProbe") and container.get("livenessProbe")
            ):
                findings.append(("probes", f"{where}: set readiness and liveness probes"))
    return findings
