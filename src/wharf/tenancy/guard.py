"""What Wharf puts into every cluster so that tenants stay apart inside it, as pure data.

- `wharf-system`: a namespace only cluster admins reach. The ServiceAccounts that members'
  kubeconfigs authenticate as live here, one per (member, project namespace), so no tenant role
  can mint a token for, impersonate or run a pod as them.
- Wharf's own ClusterRoles for the project roles. They are written out rule by rule rather than
  aggregated from `admin`/`edit`, which carry what a tenant must not have: RoleBindings,
  NetworkPolicies, ServiceAccount tokens, impersonation, changing quotas and limits.
- A ValidatingAdmissionPolicy for tenant namespaces (those labelled with a tenant): no Service
  externalIPs, no host ports, no pods that name their node, no long-lived ServiceAccount token
  Secrets, no PVC naming a PersistentVolume, only the tenant's storage classes, node
  ports only those Wharf's register gave the namespace (listed on it, set explicitly), and
  Ingresses only for hosts the register gave it (listed on it too).
  Pod Security Admission labels on each namespace do the rest of the Pod Security Standards.
"""

from __future__ import annotations

from typing import Any

from wharf.tenancy.model import MANAGED_BY, TENANT_LABEL

SYSTEM_NAMESPACE = "wharf-system"
STORAGE_CLASSES_ANNOTATION = "wharf.io/storage-classes"
# The node ports the register gave the namespace's applications (comma-separated); the only
# ones a Service there may use.
NODE_PORTS_ANNOTATION = "wharf.io/node-ports"
# The hosts the register gave the namespace's applications (comma-separated); the only ones
# an Ingress there may serve.
HOSTS_ANNOTATION = "wharf.io/hosts"
POLICY_NAME = "wharf-tenant-guard"
OWNED = {MANAGED_BY: "wharf"}

# Project role -> Wharf's ClusterRole in the project's namespaces.
CLUSTER_ROLE_FOR: dict[str, str] = {
    "tenant-admin": "wharf:tenant-admin",
    "project-admin": "wharf:project-admin",
    "developer": "wharf:developer",
    "viewer": "wharf:viewer",
}

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]

# What members see in their namespaces (not Secrets: a viewer reads no credentials).
_VISIBLE: list[tuple[str, list[str]]] = [
    (
        "",
        [
            "pods",
            "pods/log",
            "pods/status",
            "services",
            "services/status",
            "endpoints",
            "configmaps",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "events",
            "resourcequotas",
            "resourcequotas/status",
            "limitranges",
            "serviceaccounts",
            "replicationcontrollers",
        ],
    ),
    (
        "apps",
        [
            "deployments",
            "deployments/status",
            "deployments/scale",
            "statefulsets",
            "statefulsets/status",
            "statefulsets/scale",
            "daemonsets",
            "replicasets",
            "replicasets/scale",
        ],
    ),
    ("batch", ["jobs", "jobs/status", "cronjobs", "cronjobs/status"]),
    ("autoscaling", ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    ("policy", ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    ("networking.k8s.io", ["ingresses", "ingresses/status", "networkpolicies"]),
    ("discovery.k8s.io", ["endpointslices"]),
    ("events.k8s.io", ["events"]),
    ("metrics.k8s.io", ["pods"]),
]
# What developers and admins change. Absent on purpose: roles, rolebindings, networkpolicies,
# resourcequotas, limitranges, serviceaccounts (and their tokens), namespaces, impersonation.
_CHANGEABLE: list[tuple[str, list[str]]] = [
    (
        "",
        [
            "pods",
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "replicationcontrollers",
        ],
    ),
    (
        "apps",
        [
            "deployments",
            "deployments/scale",
            "statefulsets",
            "statefulsets/scale",
            "daemonsets",
            "replicasets",
            "replicasets/scale",
        ],
    ),
    ("batch", ["jobs", "cronjobs"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("policy", ["poddisruptionbudgets"]),
    ("networking.k8s.io", ["ingresses"]),
]
_INTERACTIVE = ["pods/exec", "pods/attach", "pods/portforward", "pods/eviction"]


def _rules(groups: list[tuple[str, list[str]]], verbs: list[str]) -> list[dict[str, Any]]:
    return [{"apiGroups": [g], "resources": sorted(r), "verbs": verbs} for g, r in groups]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": OWNED},
        "rules": rules,
    }


def cluster_roles() -> list[dict[str, Any]]:
    viewer = _rules(_VISIBLE, READ)
    developer = [
        *viewer,
        {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
        *_rules(_CHANGEABLE, WRITE),
        {"apiGroups": [""], "resources": _INTERACTIVE, "verbs": ["create", "get"]},
    ]
    admin = [
        *developer,
        # Admins see who is bound in their namespaces; Wharf alone changes it.
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": READ},
    ]
    return [
        _cluster_role(CLUSTER_ROLE_FOR["viewer"], viewer),
        _cluster_role(CLUSTER_ROLE_FOR["developer"], developer),
        _cluster_role(CLUSTER_ROLE_FOR["project-admin"], admin),
        _cluster_role(CLUSTER_ROLE_FOR["tenant-admin"], admin),
    ]


def _containers(field: str) -> str:
    return (
        f"(!has(object.spec.{field}) || object.spec.{field}.all(c, !has(c.ports) || "
        "c.ports.all(p, !has(p.hostPort) || p.hostPort == 0)))"
    )


_ANNOTATIONS = "namespaceObject.metadata.annotations"
_LISTED_PORTS = f"{_ANNOTATIONS}['{NODE_PORTS_ANNOTATION}'].split(',')"
# A LoadBalancer with externalTrafficPolicy Local holds one more node port, for health checks
# (which quota does not count): set explicitly and listed too.
_NODE_PORTS = (
    f"has({_ANNOTATIONS}) && '{NODE_PORTS_ANNOTATION}' in {_ANNOTATIONS} && "
    f"object.spec.ports.all(p, has(p.nodePort) && string(p.nodePort) in {_LISTED_PORTS}) && "
    "(has(object.spec.healthCheckNodePort) ? "
    f"string(object.spec.healthCheckNodePort) in {_LISTED_PORTS} : "
    "(object.spec.type != 'LoadBalancer' || !has(object.spec.externalTrafficPolicy) || "
    "object.spec.externalTrafficPolicy != 'Local'))"
)
_HOSTS = f"{_ANNOTATIONS}['{HOSTS_ANNOTATION}'].split(',')"
_ROUTED = (
    f"has({_ANNOTATIONS}) && '{HOSTS_ANNOTATION}' in {_ANNOTATIONS} && "
    "!has(object.spec.defaultBackend) && "
    f"(!has(object.spec.rules) || object.spec.rules.all(r, has(r.host) && r.host in {_HOSTS})) && "
    f"(!has(object.spec.tls) || object.spec.tls.all(t, !has(t.hosts) || "
    f"t.hosts.all(h, h in {_HOSTS})))"
)
_GRANTED = (
    f"has({_ANNOTATIONS}) && '{STORAGE_CLASSES_ANNOTATION}' in {_ANNOTATIONS} && "
    f"object.spec.storageClassName in {_ANNOTATIONS}['{STORAGE_CLASSES_ANNOTATION}'].split(',')"
)
# The PersistentVolume binder sets volumeName when it binds a claim; nobody else may.
_BINDERS = (
    "['system:serviceaccount:kube-system:persistent-volume-binder', "
    "'system:kube-controller-manager']"
)
_VALIDATIONS: list[dict[str, str]] = [
    {
        "expression": "request.kind.kind != 'Service' || !has(object.spec.externalIPs) || "
        "size(object.spec.externalIPs) == 0",
        "message": "spec.externalIPs: Services of tenant namespaces may not claim external IPs",
        "reason": "Forbidden",
    },
    {
        # Left to itself the cluster would pick any free port, outside the register; so every
        # node port must be set, and be one the register gave this namespace.
        "expression": "request.kind.kind != 'Service' || !has(object.spec.type) || "
        f"!(object.spec.type in ['NodePort', 'LoadBalancer']) || ({_NODE_PORTS})",
        "message": "spec.ports[].nodePort: Services of tenant namespaces use only node ports "
        "Wharf's register gave them (an application's spec.nodePorts), set explicitly",
        "reason": "Forbidden",
    },
    {
        # A host-less rule or a default backend catches every host; any other host may be
        # another tenant's.
        "expression": f"request.kind.kind != 'Ingress' || ({_ROUTED})",
        "message": "spec.rules[].host: Ingresses of tenant namespaces serve only hosts Wharf's "
        "register gave them (an application's spec.routes), each rule naming one",
        "reason": "Forbidden",
    },
    {
        "expression": "request.kind.kind != 'Pod' || ("
        + " && ".join(_containers(f) for f in ("containers", "initContainers"))
        + ")",
        "message": "spec.containers[].ports[].hostPort: pods of tenant namespaces may not use "
        "host ports",
        "reason": "Forbidden",
    },
    {
        # Naming the node skips the scheduler, and with it node pools' selectors and taints.
        "expression": "request.kind.kind != 'Pod' || request.operation != 'CREATE' || "
        "!has(object.spec.nodeName) || object.spec.nodeName == ''",
        "message": "spec.nodeName: pods of tenant namespaces are placed by the scheduler; "
        "use a node selector within the tenant's node pools",
        "reason": "Forbidden",
    },
    {
        "expression": "request.kind.kind != 'Secret' || !has(object.type) || "
        "object.type != 'kubernetes.io/service-account-token'",
        "message": "type: long-lived ServiceAccount tokens are not issued in tenant namespaces",
        "reason": "Forbidden",
    },
    {
        "expression": "request.kind.kind != 'PersistentVolumeClaim' || "
        "!has(object.spec.volumeName) || object.spec.volumeName == '' || "
        "(request.operation == 'UPDATE' && ((has(oldObject.spec.volumeName) && "
        "oldObject.spec.volumeName == object.spec.volumeName)"
        f" || request.userInfo.username in {_BINDERS}))",
        "message": "spec.volumeName: a claim of a tenant namespace may not name a "
        "PersistentVolume; ask for a storage class instead",
        "reason": "Forbidden",
    },
    {
        "expression": "request.kind.kind != 'PersistentVolumeClaim' || "
        "request.operation != 'CREATE' || "
        "(has(object.spec.storageClassName) && object.spec.storageClassName != '')",
        "message": "spec.storageClassName: name one of the tenant's storage classes "
        "(a claim without a class could bind a volume of another tenant)",
        "reason": "Forbidden",
    },
    {
        "expression": "request.kind.kind != 'PersistentVolumeClaim' || "
        f"request.operation != 'CREATE' || ({_GRANTED})",
        "messageExpression": "'spec.storageClassName: ' + object.spec.storageClassName + "
        "' is not one of the storage classes granted to this tenant'",
        "reason": "Forbidden",
    },
]


def admission_policy() -> list[dict[str, Any]]:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": OWNED},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["services", "pods", "persistentvolumeclaims", "secrets"],
                    },
                    {
                        "apiGroups": ["networking.k8s.io"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["ingresses"],
                    },
                ]
            },
            "validations": _VALIDATIONS,
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": OWNED},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]
                }
            },
        },
    }
    return [policy, binding]


def cluster_baseline() -> list[dict[str, Any]]:
    """Every cluster-wide object the guarantees above need, in the order they are applied."""
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": SYSTEM_NAMESPACE,
            "labels": {**OWNED, "pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    return [namespace, *cluster_roles(), *admission_policy()]


def member_account(user: str, namespace: str, generation: int = 0) -> str:
    """The ServiceAccount (in wharf-system) a member's kubeconfig for one namespace uses. A
    user disabled before is at a later generation: a new name, so the account of before (and
    every token minted for it) is pruned, never taken over."""
    return f"{user}.{namespace}" + (f".{generation}" if generation else "")
