"""Cluster and NodePool specs, and the pure arithmetic of capacity."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wharf.core.quantity import QuantityError, format_resources, parse_quantity
from wharf.core.resources import Kind, Spec, Stored

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


class GatewayRef(Spec):
    """The Gateway (Gateway API) applications' HTTPRoutes attach to in this cluster."""

    name: str = Field(description="The Gateway's name")
    namespace: str = Field(description="Its namespace (the platform's, not a tenant's)")
    httpsListener: str = Field(
        default="https", description="Its listener for HTTPS (routes with TLS attach here)"
    )
    httpListener: str = Field(
        default="http",
        description="Its listener for plain HTTP (routes without TLS, and the redirect of "
        "those with TLS to HTTPS)",
    )


class ClusterRouting(Spec):
    """How this cluster serves applications' HTTP routes; set by platform admins."""

    ingressClass: str | None = Field(
        default=None,
        description="IngressClass of the Ingresses Wharf writes (spec.ingressClassName); "
        "left out, the cluster's default class",
    )
    gateway: GatewayRef | None = Field(
        default=None,
        description="Routes become Gateway API HTTPRoutes attached to this Gateway, where the "
        "cluster serves gateway.networking.k8s.io (status.apis.gatewayAPI); otherwise Ingress",
    )
    clusterIssuer: str | None = Field(
        default=None,
        description="A cert-manager ClusterIssuer: TLS certificates of routes are issued in the "
        "cluster (a cert-manager Certificate) where it serves cert-manager.io "
        "(status.apis.certManager); otherwise the tenant's uploaded certificate is used",
    )


class ClusterSpec(Spec):
    """A Kubernetes cluster registered with Wharf: it places namespaces and delivers there."""

    kubeconfig: str = Field(
        description="A kubeconfig whose current context reaches the cluster with rights to "
        "manage namespaces, quotas and RBAC; sealed at rest and shown masked"
    )
    description: str = Field(default="", description="What the cluster is for, for people")
    storageClasses: dict[str, str] = Field(
        default_factory=dict,
        description="The platform's description of the cluster's storage classes, by name "
        "(e.g. fast: 'ceph-rbd, replicated, for databases'); the catalog itself is read from "
        "the cluster (status.storageClasses)",
    )
    routing: ClusterRouting = Field(
        default_factory=ClusterRouting,
        description="How applications' HTTP routes are served here: ingress class, Gateway "
        "API gateway, cert-manager issuer",
    )


# API groups whose presence in a cluster changes what Wharf writes there (status.apis).
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
CERT_MANAGER_GROUP = "cert-manager.io"


def served_apis(groups: dict[str, list[str]]) -> dict[str, bool]:
    """Which optional APIs the cluster serves, from its API groups and their versions."""
    return {
        "gatewayAPI": "v1" in groups.get(GATEWAY_API_GROUP, []),
        "certManager": "v1" in groups.get(CERT_MANAGER_GROUP, []),
    }


@dataclass(frozen=True)
class Routing:
    """What a cluster does with applications' routes: its spec.routing, where it serves the
    APIs needed (a Gateway without Gateway API, an issuer without cert-manager, count as
    not set)."""

    ingress_class: str | None = None
    gateway: GatewayRef | None = None
    cluster_issuer: str | None = None

    @property
    def kind(self) -> str:
        return "HTTPRoute" if self.gateway is not None else "Ingress"


def routing_of(spec: ClusterRouting, apis: Mapping[str, Any]) -> Routing:
    return Routing(
        ingress_class=spec.ingressClass,
        gateway=spec.gateway if apis.get("gatewayAPI") else None,
        cluster_issuer=spec.clusterIssuer if apis.get("certManager") else None,
    )


def routing_summary(spec: ClusterRouting, apis: Mapping[str, Any]) -> dict[str, Any]:
    """For the cluster's status: what routes become here, and where TLS comes from."""
    routing = routing_of(spec, apis)
    summary: dict[str, Any] = {
        "routes": routing.kind,
        "tls": f"ClusterIssuer {routing.cluster_issuer}" if routing.cluster_issuer else "uploaded",
    }
    if routing.gateway is not None:
        summary["gateway"] = f"{routing.gateway.namespace}/{routing.gateway.name}"
    elif spec.ingressClass:
        summary["ingressClass"] = spec.ingressClass
    return summary


DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_catalog(
    classes: Iterable[dict[str, Any]], descriptions: dict[str, str]
) -> list[dict[str, Any]]:
    """The cluster's storage classes as tenants choose among them: provisioner, whether
    volumes may grow, whether it is the default, and the platform's description."""
    out = []
    for sc in classes:
        name = sc["metadata"]["name"]
        annotations = sc["metadata"].get("annotations") or {}
        out.append(
            {
                "name": name,
                "provisioner": sc.get("provisioner", ""),
                "allowVolumeExpansion": bool(sc.get("allowVolumeExpansion", False)),
                "reclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                "default": annotations.get(DEFAULT_CLASS_ANNOTATION) == "true",
                "description": descriptions.get(name, ""),
            }
        )
    return sorted(out, key=lambda c: str(c["name"]))


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


class TenantGrants(BaseModel):
    """What a Tenant's spec grants of the clusters' things, read through this view because
    clusters may not import tenancy (capabilities depend one way); the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    clusters: list[str] = Field(default_factory=list)
    nodePools: list[str] = Field(default_factory=list)


class PoolPlace(BaseModel):
    """Where a node pool is and whom it serves, read leniently: also from a row today's rules
    refuse, so that its fault stays with its own cluster and tenants (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    cluster: Any = None
    tenants: Any = None

    def serves(self, tenant: str) -> bool:
        return isinstance(self.tenants, list) and tenant in self.tenants


def pool_place(stored: Stored) -> PoolPlace:
    return PoolPlace.model_validate(dict(stored.spec))


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
    # Thousands of pods ask for a few distinct quantities: count them, then parse and add each
    # distinct one once (exact Fractions per pod took seconds of the event loop per cluster).
    seen: Counter[tuple[str, str]] = Counter()
    for resources in items:
        for name in CAPACITY_RESOURCES:
            if name in resources:
                seen[name, str(resources[name])] += 1
    total: dict[str, Fraction] = dict.fromkeys(CAPACITY_RESOURCES, Fraction(0))
    for (name, text), count in seen.items():
        try:
            total[name] += parse_quantity(text) * count
        except QuantityError:
            continue
    return total


def pod_requests(pod: dict[str, Any]) -> dict[str, Any]:
    """Of a pod, only what capacity_of reads (and its name): a whole pod is ~20 KB in the
    server's memory, and a cluster's every pod is watched."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    containers = spec.get("containers", []) or []
    return {
        "metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")},
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": [
                {"resources": {"requests": (c.get("resources") or {}).get("requests") or {}}}
                for c in containers
            ],
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


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


@dataclass(frozen=True)
class GrantedPool:
    """A node pool with every tenant granted it (the pool's spec.tenants, and tenants whose
    spec.nodePools name it: either side may record a grant)."""

    name: str
    spec: NodePoolSpec
    tenants: tuple[str, ...]


def pool_labels_of(pools: Iterable[GrantedPool], node: dict[str, Any]) -> dict[str, str]:
    """The labels the node pools that select this node give it: the first pool's name, and
    every granted tenant."""
    labels: dict[str, str] = {}
    for pool in sorted(pools, key=lambda p: p.name):
        if node_matches(node, pool.spec.nodeSelector):
            labels.setdefault(POOL_LABEL, pool.name)
            labels.update({pool_tenant_label(t): "true" for t in pool.tenants})
    return labels


def wharf_node_labels(node: dict[str, Any]) -> dict[str, str]:
    labels = node.get("metadata", {}).get("labels") or {}
    return {k: v for k, v in labels.items() if k == POOL_LABEL or k.startswith(POOL_TENANT_PREFIX)}


# Which taints on a node Wharf put there ("key:effect", comma-separated), so that it can take
# back exactly those when a pool goes or stops selecting the node, and leave everyone else's.
TAINTS_ANNOTATION = "wharf.io/taints"


def _taint_id(taint: Mapping[str, Any]) -> str:
    return f"{taint['key']}:{taint.get('effect', '')}"


def pool_taints(pools: Iterable[NodePoolSpec], node: dict[str, Any]) -> list[dict[str, str]]:
    """The taints the node pools that select this node give it, each once."""
    wanted: dict[str, dict[str, str]] = {}
    for spec in pools:
        if node_matches(node, spec.nodeSelector):
            for taint in spec.taints:
                as_object = taint.model_dump()
                wanted.setdefault(_taint_id(as_object), as_object)
    return [wanted[k] for k in sorted(wanted)]


def tainted_node(
    node: dict[str, Any], wanted: list[dict[str, str]], labels: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The Node to apply so that it carries `wanted` and every taint not Wharf's, and exactly
    Wharf's pool `labels`, or None when it already does (nothing to write). Taints are one
    atomic list in the API, so the body has the whole list, and the resourceVersion it was
    computed from (a precondition); labels and taints go in one apply, as one field manager's."""
    labels = labels or {}
    meta = node["metadata"]
    annotations = meta.get("annotations") or {}
    recorded = {t for t in annotations.get(TAINTS_ANNOTATION, "").split(",") if t}
    ours = {_taint_id(t) for t in wanted}
    current = node.get("spec", {}).get("taints") or []
    taints = [t for t in current if _taint_id(t) not in recorded | ours] + wanted

    def seen(items: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
        return {(t["key"], t.get("value", ""), t.get("effect", "")) for t in items}

    record = ",".join(sorted(ours))
    if (
        seen(taints) == seen(current)
        and len(taints) == len(current)
        and recorded == ours
        and wharf_node_labels(node) == labels
    ):
        return None
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": meta["name"],
            "resourceVersion": meta["resourceVersion"],
            "labels": labels,
        },
        "spec": {"taints": taints},
    }
    if record:
        body["metadata"]["annotations"] = {TAINTS_ANNOTATION: record}
    return body
