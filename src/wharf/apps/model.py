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
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from fractions import Fraction
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import Field, field_validator

from wharf.clusters.model import Routing
from wharf.core import documents
from wharf.core.errors import InvalidError
from wharf.core.quantity import parse_quantity
from wharf.core.resources import Kind, Spec
from wharf.network.model import CanarySplit, NodePortRequest, Route, route_objects
from wharf.tenancy.model import APP_LABEL as APP_LABEL  # placement leaves it to apps

PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
# Kubernetes' own rules: ConfigMap and Secret keys (IsConfigMapKey) and environment variable
# names (IsEnvVarName, the portable form); the objects' names are DNS labels here.
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
HEADER_VALUE = re.compile(r"^[!-~]([ -~]*[!-~])?$")
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
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
    ("v1", "PersistentVolumeClaim"),
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
        if not SEMVER.fullmatch(value):
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
SCALED_KINDS = ("Deployment", "StatefulSet")  # what spec.replicas sets
UNBOUNDED = 10_000  # the room of a namespace without a quota
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
    minReplicas: int | None = Field(
        default=None, ge=1, le=1000, description="The autoscaler's lower bound in this cluster"
    )
    maxReplicas: int | None = Field(
        default=None, ge=1, le=1000, description="The autoscaler's upper bound in this cluster"
    )


# -- autoscaling -----------------------------------------------------------------------------


class ScalingRules(Spec):
    """How quickly the autoscaler may move in one direction."""

    stabilizationWindowSeconds: int = Field(
        ge=0,
        le=3600,
        description="The autoscaler acts on the highest (down) or lowest (up) recommendation "
        "of this many seconds, so a short dip or spike does not move replicas",
    )


class ScalingBehavior(Spec):
    """The HorizontalPodAutoscaler's behavior, as Kubernetes has it."""

    scaleUp: ScalingRules | None = Field(default=None, description="Scaling up")
    scaleDown: ScalingRules | None = Field(
        default=None, description="Scaling down (Kubernetes waits 300 seconds by default)"
    )


class ScalingWindow(Spec):
    """A recurring window (business hours, a nightly batch) with its own replica bounds."""

    name: str = Field(
        description="A name for the window, shown in the application's status",
        json_schema_extra={"pattern": CONFIG_NAME.pattern},
        max_length=CONFIG_NAME_MAX,
    )
    start: str = Field(description="Cron expression: when the window opens, e.g. 0 9 * * 1-5")
    end: str = Field(description="Cron expression: when it closes, e.g. 0 18 * * 1-5")
    timeZone: str = Field(
        default="UTC", description="IANA time zone the cron expressions are read in"
    )
    minReplicas: int | None = Field(
        default=None, ge=1, le=1000, description="Lower bound while the window is open"
    )
    maxReplicas: int | None = Field(
        default=None, ge=1, le=1000, description="Upper bound while the window is open"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CONFIG_NAME.fullmatch(value):
            raise ValueError("lowercase letters, digits and '-', starting with a letter or digit")
        return value

    @field_validator("start", "end")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a cron expression of five fields (minute hour "
                "day-of-month month day-of-week)"
            )
        return value

    @field_validator("timeZone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value


class Autoscaling(Spec):
    """A HorizontalPodAutoscaler for the application's workload, in every cluster."""

    minReplicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas")
    maxReplicas: int = Field(ge=1, le=1000, description="Most replicas")
    cpu: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Target average CPU use, in percent of the containers' CPU requests",
    )
    memory: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Target average memory use, in percent of the containers' memory requests",
    )
    behavior: ScalingBehavior | None = Field(
        default=None, description="How quickly it scales up and down"
    )
    schedules: list[ScalingWindow] = Field(
        default_factory=list,
        max_length=20,
        description="Windows that set other bounds while they are open (the first open one "
        "applies)",
    )


class ReplicaBounds(Spec):
    """An autoscaler's bounds as a scheduled window sets them (None: the application's)."""

    minReplicas: int | None = None
    maxReplicas: int | None = None


def check_autoscaling(spec: Autoscaling | None, overrides: dict[str, ClusterOverride]) -> None:
    """Bounds that can hold, and windows that open and close; before anything is stored."""
    if spec is not None:
        if spec.minReplicas > spec.maxReplicas:
            raise InvalidError(
                f"spec.autoscaling.minReplicas: {spec.minReplicas} is above maxReplicas "
                f"{spec.maxReplicas}",
                field="spec.autoscaling.minReplicas",
            )
        if spec.cpu is None and spec.memory is None:
            raise InvalidError(
                "spec.autoscaling: set a cpu or memory target (percent of the requests)",
                field="spec.autoscaling.cpu",
            )
        for i, window in enumerate(spec.schedules):
            check_window(window, f"spec.autoscaling.schedules[{i}]")
    for cluster, override in overrides.items():
        low, high = override.minReplicas, override.maxReplicas
        if low is not None and high is not None and low > high:
            raise InvalidError(
                f"spec.overrides.{cluster}.minReplicas: {low} is above maxReplicas {high}",
                field=f"spec.overrides.{cluster}.minReplicas",
            )


def check_window(window: ScalingWindow, where: str) -> None:
    if window.minReplicas is None and window.maxReplicas is None:
        raise InvalidError(f"{where}: set minReplicas, maxReplicas or both", field=where)
    low, high = window.minReplicas, window.maxReplicas
    if low is not None and high is not None and low > high:
        raise InvalidError(
            f"{where}.minReplicas: {low} is above maxReplicas {high}", field=f"{where}.minReplicas"
        )
    zone = ZoneInfo(window.timeZone)
    for edge in ("start", "end"):
        expression = getattr(window, edge)
        try:
            croniter(expression, dt.datetime.now(zone)).get_next(dt.datetime)
        except CroniterBadDateError:
            raise InvalidError(
                f"{where}.{edge}: {expression!r} never fires (no such date)",
                field=f"{where}.{edge}",
            ) from None


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
    if not CONFIG_KEY.fullmatch(key):
        return "may hold only letters, digits, '-', '_' and '.'"
    if key in (".", "..") or key.startswith(".."):
        return "may not be '.' or start with '..'"
    return None


def check_configuration(config: Configuration, overrides: dict[str, ClusterOverride]) -> None:
    """Names and keys that reach a cluster, checked as Kubernetes would, before they go."""
    for section, objects in (("configMaps", config.configMaps), ("secrets", config.secrets)):
        for name, data in objects.items():
            where = f"spec.config.{section}.{name}"
            if not CONFIG_NAME.fullmatch(name) or len(name) > CONFIG_NAME_MAX:
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
            if not ENV_NAME.fullmatch(name) or len(name) > 253:
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
        json_schema_extra={"pattern": HEADER_NAME.pattern},
    )
    value: str = Field(
        default="always",
        max_length=256,
        description="The value that routes to the canary",
        json_schema_extra={"pattern": HEADER_VALUE.pattern},
    )

    @field_validator("name")
    @classmethod
    def _header(cls, value: str) -> str:
        if not HEADER_NAME.fullmatch(value):
            raise ValueError("a header name is letters, digits and '-'")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        # It becomes an ingress-nginx annotation and an HTTPRoute match: no line breaks or
        # other control characters to carry anything past them.
        if not HEADER_VALUE.fullmatch(value):
            raise ValueError(
                "a header value is printable ASCII, without leading or trailing spaces"
            )
        return value


class CookieRoute(Spec):
    """Requests whose cookie of this name is `always` go to the canary, whatever the weight
    (`never`: never; any other value: by the weight), as ingress-nginx's canary-by-cookie."""

    name: str = Field(
        max_length=64,
        description="Cookie name, e.g. canary",
        json_schema_extra={"pattern": COOKIE_NAME.pattern},
    )

    @field_validator("name")
    @classmethod
    def _cookie(cls, value: str) -> str:
        if not COOKIE_NAME.fullmatch(value):
            raise ValueError("a cookie name is letters, digits, '_' and '-'")
        return value


class CanaryRouting(Spec):
    """Which host's traffic is shifted, and which requests reach the canary whatever the
    weight."""

    host: str = Field(description="One of the application's spec.routes hosts")
    header: HeaderRoute | None = Field(default=None, description="Route a header to the canary")
    cookie: CookieRoute | None = Field(default=None, description="Route a cookie to the canary")


class NginxRouting(CanaryRouting):
    """ingress-nginx canary annotations on a copy of the application's Ingress."""


class GatewayRouting(CanaryRouting):
    """Gateway API: the weights go on the backendRefs of the host's HTTPRoute (stable and
    canary Service), a header or cookie becomes a rule matching it that leads to the canary
    alone. Every cluster of the environment must route with a Gateway (spec.routing)."""


class TrafficRouting(Spec):
    """How traffic is shifted; without one, by the ratio of canary to stable replicas."""

    nginx: NginxRouting | None = Field(default=None, description="ingress-nginx canary")
    gatewayAPI: GatewayRouting | None = Field(
        default=None, description="Gateway API HTTPRoute weights and matches"
    )

    def chosen(self) -> CanaryRouting | None:
        return self.nginx or self.gatewayAPI

    def where(self) -> str:
        """The field path of the router that is set."""
        return "nginx" if self.nginx is not None else "gatewayAPI"


def canary_matches(routing: CanaryRouting) -> tuple[dict[str, str], ...]:
    """Gateway API header matches of the requests that go to the canary alone."""
    matches = []
    if routing.header is not None:
        header = routing.header
        matches.append({"type": "Exact", "name": header.name, "value": header.value})
    if routing.cookie is not None:
        cookie = f"(^|;\\s*){routing.cookie.name}=always(;|$)"
        matches.append({"type": "RegularExpression", "name": "Cookie", "value": cookie})
    return tuple(matches)


def canary_split(
    spec: ApplicationSpec, rendered: list[dict[str, Any]], weight: int
) -> CanarySplit | None:
    """The share of its Gateway API host a release's canary has at `weight` (None without
    Gateway API routing): the canary Service is beside the first Service the template renders,
    as the release controller makes it."""
    routing = spec.strategy.canary.trafficRouting if spec.strategy.canary else None
    gateway = routing.gatewayAPI if routing is not None else None
    services = [o["metadata"]["name"] for o in rendered if o["kind"] == "Service"]
    if gateway is None or not services:
        return None
    return CanarySplit(
        gateway.host, services[0], f"{services[0]}-canary", weight, canary_matches(gateway)
    )


def check_canary_route(spec: ApplicationSpec, rendered: list[dict[str, Any]]) -> None:
    """A Gateway API split weighs the host's route to the first Service the template renders
    (the canary is its copy): the host must lead there, or no route would ever carry the
    weight and the release would wait for it forever."""
    routing = spec.strategy.canary.trafficRouting if spec.strategy.canary else None
    gateway = routing.gatewayAPI if routing is not None else None
    if gateway is None:
        return
    where = "spec.strategy.canary.trafficRouting.gatewayAPI.host"
    services = [o["metadata"]["name"] for o in rendered if o["kind"] == "Service"]
    if not services:
        raise InvalidError(f"{where}: the template renders no Service to copy", field=where)
    if not any((r.host, r.service) == (gateway.host, services[0]) for r in spec.routes):
        raise InvalidError(
            f"{where}: no route of {gateway.host} leads to Service {services[0]}, the first "
            "Service the template renders (the canary is its copy)",
            field=where,
        )


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


class Failover(Spec):
    """Moving the replicas of a cluster that stays Unreachable to the application's other
    clusters (of its environment only), within their quota; moved back when it returns."""

    gracePeriodSeconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="How long one of its clusters stays Unreachable before its replicas move "
        "(the platform's failover_grace_seconds when unset)",
    )
    minAvailableClusters: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Replicas move only while at least this many of its clusters are Ready; "
        "with fewer, nothing moves (the last ones are not piled up)",
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
    nodePorts: list[NodePortRequest] = Field(
        default_factory=list,
        description="Service ports exposed on every node, each with a port from the tenant's "
        "NodePortRange in each cluster (asked for by number, or assigned)",
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="HTTP routes (host, path) into its Services, rendered in every cluster "
        "as an Ingress, or as Gateway API HTTPRoutes where the cluster has a Gateway "
        "(spec.routing); hosts under the tenant's domains, each held by one application",
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Replicas of Deployments and StatefulSets in every cluster, over the "
        "template's (`wharf scale` sets it; spec.overrides.<cluster>.replicas wins)",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="A HorizontalPodAutoscaler on CPU and memory, with scheduled windows "
        "(docs/observability.md); per-cluster bounds in spec.overrides",
    )
    failover: Failover | None = Field(
        default=None,
        description="Keep the total replicas when a cluster goes away: after a grace period "
        "its replicas run in the other clusters, within quota (docs/failover.md); not for "
        "autoscaled applications",
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


AUTOSCALER = "HorizontalPodAutoscaler"


def _scale_target(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The workload an application's autoscaler scales: its first Deployment or StatefulSet."""
    return next((o for o in objects if o["kind"] in ("Deployment", "StatefulSet")), None)


def _autoscaler_spec(auto: Autoscaling) -> dict[str, Any]:
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in (("cpu", auto.cpu), ("memory", auto.memory))
        if target is not None
    ]
    spec: dict[str, Any] = {
        "minReplicas": auto.minReplicas,
        "maxReplicas": auto.maxReplicas,
        "metrics": metrics,
    }
    if auto.behavior is not None:
        spec["behavior"] = auto.behavior.model_dump(exclude_none=True)
    return spec


def with_autoscaler(objects: list[dict[str, Any]], auto: Autoscaling) -> list[dict[str, Any]]:
    """The objects with the application's autoscaler: the template's own HPA takes its targets
    and bounds, or one is added for the workload (none: nothing to scale)."""
    target = _scale_target(objects)
    if target is None:
        return objects
    hpas = [o for o in objects if o["kind"] == AUTOSCALER]
    if not hpas:
        name = target["metadata"]["name"]
        ref = {"apiVersion": "apps/v1", "kind": target["kind"], "name": name}
        hpas = [
            {
                "apiVersion": "autoscaling/v2",
                "kind": AUTOSCALER,
                "metadata": {"name": name},
                "spec": {"scaleTargetRef": ref},
            }
        ]
        objects = [*objects, *hpas]
    for hpa in hpas:
        hpa["spec"] = {"scaleTargetRef": hpa["spec"]["scaleTargetRef"], **_autoscaler_spec(auto)}
    return objects


def _bound(hpa: dict[str, Any], *layers: ClusterOverride | ReplicaBounds | None) -> None:
    """Bounds in order of precedence, last wins; max never below min."""
    spec = hpa["spec"]
    for layer in layers:
        if layer is None:
            continue
        if layer.minReplicas is not None:
            spec["minReplicas"] = layer.minReplicas
        if layer.maxReplicas is not None:
            spec["maxReplicas"] = layer.maxReplicas
    spec["maxReplicas"] = max(int(spec["maxReplicas"]), int(spec.get("minReplicas", 1)))


def autoscaled(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, name) of each workload an autoscaler among the objects scales."""
    refs = (o["spec"].get("scaleTargetRef", {}) for o in objects if o["kind"] == AUTOSCALER)
    return {(r.get("kind", ""), r.get("name", "")) for r in refs}


def keep_autoscaled_replicas(
    objects: list[dict[str, Any]], currents: list[dict[str, Any] | None]
) -> None:
    """A workload the application's autoscaler scales keeps the replicas it set: delivery
    never fights it (it sends the live count, so applying other changes moves nothing).

    Only for `spec.autoscaling`: a template's own HPA without it leaves the spec's replicas
    in charge, as before (a replica change in the values still rolls out)."""
    scaled = autoscaled(objects)
    for obj, current in zip(objects, currents, strict=True):
        if current is not None and (obj["kind"], obj["metadata"]["name"]) in scaled:
            obj["spec"]["replicas"] = current.get("spec", {}).get("replicas", 1)


def desired_objects(
    app: str,
    spec: ApplicationSpec,
    rendered: list[dict[str, Any]],
    cluster: str,
    labels: dict[str, str],
    routing: Routing | None = None,
    window: ReplicaBounds | None = None,
    split: CanarySplit | None = None,
) -> list[dict[str, Any]]:
    """The objects for one cluster: rendered, configuration added, overrides applied, labelled;
    routes served as the cluster's `routing` says (an Ingress of its default class if unsaid),
    with a release's `split` of the traffic; `window` is the scheduled window open now, if any."""
    override = spec.overrides.get(cluster, ClusterOverride())
    routes = route_objects(app, spec.routes, routing or Routing(), split)
    objects = copy.deepcopy(rendered) + routes
    if spec.autoscaling is not None:
        objects = with_autoscaler(objects, spec.autoscaling)
    for hpa in (o for o in objects if o["kind"] == AUTOSCALER):
        _bound(hpa, override, window if spec.autoscaling is not None else None)
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
        replicas = override.replicas if override.replicas is not None else spec.replicas
        if replicas is not None and obj["kind"] in ("Deployment", "StatefulSet"):
            obj["spec"]["replicas"] = replicas
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


def container_images(objects: list[dict[str, Any]]) -> list[str]:
    """Every container image the workloads among `objects` run, in order, once each."""
    found: dict[str, None] = {}
    for obj in objects:
        template = _pod_spec(obj) if obj["kind"] in WORKLOAD_KINDS else None
        for container in (template or {}).get("spec", {}).get("containers", []):
            found[str(container.get("image", ""))] = None
    return list(found)


def image_field(values: dict[str, Any], image: str) -> str:
    """The field of `spec.values` that names `image` (or the image a cluster's registry
    mirror was made from), for errors about it; `spec.values` when none does."""
    path = image.partition("/")[2]
    for where, value in _strings(values, "spec.values"):
        if value == image:
            return where
    for where, value in _strings(values, "spec.values"):
        if path and value.endswith(f"/{path}"):
            return where
    return "spec.values"


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


# -- failover --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverPlan:
    """Replicas per cluster after failover: `out` are the clusters past their grace period,
    `moved` what each other cluster runs beyond its share, `heldBack` what did not fit."""

    replicas: dict[str, int]
    out: tuple[str, ...] = ()
    moved: dict[str, int] = dc_field(default_factory=dict)
    heldBack: int = 0


def spread_of(
    spec: ApplicationSpec, rendered: list[dict[str, Any]], clusters: list[str]
) -> dict[str, int]:
    """Each cluster's share of replicas: its override, else the spec's, else the template's."""
    template = next(
        (int(o["spec"].get("replicas", 1)) for o in rendered if o["kind"] in SCALED_KINDS), 1
    )
    shares = {}
    for cluster in clusters:
        override = spec.overrides.get(cluster, ClusterOverride()).replicas
        shares[cluster] = next(r for r in (override, spec.replicas, template) if r is not None)
    return shares


def failover_plan(
    spread: dict[str, int], out: set[str], room: dict[str, int], min_available: int
) -> FailoverPlan:
    """Give the replicas of the clusters `out` to the others, one at a time to the one that
    runs fewest (by name on a tie), each up to its `room` (what its quota still holds)."""
    if not out & set(spread):
        return FailoverPlan(dict(spread))
    lost = sum(spread[c] for c in out if c in spread)
    healthy = sorted(c for c in spread if c not in out)
    if len(healthy) < min_available:
        return FailoverPlan(dict(spread), tuple(sorted(out & set(spread))), {}, lost)
    replicas = dict(spread)
    moved = dict.fromkeys(healthy, 0)
    left = lost
    while left:
        open_ = [c for c in healthy if moved[c] < room.get(c, 0)]
        if not open_:
            break
        to = min(open_, key=lambda c: (replicas[c], c))
        replicas[to] += 1
        moved[to] += 1
        left -= 1
    return FailoverPlan(
        replicas,
        tuple(sorted(out & set(spread))),
        {c: n for c, n in moved.items() if n},
        left,
    )


def with_replicas(spec: ApplicationSpec, cluster: str, replicas: int) -> ApplicationSpec:
    """The spec with `replicas` in one cluster (as an override of that cluster)."""
    override = spec.overrides.get(cluster, ClusterOverride())
    overrides = {**spec.overrides, cluster: override.model_copy(update={"replicas": replicas})}
    return spec.model_copy(update={"overrides": overrides})


def replica_requests(objects: list[dict[str, Any]]) -> dict[str, Fraction]:
    """What one more replica of every scaled workload asks of a namespace quota."""
    single = copy.deepcopy([o for o in objects if o["kind"] in SCALED_KINDS])
    for obj in single:
        obj["spec"]["replicas"] = 1
    return workload_requests(single)


def room_in(quota: dict[str, Any] | None, per_replica: dict[str, Fraction]) -> int:
    """How many more replicas a namespace's ResourceQuota (its status: hard, used) holds."""
    if quota is None:
        return UNBOUNDED
    hard = quota.get("status", {}).get("hard", {})
    used = quota.get("status", {}).get("used", {})
    fits = UNBOUNDED
    for name, need in per_replica.items():
        # A quota may name requests.cpu or plain cpu (the same thing).
        key = next((k for k in (name, name.removeprefix("requests.")) if k in hard), None)
        if key is None or need <= 0:
            continue
        free = parse_quantity(str(hard[key])) - parse_quantity(str(used.get(key, "0")))
        fits = min(fits, max(0, int(free / need)))
    return fits
