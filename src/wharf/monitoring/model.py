"""The monitoring feed's series: names and labels that alert rules and charts rely on.

Every workload series carries the labels tenant, project, app, cluster, namespace (and pod for
per-pod series). They are set by Wharf from its own records (the namespace a project's
environment owns, the application stored for it), never from labels a tenant could write on a
pod: a pod in a namespace is its project's whatever it says about itself.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from wharf.core.errors import InvalidError
from wharf.core.quantity import QuantityError, parse_quantity

CPU = "wharf_pod_cpu_usage_cores"
MEMORY = "wharf_pod_memory_usage_bytes"
RESTARTS = "wharf_pod_restarts_total"
READY = "wharf_pod_ready"
REPLICAS = "wharf_app_replicas"
READY_REPLICAS = "wharf_app_ready_replicas"
QUOTA = "wharf_project_quota"

APP_LABELS = ("tenant", "project", "app", "cluster", "namespace")
POD_LABELS = (*APP_LABELS, "pod")
QUOTA_LABELS = ("tenant", "project", "resource")

HELP = {
    CPU: "CPU a pod uses, in cores (metrics.k8s.io)",
    MEMORY: "Memory a pod uses (working set), in bytes (metrics.k8s.io)",
    RESTARTS: "Restarts of a pod's containers (status.containerStatuses[].restartCount)",
    READY: "1 when the pod is Ready, else 0",
    REPLICAS: "Replicas an application's workloads ask for in one cluster",
    READY_REPLICAS: "Ready replicas of an application's workloads in one cluster",
    QUOTA: "A project's quota for one resource (cores, bytes or a count), over all its clusters",
}


@dataclass(frozen=True)
class Owner:
    """Whose a (namespace, app) is, as Wharf's records say."""

    tenant: str
    project: str
    app: str


@dataclass
class Feed:
    """Samples by metric name: label values (in the metric's label order) -> value."""

    samples: dict[str, dict[tuple[str, ...], float]] = field(
        default_factory=lambda: {name: {} for name in HELP}
    )

    def put(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self.samples[metric][labels] = value

    def add(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self.samples[metric][labels] = self.samples[metric].get(labels, 0.0) + value


def amount(text: Any) -> float:
    """A Kubernetes quantity as a float of base units (cores, bytes); 0 when unreadable."""
    try:
        return float(parse_quantity(str(text)))
    except QuantityError:
        return 0.0


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def restarts(pod: Mapping[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def usage(pod_metrics: Mapping[str, Any]) -> tuple[float, float]:
    """(cores, bytes) of one PodMetrics object, summed over its containers."""
    containers = pod_metrics.get("containers") or []
    cpu = sum(amount(c.get("usage", {}).get("cpu", 0)) for c in containers)
    memory = sum(amount(c.get("usage", {}).get("memory", 0)) for c in containers)
    return cpu, memory


def add_pods(
    feed: Feed,
    cluster: str,
    owners: Mapping[tuple[str, str], Owner],
    pods: Iterable[Mapping[str, Any]],
    used: Mapping[tuple[str, str], tuple[float, float]],
    app_label: str,
) -> None:
    """Per-pod series of one cluster's pods that belong to a known application."""
    for pod in pods:
        meta = pod.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        owner = owners.get((namespace, (meta.get("labels") or {}).get(app_label, "")))
        if owner is None:
            continue
        labels = (owner.tenant, owner.project, owner.app, cluster, namespace, name)
        feed.put(RESTARTS, labels, float(restarts(pod)))
        feed.put(READY, labels, 1.0 if pod_ready(pod) else 0.0)
        if (namespace, name) in used:
            cpu, memory = used[(namespace, name)]
            feed.put(CPU, labels, cpu)
            feed.put(MEMORY, labels, memory)


def add_workloads(
    feed: Feed,
    cluster: str,
    owners: Mapping[tuple[str, str], Owner],
    workloads: Iterable[Mapping[str, Any]],
    app_label: str,
) -> None:
    """Desired and ready replicas per application, summed over its workloads."""
    for obj in workloads:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "")
        owner = owners.get((namespace, (meta.get("labels") or {}).get(app_label, "")))
        if owner is None:
            continue
        labels = (owner.tenant, owner.project, owner.app, cluster, namespace)
        feed.add(REPLICAS, labels, float(obj.get("spec", {}).get("replicas", 1)))
        feed.add(READY_REPLICAS, labels, float(obj.get("status", {}).get("readyReplicas", 0)))


def add_quota(feed: Feed, tenant: str, project: str, quota: Mapping[str, str]) -> None:
    for resource, text in sorted(quota.items()):
        feed.put(QUOTA, (tenant, project, resource), amount(text))


# --- Queries: Wharf writes every PromQL expression itself --------------------------------
#
# The caller chooses a project (and maybe an application), a chart and a time range; nothing
# the caller sends becomes PromQL text except names that match Kubernetes' name grammar, which
# holds no quote, brace, comma, `=~` or `__name__`, and they are escaped all the same.

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_RANGE = dt.timedelta(days=7)
MAX_POINTS = 1100  # per series (Prometheus refuses above 11000)
DEFAULT_RANGE = dt.timedelta(hours=1)
DEFAULT_POINTS = 120

Chart = Literal["cpu", "memory", "restarts", "replicas"]
CHARTS: tuple[Chart, ...] = ("cpu", "memory", "restarts", "replicas")
UNITS: dict[Chart, str] = {"cpu": "cores", "memory": "bytes", "restarts": "", "replicas": ""}
QUOTA_RESOURCES: dict[Chart, tuple[str, ...]] = {
    "cpu": ("cpu", "requests.cpu", "limits.cpu"),
    "memory": ("memory", "requests.memory", "limits.memory"),
    "restarts": (),
    "replicas": ("pods",),
}


@dataclass(frozen=True)
class Scope:
    """Whose series a query reads: always a tenant and a project, maybe one application."""

    tenant: str
    project: str
    app: str | None = None

    def matchers(self) -> str:
        pairs = [("tenant", self.tenant), ("project", self.project)]
        if self.app is not None:
            pairs.append(("app", self.app))
        return ",".join(f'{k}="{_escaped(v)}"' for k, v in pairs)

    def by(self) -> str:
        """A project's chart has a line per application; an application's, per cluster."""
        return "cluster" if self.app is not None else "app"


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    step: int  # seconds

    @property
    def points(self) -> int:
        return int((self.end - self.start).total_seconds() // self.step) + 1


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_name(value: str, field_name: str) -> str:
    if len(value) > 63 or not NAME.fullmatch(value):
        raise InvalidError(
            f"{field_name}: {value[:80]!r} is not a name (lower-case letters, digits and '-')",
            field=field_name,
        )
    return value


def time_range(
    start: dt.datetime | None, end: dt.datetime | None, step: int | None, now: dt.datetime
) -> TimeRange:
    """The asked range, bounded: at most MAX_RANGE wide, at most MAX_POINTS points."""
    end = _aware(end) if end is not None else now
    start = _aware(start) if start is not None else end - DEFAULT_RANGE
    if end <= start:
        raise InvalidError("end: must be after start", field="end")
    width = end - start
    if width > MAX_RANGE:
        raise InvalidError(
            f"start: the range is {_span(width)}, wider than {_span(MAX_RANGE)}", field="start"
        )
    seconds = width.total_seconds()
    step = step if step is not None else max(1, math.ceil(seconds / DEFAULT_POINTS))
    if step < 1:
        raise InvalidError("step: at least 1 second", field="step")
    bounded = TimeRange(start, end, step)
    if bounded.points > MAX_POINTS:
        least = math.ceil(seconds / (MAX_POINTS - 1))
        raise InvalidError(
            f"step: {step}s gives {bounded.points} points over {_span(width)}; at most "
            f"{MAX_POINTS} (a step of {least}s or more)",
            field="step",
        )
    return bounded


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _span(width: dt.timedelta) -> str:
    hours = width.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"


def chart_queries(chart: Chart, scope: Scope) -> dict[str, str]:
    """Line name -> PromQL, built here from the scope's own matchers."""
    where, by = scope.matchers(), scope.by()
    if chart == "cpu":
        return {"used": f"sum by ({by}) ({CPU}{{{where}}})"}
    if chart == "memory":
        return {"used": f"sum by ({by}) ({MEMORY}{{{where}}})"}
    if chart == "restarts":
        return {"restarts": f"sum by ({by}) ({RESTARTS}{{{where}}})"}
    return {
        "desired": f"sum by ({by}) ({REPLICAS}{{{where}}})",
        "ready": f"sum by ({by}) ({READY_REPLICAS}{{{where}}})",
    }


def quota_query(chart: Chart, scope: Scope) -> str | None:
    resources = QUOTA_RESOURCES[chart]
    if not resources:
        return None
    project = Scope(scope.tenant, scope.project)
    names = _escaped("|".join(re.escape(r) for r in resources))
    # The newest value of the last 10 minutes: one failed scrape (a stale marker) would
    # otherwise drop the quota line.
    return f'last_over_time({QUOTA}{{{project.matchers()},resource=~"{names}"}}[10m])'


def top_queries(scope: Scope) -> dict[str, str]:
    """Column -> PromQL of each pod's latest value (`wharf top`)."""
    where = scope.matchers()
    return {
        "cpu": f"{CPU}{{{where}}}",
        "memory": f"{MEMORY}{{{where}}}",
        "restarts": f"{RESTARTS}{{{where}}}",
        "ready": f"{READY}{{{where}}}",
    }


# --- Answers ---------------------------------------------------------------------------


class Line(BaseModel):
    """One line of a chart: its labels (app or cluster, and which line) and its points."""

    name: str = Field(description="What the line shows, e.g. 'used', 'ready', 'desired'")
    labels: dict[str, str] = Field(description="app (a project's chart) or cluster (an app's)")
    points: list[tuple[float, float]] = Field(description="(unix seconds, value)")


class QuotaLine(BaseModel):
    resource: str = Field(description="The quota's resource, e.g. cpu, limits.memory, pods")
    value: float = Field(description="The project's quota, in the chart's unit")


class ChartAnswer(BaseModel):
    chart: Chart
    unit: str = Field(description="cores, bytes, or '' for counts")
    lines: list[Line]
    quota: list[QuotaLine] = Field(description="The project's quota for the chart's resource")


class MetricsAnswer(BaseModel):
    """A project's or an application's charts over a time range."""

    tenant: str
    project: str
    app: str | None
    start: dt.datetime
    end: dt.datetime
    step: int = Field(description="Seconds between points")
    charts: list[ChartAnswer]
    requestRate: str = Field(
        description="Why there is no request-rate chart: no source of request counts yet"
    )


class PodUse(BaseModel):
    """One pod's latest figures, as `wharf top` prints them."""

    app: str
    cluster: str
    pod: str
    cpu: float | None = Field(description="Cores (None before metrics-server's first figure)")
    memory: float | None = Field(description="Bytes")
    restarts: int
    ready: bool


class TopAnswer(BaseModel):
    tenant: str
    project: str
    app: str | None
    pods: list[PodUse]
