"""Analysis templates, the PromQL Wharf builds from them, and how a measurement is judged.

A tenant writes the query; Wharf fills in the arguments and then puts its own
`namespace="<tenant>--<project>-<env>"` matcher on every series selector of the parsed query,
so that no query can read another tenant's series whatever its text or arguments say.
"""

from __future__ import annotations

import math
import operator
import re
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from wharf.core import promql
from wharf.core.errors import InvalidError
from wharf.core.resources import Kind, Spec
from wharf.registry.model import ProjectOwned

ARG = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_ARGS = ("app", "cluster", "revision", "namespace")
CONDITION = re.compile(r"^ *result *(<=|>=|==|!=|<|>) *(-?[0-9]+(\.[0-9]+)?) *$")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
Outcome = Literal["Successful", "Failed", "Inconclusive", "Error"]


def _condition(value: str) -> str:
    if not CONDITION.fullmatch(value):
        raise ValueError("write a comparison of the result with a number, e.g. 'result < 0.05'")
    return value


JSON_PATH = re.compile(r"^\$?((\.[A-Za-z0-9_-]+)|(\[[0-9]+\]))+$")


class WebCheck(Spec):
    """A measurement from any HTTP service: GET the URL, read one number from its JSON."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL; ${app}, ${cluster}, ${revision}, ${namespace} and the "
        "template's args are filled in (URL-encoded). Internal addresses are refused unless "
        "the platform admin allows them (WHARF_OUTBOUND_ALLOW); redirects are not followed",
    )
    jsonPath: str = Field(
        description="Where the number is in the JSON answer, e.g. $.data.errorRate or "
        "$.results[0].value",
        json_schema_extra={"pattern": JSON_PATH.pattern},
    )

    @field_validator("jsonPath")
    @classmethod
    def _path(cls, value: str) -> str:
        if not JSON_PATH.fullmatch(value):
            raise ValueError("write a path of .names and [indexes], e.g. $.data.errorRate")
        return value


def extract(document: Any, path: str) -> float | None:
    """The number at `path` in a JSON document; None when it is missing or not a number."""
    node = document
    for name, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]", path):
        if name and isinstance(node, dict) and name in node:
            node = node[name]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, (int, float, str)):
        return None
    try:
        return float(node)
    except ValueError:
        return None


class Metric(Spec):
    """One metric check: a PromQL query (or a web check) measured `count` times, `interval`
    seconds apart."""

    name: str = Field(description="What it measures, e.g. error-rate")
    query: str | None = Field(
        default=None,
        description="PromQL; ${app}, ${cluster}, ${revision}, ${namespace} and the template's "
        "args are filled in, and Wharf adds the namespace matcher to every selector",
    )
    web: WebCheck | None = Field(
        default=None, description="Instead of a query: a number from an HTTP JSON answer"
    )
    interval: int = Field(default=10, ge=1, le=3600, description="Seconds between measurements")
    count: int = Field(default=3, ge=1, le=100, description="Measurements to take")
    initialDelay: int = Field(default=0, ge=0, le=3600, description="Seconds before the first")
    successCondition: str = Field(
        description="e.g. 'result < 0.05'", json_schema_extra={"pattern": CONDITION.pattern}
    )
    failureCondition: str | None = Field(
        default=None,
        json_schema_extra={"pattern": CONDITION.pattern},
        description="e.g. 'result > 0.2'; between the two a measurement is inconclusive. "
        "Without it, a measurement that is not a success is a failure",
    )
    failureLimit: int = Field(default=0, ge=0, description="Failed measurements tolerated")
    inconclusiveLimit: int = Field(
        default=0, ge=0, description="Inconclusive measurements tolerated before it pauses"
    )
    consecutiveErrorLimit: int = Field(
        default=4,
        ge=0,
        description="Errors in a row tolerated (Prometheus down, no data) before it fails",
    )

    @field_validator("successCondition")
    @classmethod
    def _success(cls, value: str) -> str:
        return _condition(value)

    @field_validator("failureCondition")
    @classmethod
    def _failure(cls, value: str | None) -> str | None:
        return None if value is None else _condition(value)


class AnalysisTemplateSpec(Spec):
    """Metric checks a canary step runs against Prometheus."""

    args: dict[str, str] = Field(
        default_factory=dict,
        description="The template's own arguments with default values (${name} in queries)",
    )
    metrics: list[Metric] = Field(min_length=1, max_length=10, description="All must pass")


ANALYSIS_TEMPLATE = Kind(
    name="AnalysisTemplate",
    plural="analysistemplates",
    scope="tenant",
    spec=AnalysisTemplateSpec,
    short_names=("analysistemplate", "analysis", "at"),
    columns=(("METRICS", "spec.metrics"),),
)


ReleaseEvent = Literal["started", "paused", "stepPassed", "rolledBack", "completed"]
RELEASE_EVENTS: tuple[ReleaseEvent, ...] = (
    "started",
    "paused",
    "stepPassed",
    "rolledBack",
    "completed",
)


class ReleaseWebhookSpec(ProjectOwned):
    """Where a project's release events are sent: an HTTP POST of JSON, signed with HMAC-SHA256
    of the body under `secret` (header X-Wharf-Signature-256: sha256=<hex>)."""

    project: str = Field(description="The project whose applications' releases it reports")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL to POST events to; internal addresses are refused unless the "
        "platform admin allows them (WHARF_OUTBOUND_ALLOW); redirects are not followed",
    )
    secret: str = Field(
        min_length=16,
        max_length=4096,
        description="Shared key of the HMAC signature (sealed at rest, masked when read)",
    )
    events: list[ReleaseEvent] = Field(
        default_factory=lambda: list(RELEASE_EVENTS),
        min_length=1,
        description="Which events to send: started, paused (waiting for a person), stepPassed, "
        "rolledBack, completed",
    )


RELEASE_WEBHOOK = Kind(
    name="ReleaseWebhook",
    plural="releasewebhooks",
    scope="tenant",
    spec=ReleaseWebhookSpec,
    secret_fields=("secret",),
    short_names=("releasewebhook", "webhook"),
    columns=(("PROJECT", "spec.project"), ("URL", "spec.url")),
)


def fill(query: str, args: dict[str, str], where: str) -> str:
    """The query with every ${name} replaced; a name with no value is a 4xx at `where`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in args:
            raise InvalidError(f"{where}: no value for ${{{name}}}", field=where)
        return args[name]

    return ARG.sub(one, query)


def confine(query: str, namespace: str, where: str) -> str:
    """The query with `namespace="<namespace>"` on every series selector; a query that is not
    PromQL, or that names a namespace or uses `or` matchers itself, is refused at `where`."""
    return promql.confine(query, {"namespace": namespace}, where, "the application's own")


def build_query(
    metric: Metric, args: dict[str, str], namespace: str, where: str = "spec.metrics"
) -> str:
    assert metric.query is not None  # a web check has no query
    return confine(fill(metric.query, args, where), namespace, where)


def web_url(metric: Metric, args: dict[str, str], where: str = "spec.metrics") -> str:
    """The web check's URL with the arguments filled in, each URL-encoded."""
    assert metric.web is not None
    encoded = {k: urllib.parse.quote(v, safe="") for k, v in args.items()}
    return fill(metric.web.url, encoded, where)


def _holds(condition: str, value: float) -> bool:
    match = CONDITION.fullmatch(condition)
    assert match is not None  # checked when the template was written
    return OPERATORS[match.group(1)](value, float(match.group(2)))


def judge(metric: Metric, value: float | None) -> Outcome:
    """A measured value against the metric's conditions; no number is an error, never a pass."""
    if value is None or math.isnan(value):
        return "Error"
    if _holds(metric.successCondition, value):
        return "Successful"
    if metric.failureCondition is None or _holds(metric.failureCondition, value):
        return "Failed"
    return "Inconclusive"


Verdict = Literal["Running", "Successful", "Failed", "Inconclusive"]


def verdict(metric: Metric, outcomes: list[str]) -> Verdict:
    """What a metric's measurements so far (oldest first) add up to."""
    failed = outcomes.count("Failed")
    if failed > metric.failureLimit:
        return "Failed"
    errors = 0
    for outcome in outcomes:
        errors = errors + 1 if outcome == "Error" else 0
        if errors > metric.consecutiveErrorLimit:
            return "Failed"
    if outcomes.count("Inconclusive") > metric.inconclusiveLimit:
        return "Inconclusive"
    measured = sum(1 for o in outcomes if o != "Error")
    return "Successful" if measured >= metric.count else "Running"


def canary_replicas(weight: int, replicas: int) -> int:
    """Canary replicas for a weight, by ratio to the stable replicas (at least one above 0)."""
    if weight <= 0:
        return 0
    return max(1, math.ceil(replicas * weight / 100))


def resolve_waves(
    waves: list[Any], targets: list[str], labels: dict[str, dict[str, str]]
) -> list[list[str]]:
    """The clusters of each wave, in order: named ones, then those the selector matches; the
    environment's clusters no wave names make a last wave, so none is left out."""
    return [members for members, _ in resolve_waves_limited(waves, targets, labels)]


def resolve_waves_limited(
    waves: list[Any], targets: list[str], labels: dict[str, dict[str, str]]
) -> list[tuple[list[str], int | None]]:
    """Each wave's clusters with its maxParallel (None: all at once)."""
    seen: set[str] = set()
    out: list[tuple[list[str], int | None]] = []
    for wave in waves:
        members = [c for c in wave.clusters if c in targets]
        if wave.selector:
            members += [
                c
                for c in sorted(targets)
                if all(labels.get(c, {}).get(k) == v for k, v in wave.selector.items())
            ]
        members = [c for c in dict.fromkeys(members) if c not in seen]
        seen.update(members)
        if members:
            out.append((members, getattr(wave, "maxParallel", None)))
    rest = [c for c in sorted(targets) if c not in seen]
    return [*out, (rest, None)] if rest else out
