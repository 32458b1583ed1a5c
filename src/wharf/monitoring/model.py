"""The monitoring feed's series: names and labels that alert rules and charts rely on.

Every workload series carries the labels tenant, project, app, cluster, namespace (and pod for
per-pod series). They are set by Wharf from its own records (the namespace a project's
environment owns, the application stored for it), never from labels a tenant could write on a
pod: a pod in a namespace is its project's whatever it says about itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
