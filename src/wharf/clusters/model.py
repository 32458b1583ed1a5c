"""Cluster and NodePool specs, and the pure arithmetic of capacity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field

from wharf.core.quantity import QuantityError, format_resources, parse_quantity
from wharf.core.resources import Kind, Spec

# What capacity is counted in, and the quota names that draw on each.
CAPACITY_RESOURCES = ("cpu", "memory", "pods", "nvidia.com/gpu")
QUOTA_TO_CAPACITY = {
    "cpu": "cpu",
    "requests.cpu": "cpu",
    "memory": "memory",
    "requests.memory": "memory",
    "pods": "pods",
    "count/pods": "pods",
    "nvidia.com/gpu": "nvidia.com/gpu",
    "requests.nvidia.com/gpu": "nvidia.com/gpu",
}


class ClusterSpec(Spec):
    """A Kubernetes cluster registered with Wharf: it places namespaces and delivers there."""

    kubeconfig: str = Field(
        description="A kubeconfig whose current context reaches the cluster with rights to "
        "manage namespaces, quotas and RBAC; sealed at rest and shown masked"
    )
    description: str = Field(default="", description="What the cluster is for, for people")


class Taint(Spec):
    """A taint Wharf puts on the pool's nodes, so only pods that tolerate it run there."""

    key: str = Field(description="The taint's key, e.g. dedicated")
    value: str = Field(default="", description="The taint's value (may be empty)")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="NoSchedule", description="What happens to pods that do not tolerate it"
    )


class NodePoolSpec(Spec):
    """A set of a cluster's nodes, picked by labels, that Wharf reserves for some tenants."""

    cluster: str = Field(description="The registered cluster whose nodes form the pool")
    nodeSelector: dict[str, str] = Field(
        min_length=1, description="Node labels that pick the pool's nodes (all must match)"
    )
    taints: list[Taint] = Field(default_factory=list, description="Taints put on the pool's nodes")
    tenants: list[str] = Field(
        default_factory=list,
        description="Tenants whose namespaces may schedule onto the pool (and tolerate its taints)",
    )


CLUSTER = Kind(
    name="Cluster",
    plural="clusters",
    scope="platform",
    spec=ClusterSpec,
    secret_fields=("kubeconfig",),
    short_names=("cluster", "clusters"),
    columns=(
        ("STATUS", "status.phase"),
        ("VERSION", "status.kubernetesVersion"),
        ("NODES", "status.capacity.nodes"),
    ),
)
NODE_POOL = Kind(
    name="NodePool",
    plural="nodepools",
    scope="platform",
    spec=NodePoolSpec,
    short_names=("nodepool", "np"),
    columns=(("CLUSTER", "spec.cluster"), ("NODES", "status.nodes")),
)


def _sum(items: Iterable[Mapping[str, Any]]) -> dict[str, Fraction]:
    total: dict[str, Fraction] = dict.fromkeys(CAPACITY_RESOURCES, Fraction(0))
    for resources in items:
        for name in CAPACITY_RESOURCES:
            try:
                total[name] += parse_quantity(str(resources.get(name, "0")))
            except QuantityError:
                continue
    return total


def capacity_of(nodes: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Nodes, allocatable and requested resources, from node and pod objects."""
    nodes = list(nodes)
    ready = [n for n in nodes if not n.get("spec", {}).get("unschedulable")]
    allocatable = _sum(n.get("status", {}).get("allocatable", {}) for n in ready)
    requests: list[dict[str, Any]] = []
    running = 0
    for pod in pods:
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if not pod.get("spec", {}).get("nodeName"):
            continue
        running += 1
        for container in pod.get("spec", {}).get("containers", []):
            requests.append(container.get("resources", {}).get("requests", {}) or {})
    requested = _sum(requests)
    requested["pods"] = Fraction(running)
    return {
        "nodes": len(nodes),
        "allocatable": format_resources(allocatable),
        "requested": format_resources(requested),
    }


def nodes_of(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each node's name, readiness and allocatable CPU, memory and pods, for status."""
    out = []
    for node in nodes:
        conditions = node.get("status", {}).get("conditions", []) or []
        ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "Unknown")
        allocatable = node.get("status", {}).get("allocatable", {}) or {}
        out.append(
            {
                "name": node["metadata"]["name"],
                "ready": ready,
                "schedulable": not node.get("spec", {}).get("unschedulable", False),
                "cpu": allocatable.get("cpu", ""),
                "memory": allocatable.get("memory", ""),
                "pods": allocatable.get("pods", ""),
            }
        )
    return sorted(out, key=lambda n: n["name"])


def node_matches(node: dict[str, Any], selector: Mapping[str, str]) -> bool:
    labels = node.get("metadata", {}).get("labels", {}) or {}
    return all(labels.get(k) == v for k, v in selector.items())


# Node pools in the nodes themselves: a pool's nodes say which pool they are in and which
# tenants may run there; tenant namespaces select on the latter (PodNodeSelector). The prefix
# is one a kubelet may not set on its own node (NodeRestriction).
POOL_LABEL = "node-restriction.kubernetes.io/wharf-node-pool"
POOL_TENANT_PREFIX = "node-restriction.kubernetes.io/wharf-tenant-"
POOL_TAINTS_ANNOTATION = "wharf.io/taints"
# Tolerations Kubernetes itself adds to pods (DefaultTolerationSeconds, DaemonSets); a tenant's
# toleration whitelist always admits them.
BASE_TOLERATIONS: list[dict[str, str]] = [
    {"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": effect}
    for key, effect in (
        ("not-ready", "NoExecute"),
        ("unreachable", "NoExecute"),
        ("disk-pressure", "NoSchedule"),
        ("memory-pressure", "NoSchedule"),
        ("pid-pressure", "NoSchedule"),
        ("unschedulable", "NoSchedule"),
        ("network-unavailable", "NoSchedule"),
    )
]


def pool_tenant_label(tenant: str) -> str:
    return f"{POOL_TENANT_PREFIX}{tenant}"


def pool_labels(pool: str, tenants: Iterable[str]) -> dict[str, str]:
    return {POOL_LABEL: pool, **{pool_tenant_label(t): "true" for t in sorted(tenants)}}


def wharf_node_labels(node: dict[str, Any]) -> dict[str, str]:
    labels = node.get("metadata", {}).get("labels") or {}
    return {k: v for k, v in labels.items() if k == POOL_LABEL or k.startswith(POOL_TENANT_PREFIX)}


def _taint_key(taint: Mapping[str, Any]) -> tuple[str, str]:
    return (str(taint.get("key", "")), str(taint.get("effect", "")))


def node_taints(
    node: dict[str, Any], ours_before: Iterable[tuple[str, str]], ours: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The node's taints with Wharf's replaced and everyone else's (cordon, not-ready, …)
    kept as they are: Wharf owns only the taints it put there."""
    mine = set(ours_before) | {_taint_key(t) for t in ours}
    others = [t for t in node.get("spec", {}).get("taints") or [] if _taint_key(t) not in mine]
    return [*others, *({"value": "", **t} for t in ours)]


def same_taints(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> bool:
    def norm(ts: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
        return {(str(t.get("key")), str(t.get("value") or ""), str(t.get("effect"))) for t in ts}

    return norm(a) == norm(b)
