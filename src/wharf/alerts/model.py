"""Alert rules, the Prometheus rule files Wharf renders from them, incidents and channels.

A rule is a template with parameters or a project's own PromQL; either way Wharf confines the
expression to the project (`tenant` and `project` matchers on every selector, see
wharf.core.promql) and sets the alert's `tenant`, `project` and `wharf_rule` labels itself in
the rule file, where they override whatever the expression's series carry. So an alert can
only ever name the project that owns its rule.
"""

from __future__ import annotations

import re
from typing import Literal

import yaml
from pydantic import Field, field_validator

from wharf.core import promql
from wharf.core.errors import InvalidError
from wharf.core.resources import Kind, Spec
from wharf.registry.model import ProjectOwned

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
TemplateName = Literal[
    "podRestarting",
    "podNotReady",
    "cpuNearLimit",
    "memoryNearLimit",
    "quotaNearFull",
    "errorRate",
    "appDegraded",
]
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RULE_LABEL = "wharf_rule"
# Labels Wharf sets on every alert (and adds as matchers): an expression may not name them.
OWNER_LABELS = ("tenant", "project")
BY = "tenant, project, app, cluster"


def _duration(value: str) -> str:
    if not DURATION.fullmatch(value):
        raise ValueError("write a Prometheus duration, e.g. 30s, 5m or 1h")
    return value


class TemplateParams(Spec):
    """A template's parameters; each template reads those it names (see docs)."""

    threshold: float | None = Field(
        default=None,
        ge=0,
        description="podRestarting: restarts in the window (default 0: any); cpu/memoryNearLimit "
        "and quotaNearFull: share of the quota (default 0.9); errorRate: share of 5xx answers "
        "(default 0.05)",
    )
    window: str | None = Field(
        default=None,
        description="Range the rate or increase is taken over (default 5m)",
        json_schema_extra={"pattern": DURATION.pattern},
    )
    app: str | None = Field(default=None, description="Only this application (default: all)")
    resource: Literal["cpu", "memory"] | None = Field(
        default=None, description="quotaNearFull: the quota resource (default cpu)"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value)


class AlertRuleSpec(ProjectOwned):
    """An alert on a project's series: a template with parameters, or a PromQL expression."""

    project: str = Field(description="The project whose series it watches")
    template: TemplateName | None = Field(
        default=None,
        description="podRestarting, podNotReady, cpuNearLimit, memoryNearLimit, quotaNearFull, "
        "errorRate or appDegraded; or give expr",
    )
    params: TemplateParams = Field(
        default_factory=TemplateParams, description="The template's parameters"
    )
    expr: str | None = Field(
        default=None,
        max_length=4096,
        description="Custom PromQL (instead of a template); Wharf adds the project's tenant and "
        "project matchers to every selector, and refuses one that names them",
    )
    for_: str = Field(
        default="1m",
        alias="for",
        description="How long it must hold before it fires",
        json_schema_extra={"pattern": DURATION.pattern},
    )
    severity: Severity = Field(default="warning", description="critical, warning or info")
    summary: str = Field(default="", max_length=500, description="What a person is told")

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str) -> str:
        return _duration(value)


ALERT_RULE = Kind(
    name="AlertRule",
    plural="alertrules",
    scope="tenant",
    spec=AlertRuleSpec,
    short_names=("alertrule", "ar"),
    columns=(
        ("PROJECT", "spec.project"),
        ("TEMPLATE", "spec.template"),
        ("SEVERITY", "spec.severity"),
    ),
)


def _app(params: TemplateParams) -> str:
    return f',app="{params.app}"' if params.app else ""


def template_expr(name: TemplateName, params: TemplateParams) -> str:
    """The PromQL of a template (unconfined: `rule_expr` adds the project's matchers)."""
    app, window = _app(params), params.window or "5m"
    share = params.threshold if params.threshold is not None else 0.9
    if name == "podRestarting":
        restarts = params.threshold if params.threshold is not None else 0
        return f"increase(wharf_pod_restarts_total{{{app[1:]}}}[{window}]) > {restarts:g}"
    if name == "podNotReady":
        return f"wharf_pod_ready{{{app[1:]}}} == 0"
    if name in ("cpuNearLimit", "memoryNearLimit", "quotaNearFull"):
        resource = "cpu" if name == "cpuNearLimit" else "memory"
        if name == "quotaNearFull":
            resource = params.resource or "cpu"
        usage = "wharf_pod_cpu_usage_cores" if resource == "cpu" else "wharf_pod_memory_usage_bytes"
        return (
            f"sum by (tenant, project) ({usage}{{{app[1:]}}}) / on (tenant, project) "
            f'wharf_project_quota{{resource="limits.{resource}"}} > {share:g}'
        )
    if name == "errorRate":
        errors = params.threshold if params.threshold is not None else 0.05
        return (
            f'sum by ({BY}) (rate(wharf_app_requests_total{{code=~"5.."{app}}}[{window}])) / '
            f"sum by ({BY}) (rate(wharf_app_requests_total{{{app[1:]}}}[{window}])) > {errors:g}"
        )
    # appDegraded: fewer ready replicas than wanted, per cluster
    return f"wharf_app_ready_replicas{{{app[1:]}}} < on ({BY}) wharf_app_replicas{{{app[1:]}}}"


def rule_expr(spec: AlertRuleSpec, tenant: str, where: str = "spec.expr") -> str:
    """The expression Prometheus evaluates: the template's or the custom one, confined to the
    rule's tenant and project."""
    if (spec.template is None) == (spec.expr is None):
        raise InvalidError("spec: give either template or expr", field="spec.template")
    text = spec.expr if spec.expr is not None else template_expr(spec.template, spec.params)  # type: ignore[arg-type]
    matchers = {"tenant": tenant, "project": spec.project}
    return promql.confine(text, matchers, where, "the rule's own tenant and project")


def alert_name(tenant: str, name: str) -> str:
    """The alert's name in Prometheus (a metric-name-like word, unique per rule)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"wharf_{tenant}__{name}")


def rule_file(spec: AlertRuleSpec, tenant: str, name: str) -> str:
    """The Prometheus rule file of one rule (one group); its labels override the series'."""
    rule = {
        "alert": alert_name(tenant, name),
        "expr": rule_expr(spec, tenant),
        "for": spec.for_,
        "labels": {
            "tenant": tenant,
            "project": spec.project,
            RULE_LABEL: name,
            "severity": spec.severity,
        },
        "annotations": {"summary": literal(spec.summary or f"{name} fires in {spec.project}")},
    }
    group = {"name": f"{tenant}/{name}", "rules": [rule]}
    return yaml.safe_dump({"groups": [group]}, sort_keys=True)


def literal(text: str) -> str:
    """The text as Prometheus tells it: annotations are Go templates whose `query` runs
    PromQL unconfined (any tenant's series), so each `{{` becomes a template printing it."""
    return text.replace("{{", '{{ "{{" }}')


def file_name(tenant: str, name: str) -> str:
    return f"{tenant}--{name}.yml"


IncidentState = Literal["open", "acknowledged", "resolved"]


class NotificationChannelSpec(ProjectOwned):
    """Where a project's incidents are told: an HTTP POST of JSON signed with HMAC-SHA256 of
    the body under `secret` (header X-Wharf-Signature-256: sha256=<hex>), or an email through
    the platform's SMTP server."""

    project: str = Field(description="The project whose incidents it tells")
    type: Literal["webhook", "email"] = Field(description="webhook or email")
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="webhook: http(s) URL; internal addresses are refused unless the platform "
        "admin allows them (WHARF_OUTBOUND_ALLOW); redirects are not followed",
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=4096,
        description="webhook: shared key of the HMAC signature (sealed at rest, masked when read)",
    )
    to: list[str] = Field(
        default_factory=list, max_length=20, description="email: the addresses it is sent to"
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list(SEVERITIES),
        min_length=1,
        description="Which incidents it tells, by their rule's severity",
    )


NOTIFICATION_CHANNEL = Kind(
    name="NotificationChannel",
    plural="notificationchannels",
    scope="tenant",
    spec=NotificationChannelSpec,
    secret_fields=("secret",),
    short_names=("notificationchannel", "channel"),
    columns=(("PROJECT", "spec.project"), ("TYPE", "spec.type")),
)
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
