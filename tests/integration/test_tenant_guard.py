"""Tenant isolation inside the clusters, tried as an attacker with the kubeconfigs Wharf issues.

Modelled on the Kubernetes Multi-Tenancy Benchmarks (level 1) and the Pod Security Standards:
every check is run with a developer's and a tenant admin's kubeconfig of tenant A, in both lab
clusters, and must be refused by the cluster itself (RBAC, Pod Security Admission, Wharf's
ValidatingAdmissionPolicy, ResourceQuota). docs/security.md lists the checks and what enforces
each. The databases play no part here, so these run on SQLite only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Wharf, manifest, wait_for

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _pod(name: str, container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base = {
        "name": "c",
        "image": "registry.example/app:1.0",
        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{**base, **(container or {})}], **spec},
    }


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}, **spec},
    }


def _pvc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            **spec,
        },
    }


ALLOW_ALL = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-everyone"},
    "spec": {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
}


@dataclass
class Attempt:
    """One thing an attacker tries: kubectl arguments, optionally with a manifest on stdin."""

    check: str
    args: tuple[str, ...]
    stdin: dict[str, Any] | None = None
    namespaced: bool = True  # run in the attacker's own namespace


def attempts(own: str, other: str, stronger_account: str) -> list[Attempt]:
    create = ("create", "-f", "-")
    return [
        # Cluster resources.
        Attempt("list nodes", ("get", "nodes"), namespaced=False),
        Attempt("list namespaces", ("get", "namespaces"), namespaced=False),
        Attempt("create a namespace", ("create", "namespace", "mine"), namespaced=False),
        Attempt("list cluster roles", ("get", "clusterroles"), namespaced=False),
        Attempt(
            "bind cluster-admin",
            ("create", "clusterrolebinding", "me", "--clusterrole=cluster-admin", "--user=me"),
            namespaced=False,
        ),
        Attempt("list persistent volumes", ("get", "pv"), namespaced=False),
        Attempt("list CRDs", ("get", "crd"), namespaced=False),
        Attempt("list admission policies", ("get", "validatingadmissionpolicies"), False),
        # Another tenant's namespaces.
        Attempt("list pods of tenant B", ("-n", other, "get", "pods"), namespaced=False),
        Attempt("read secrets of tenant B", ("-n", other, "get", "secrets"), namespaced=False),
        Attempt(
            "create in tenant B",
            ("-n", other, "create", "configmap", "x", "--from-literal=a=b"),
            namespaced=False,
        ),
        # What Wharf owns in the tenant's own namespace.
        Attempt(
            "raise the ResourceQuota",
            ("patch", "resourcequota", "wharf-quota", "-p", '{"spec":{"hard":{"pods":"999"}}}'),
        ),
        Attempt("delete the LimitRange", ("delete", "limitrange", "wharf-container-defaults")),
        Attempt(
            "delete the isolation policy", ("delete", "networkpolicy", "wharf-tenant-isolation")
        ),
        Attempt("add an allow-all NetworkPolicy", create, ALLOW_ALL),
        Attempt(
            "create a RoleBinding",
            ("create", "rolebinding", "me", "--clusterrole=admin", "--user=me"),
        ),
        Attempt("relabel the namespace", ("label", "namespace", own, "wharf.io/tenant=x")),
        Attempt(
            "lift Pod Security",
            (
                "label",
                "--overwrite",
                "namespace",
                own,
                "pod-security.kubernetes.io/enforce=privileged",
            ),
        ),
        # Pod Security (baseline, the default).
        Attempt(
            "privileged container",
            create,
            _pod("priv", {"securityContext": {"privileged": True}}),
        ),
        Attempt(
            "add NET_ADMIN",
            create,
            _pod("netadmin", {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
        ),
        Attempt(
            "add SYS_ADMIN",
            create,
            _pod("sysadmin", {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        ),
        Attempt(
            "hostPath /",
            create,
            _pod(
                "hostpath",
                {"volumeMounts": [{"name": "root", "mountPath": "/host"}]},
                volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            ),
        ),
        Attempt("host network", create, _pod("hostnet", hostNetwork=True)),
        Attempt("host PID", create, _pod("hostpid", hostPID=True)),
        Attempt("host IPC", create, _pod("hostipc", hostIPC=True)),
        Attempt(
            "host port",
            create,
            _pod("hostport", {"ports": [{"containerPort": 80, "hostPort": 8080}]}),
        ),
        # Wharf's admission policy and quota.
        Attempt("pod naming its node", create, _pod("pinned", nodeName="lab1-node-1")),
        Attempt(
            "long-lived token Secret",
            create,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": "forever",
                    "annotations": {"kubernetes.io/service-account.name": "default"},
                },
            },
        ),
        Attempt("Service externalIPs", create, _service("ext", externalIPs=["10.1.2.3"])),
        Attempt("NodePort beyond the grant", create, _service("np", type="NodePort")),
        Attempt("bind a foreign PV", create, _pvc("foreign", volumeName="someone-elses")),
        Attempt("claim without a class", create, _pvc("classless", storageClassName="")),
        Attempt("claim of an ungranted class", create, _pvc("slow", storageClassName="slow")),
        # Stronger identities.
        Attempt(
            "mint a token for a stronger identity",
            ("-n", "wharf-system", "create", "token", stronger_account),
            namespaced=False,
        ),
        Attempt("mint a token for default", ("create", "token", "default")),
        Attempt(
            "impersonate a stronger identity",
            ("get", "pods", f"--as=system:serviceaccount:wharf-system:{stronger_account}"),
        ),
        Attempt("impersonate a user", ("get", "pods", "--as=admin")),
        Attempt("create a ServiceAccount", ("create", "serviceaccount", "mine")),
        Attempt(
            "run a pod as a stronger identity",
            create,
            _pod("as-admin", serviceAccountName=stronger_account),
        ),
    ]


def _refused(result: Any) -> bool:
    text = result.stderr.lower()
    return result.returncode != 0 and any(
        word in text
        for word in ("forbidden", "denied", "violates podsecurity", "exceeded quota", "not found")
    )


@pytest.fixture
def attack(wharf: Wharf, tmp_path: Path):
    """Tenant A (admin `ta`, developer `dev` in project alpha) and tenant B, placed in both
    clusters, and the kubeconfigs Wharf issues to dev and ta for alpha's dev environment."""
    ta, dev, tb = wharf.user(), wharf.user(), wharf.user()
    a = wharf.tenant(
        {"cpu": "4", "memory": "8Gi", "pods": "20", "services.nodeports": "2"},
        admins=[ta.user],
        storageClasses=["fast"],
    )
    b = wharf.tenant({"cpu": "4", "memory": "8Gi"}, admins=[tb.user])
    wharf.project(
        a, "alpha", {"cpu": "2", "memory": "4Gi", "pods": "10"}, members=[{"user": dev.user}]
    )
    wharf.project(b, "beta", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(a, "alpha")
    wharf.wait_placed(b, "beta")
    paths = {}
    for who in (dev, ta):
        config = who.ok(
            "POST", f"/api/v1/tenants/{a}/projects/alpha/kubeconfig", params={"env": "dev"}
        )
        paths[who.user] = tmp_path / f"{who.user}.kubeconfig"
        paths[who.user].write_text(yaml.safe_dump(config))
    return a, b, ta, dev, paths


def _run(kubectl, cluster, path: Path, context: str, own: str, attempt: Attempt):
    args = ["--context", context]
    if attempt.namespaced:
        args += ["-n", own]
    stdin = json.dumps(attempt.stdin) if attempt.stdin else None
    return kubectl(cluster, *args, *attempt.args, kubeconfig=path, stdin=stdin, check=False)


def test_every_benchmark_check_is_refused_by_the_cluster(wharf: Wharf, kubectl, attack):
    a, b, ta, dev, paths = attack
    own, other = f"{a}--alpha-dev", f"{b}--beta-dev"
    stronger = f"{ta.user}.{own}"
    allowed = []
    for user, path in paths.items():
        config = yaml.safe_load(path.read_text())
        for context, cluster in zip(config["contexts"], wharf.lab.clusters(), strict=True):
            # The kubeconfig works where it should: the controls that make refusals meaningful.
            ok = _run(
                kubectl,
                cluster,
                path,
                context["name"],
                own,
                Attempt("own pod", ("create", "-f", "-"), _pod(f"ok-{user}")),
            )
            assert ok.returncode == 0, f"{user} in {cluster.name}: {ok.stderr}"
            for attempt in attempts(own, other, stronger if user == dev.user else f"x.{own}"):
                result = _run(kubectl, cluster, path, context["name"], own, attempt)
                if not _refused(result):
                    allowed.append(f"{user}@{cluster.name}: {attempt.check}: {result.stdout}")
    assert not allowed, "the cluster allowed:\n" + "\n".join(allowed)


def test_restricted_projects_refuse_root_and_privilege_escalation(wharf: Wharf, kubectl, attack):
    a, _b, ta, dev, paths = attack
    project = manifest(ta.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["environments"][0]["podSecurity"] = "restricted"
    ta.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    wharf.wait_placed(a, "alpha")
    own = f"{a}--alpha-dev"
    restricted = {
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    }
    cases = {
        "root": _pod(
            "root", {"securityContext": {**restricted["securityContext"], "runAsUser": 0}}
        ),
        "escalation": _pod(
            "esc",
            {
                "securityContext": {
                    **restricted["securityContext"],
                    "allowPrivilegeEscalation": True,
                }
            },
        ),
        "no seccomp": _pod(
            "noseccomp",
            {
                "securityContext": {
                    k: v for k, v in restricted["securityContext"].items() if k != "seccompProfile"
                }
            },
        ),
    }
    path = paths[dev.user]
    config = yaml.safe_load(path.read_text())
    for context, cluster in zip(config["contexts"], wharf.lab.clusters(), strict=True):
        labels = json.loads(kubectl(cluster, "get", "namespace", own, "-o", "json").stdout)[
            "metadata"
        ]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        for name, pod in cases.items():
            result = _run(
                kubectl,
                cluster,
                path,
                context["name"],
                own,
                Attempt(name, ("create", "-f", "-"), pod),
            )
            assert _refused(result), f"{name} in {cluster.name}: {result.stdout}"
        good = _run(
            kubectl,
            cluster,
            path,
            context["name"],
            own,
            Attempt("ok", ("create", "-f", "-"), _pod("compliant", restricted)),
        )
        assert good.returncode == 0, good.stderr


def test_only_a_platform_admin_allows_privileged_pods(wharf: Wharf, kubectl, attack):
    a, _b, ta, _dev, _paths = attack
    project = manifest(ta.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["podSecurity"] = "privileged"
    refused = ta.put(f"/api/v1/tenants/{a}/projects/alpha", project)
    assert refused.status_code == 403, refused.text
    assert refused.json()["field"] == "spec.podSecurity"
    denied = wharf.admin.ok(
        "GET", "/api/v1/audit", params={"tenant": a, "kind": "Project", "outcome": "denied"}
    )["items"]
    assert any("spec.podSecurity" in e["reason"] for e in denied)
    # A platform admin allows privileged pods in one place only ...
    project["spec"]["podSecurity"] = "baseline"
    project["spec"]["environments"].append(
        {"name": "ops", "clusters": ["lab1"], "podSecurity": "privileged"}
    )
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    # ... which does not let a tenant admin spread it elsewhere.
    project = manifest(ta.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["podSecurity"] = "privileged"
    spread = ta.put(f"/api/v1/tenants/{a}/projects/alpha", project)
    assert spread.status_code == 403, spread.text
    assert spread.json()["field"] == "spec.podSecurity"
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)
    wharf.wait_placed(a, "alpha")
    for cluster in wharf.lab.clusters():
        ns = json.loads(
            kubectl(cluster, "get", "namespace", f"{a}--alpha-dev", "-o", "json").stdout
        )
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # Changing something else keeps what the platform admin allowed.
    project = manifest(ta.ok("GET", f"/api/v1/tenants/{a}/projects/alpha"))
    project["spec"]["displayName"] = "still privileged"
    ta.ok("PUT", f"/api/v1/tenants/{a}/projects/alpha", json=project)


def test_a_cluster_user_named_like_a_wharf_user_gets_nothing(wharf: Wharf, kubectl, attack):
    a, _b, ta, dev, _paths = attack
    own = f"{a}--alpha-dev"
    for cluster in wharf.lab.clusters():
        for user in (dev.user, ta.user):
            namesake = cluster.user_kubeconfig(user)
            result = kubectl(cluster, "-n", own, "get", "pods", kubeconfig=namesake, check=False)
            assert _refused(result), f"{user} in {cluster.name}: {result.stdout}"
        bindings = json.loads(
            kubectl(cluster, "-n", own, "get", "rolebindings", "-o", "json").stdout
        )
        subjects = [s for rb in bindings["items"] for s in rb["subjects"]]
        assert subjects
        assert all(
            s["kind"] == "ServiceAccount" and s["namespace"] == "wharf-system" for s in subjects
        )


def test_node_pools_and_storage_classes_hold_in_the_cluster(wharf: Wharf, kubectl, attack):
    a, b, _ta, dev, paths = attack
    lab1 = wharf.lab.clusters()[0]
    node = f"{lab1.name}-node-1"
    pool = f"p{a}"
    wharf.admin.ok(
        "PUT",
        f"/api/v1/nodepools/{pool}",
        json={
            "kind": "NodePool",
            "metadata": {"name": pool},
            "spec": {
                "cluster": lab1.name,
                "nodeSelector": {"kubernetes.io/hostname": node},
                "taints": [{"key": "wharf.io/dedicated", "value": a, "effect": "NoSchedule"}],
            },
        },
    )
    tenant = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{a}"))
    tenant["spec"]["nodePools"] = [pool]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{a}", json=tenant)
    own = f"{a}--alpha-dev"
    pool_label = f"node-restriction.kubernetes.io/wharf-tenant-{a}"

    def marked() -> bool:
        n = json.loads(kubectl(lab1, "get", "node", node, "-o", "json").stdout)
        ns = json.loads(kubectl(lab1, "get", "namespace", own, "-o", "json").stdout)
        taints = [t["key"] for t in n["spec"].get("taints", [])]
        selector = ns["metadata"].get("annotations", {})
        return (
            n["metadata"]["labels"].get(pool_label) == "true"
            and "wharf.io/dedicated" in taints
            and "scheduler.alpha.kubernetes.io/node-selector" in selector
        )

    wait_for(marked, what="pool node labelled and tainted, namespace annotated")
    config = yaml.safe_load(paths[dev.user].read_text())
    context = config["contexts"][0]["name"]
    made = _run(
        kubectl,
        lab1,
        paths[dev.user],
        context,
        own,
        Attempt("p", ("create", "-f", "-"), _pod("pooled")),
    )
    assert made.returncode == 0, made.stderr
    pod = json.loads(kubectl(lab1, "-n", own, "get", "pod", "pooled", "-o", "json").stdout)
    assert pod["spec"]["nodeSelector"] == {pool_label: "true"}
    wait_for(
        lambda: (
            json.loads(kubectl(lab1, "-n", own, "get", "pod", "pooled", "-o", "json").stdout)[
                "spec"
            ].get("nodeName")
            == node
        ),
        what="the pod scheduled onto the tenant's pool",
    )
    # Tenant B cannot tolerate its way onto A's pool.
    sneaky = _pod(
        "sneaky",
        tolerations=[{"key": "wharf.io/dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    )
    result = kubectl(
        lab1, "-n", f"{b}--beta-dev", "create", "-f", "-", stdin=json.dumps(sneaky), check=False
    )
    assert result.returncode != 0
    assert "toleration" in result.stderr.lower(), result.stderr
    # Storage: only the tenant's classes.
    fast = _run(
        kubectl,
        lab1,
        paths[dev.user],
        context,
        own,
        Attempt("fast", ("create", "-f", "-"), _pvc("fast", storageClassName="fast")),
    )
    assert fast.returncode == 0, fast.stderr
    # A pending claim cannot be pointed at a volume afterwards either.
    repoint = _run(
        kubectl,
        lab1,
        paths[dev.user],
        context,
        own,
        Attempt("repoint", ("patch", "pvc", "fast", "-p", '{"spec":{"volumeName":"theirs"}}')),
    )
    assert _refused(repoint), repoint.stdout
    # A tenant granted no storage class claims no volume, whoever asks.
    none = kubectl(
        lab1,
        "-n",
        f"{b}--beta-dev",
        "create",
        "-f",
        "-",
        stdin=json.dumps(_pvc("any", storageClassName="fast")),
        check=False,
    )
    assert _refused(none), none.stdout
    # A cordon (someone else's taint) is left alone: Wharf owns only its own taints.
    kubectl(
        lab1,
        "taint",
        "node",
        node,
        "example.com/maintenance=yes:NoSchedule",
    )
    wait_for(
        lambda: (
            "example.com/maintenance"
            in {
                t["key"]
                for t in json.loads(kubectl(lab1, "get", "node", node, "-o", "json").stdout)[
                    "spec"
                ]["taints"]
            }
        ),
        what="the maintenance taint in place",
    )
    node_writes = lambda: [  # noqa: E731
        e for e in lab1.writes_by("wharf") if e["objectRef"].get("resource") == "nodes"
    ]
    before = len(node_writes())
    portal = wharf.client.portal
    assert portal is not None

    async def settle() -> None:
        async with asyncio.timeout(30):
            await wharf.platform.clusters.controller.idle()

    for _ in range(3):
        wharf.platform.clusters.controller.queue.add(lab1.name)
        portal.call(settle)
    n = json.loads(kubectl(lab1, "get", "node", node, "-o", "json").stdout)
    assert {"example.com/maintenance", "wharf.io/dedicated"} <= {
        t["key"] for t in n["spec"]["taints"]
    }
    assert len(node_writes()) == before, "Wharf wrote to a node whose taints were already right"
