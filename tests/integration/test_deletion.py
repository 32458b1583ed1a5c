"""What a delete acknowledged is finished after any crash, and touches nothing else.

For each kind that owns objects in the clusters the server runs as a real process and is
killed (SIGKILL) at several moments after a delete was answered 200:

- `recorded`: the delete was answered by a server running no controllers, so nothing had
  been removed yet;
- `at-once`: right after the answer, while the controllers start removing;
- `midway`: as soon as the first object is seen going in some cluster.

After the restart exactly the owner's objects go, in every cluster; every other object stays,
and the clusters' audit logs show that Wharf wrote nothing but those removals.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    WHARF_USER,
    Api,
    ServerProcess,
    register_clusters,
    wait_for,
)
from wharf.lab import Lab, LabCluster

MOMENTS = ("recorded", "at-once", "midway")
KINDS = (
    "namespaces,deployments,statefulsets,replicasets,pods,services,configmaps,secrets,"
    "horizontalpodautoscalers,poddisruptionbudgets,serviceaccounts,rolebindings,"
    "resourcequotas,limitranges,networkpolicies,cronjobs"
)
IMAGE = "registry.example/shop/web:1.4.2"

Inventory = dict[str, set[str]]  # cluster -> {kind/namespace/name}


class Crashable:
    """A wharf server process that a test kills and starts again."""

    def __init__(self, tmp_path: Path, database_url: str, lab: Lab) -> None:
        self.server = ServerProcess(tmp_path, database_url)
        self.lab = lab
        self.server.start()
        self.admin = self.server.login()
        register_clusters(self.admin, lab)

    def restart(self, controllers: bool = True) -> None:
        self.server.kill()
        self.server.env["WHARF_CONTROLLERS"] = "true" if controllers else "false"
        self.server.start()
        self.admin = self.server.login()

    def delete_and_kill(self, path: str, name: str, moment: str, going: Callable[[], bool]) -> None:
        """DELETE (answered 200), SIGKILL at `moment`, start again with controllers."""
        if moment == "recorded":
            self.restart(controllers=False)
        answer = self.admin.delete(path, params={"confirm": name})
        assert answer.status_code == 200, answer.text
        if moment == "midway":
            wait_for(going, timeout=60, what=f"removal of {name} begun")
        self.restart()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def crashable(tmp_path: Path, database_url: str, lab: Lab) -> Iterator[Crashable]:
    server = Crashable(tmp_path, database_url, lab)
    yield server
    server.stop()


def inventory(kubectl, cluster: LabCluster, selector: str) -> set[str]:
    """Every object matching the label selector in the cluster, terminating ones included."""
    listing = kubectl(cluster, "get", KINDS, "-A", "-l", selector, "-o", "json").stdout
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in json.loads(listing)["items"]
    }


def everywhere(kubectl, lab: Lab, selector: str) -> Inventory:
    return {c.name: inventory(kubectl, c, selector) for c in lab.clusters()}


def audit_marks(lab: Lab) -> dict[str, int]:
    return {c.name: len(c.writes_by(WHARF_USER)) for c in lab.clusters()}


def writes_since(lab: Lab, marks: dict[str, int], mine: Callable[[dict[str, Any]], bool]):
    """Wharf's writes to the clusters since `marks` that concern this test's objects."""
    out = []
    for cluster in lab.clusters():
        for event in cluster.writes_by(WHARF_USER)[marks[cluster.name] :]:
            if mine(event.get("objectRef", {})):
                out.append((cluster.name, event["verb"], _ref(event)))
    return out


def _ref(event: dict[str, Any]) -> str:
    ref = event.get("objectRef", {})
    return f"{ref.get('resource')}/{ref.get('namespace', '')}/{ref.get('name', '')}"


def in_tenants(*tenants: str) -> Callable[[dict[str, Any]], bool]:
    def mine(ref: dict[str, Any]) -> bool:
        where = ref.get("namespace") or (
            ref.get("name") if ref.get("resource") == "namespaces" else ""
        )
        return any((where or "").startswith(f"{t}-") for t in tenants)

    return mine


def tenant(admin: Api, clusters: list[str], quota: dict[str, str] | None = None) -> str:
    name = f"t{uuid.uuid4().hex[:8]}"
    body = {
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"quota": quota or {"cpu": "8", "memory": "16Gi"}, "clusters": clusters},
    }
    admin.ok("PUT", f"/api/v1/tenants/{name}", json=body)
    return name


def project(admin: Api, tenant_name: str, name: str, clusters: list[str]) -> None:
    body = {
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {
            "quota": {"cpu": "1", "memory": "2Gi"},
            "environments": [{"name": "dev", "clusters": clusters}],
        },
    }
    admin.ok("PUT", f"/api/v1/tenants/{tenant_name}/projects/{name}", json=body)


def wait_ready(admin: Api, path: str, field: str = "phase", value: str = "Ready") -> None:
    def ready() -> bool:
        obj = admin.ok("GET", path)
        status = obj["status"]
        fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
        return fresh and status.get(field) == value

    wait_for(ready, timeout=90, what=f"{path} {value}")


def finished(admin: Api, path: str, remaining: Callable[[], Any]) -> None:
    """The delete is done: nothing of the owner is left, and then neither is its record."""
    wait_for(lambda: not remaining(), timeout=90, what=f"objects of {path} gone")
    wait_for(lambda: admin.get(path).status_code == 404, what=f"{path} gone")


def namespace_going(kubectl, lab: Lab, ns: str) -> bool:
    """The namespace is terminating or gone in some cluster."""
    for cluster in lab.clusters():
        found = kubectl(cluster, "get", "namespace", ns, "-o", "json", check=False)
        if found.returncode != 0 or json.loads(found.stdout).get("metadata", {}).get(
            "deletionTimestamp"
        ):
            return True
    return False


def without(inv: Inventory, gone: Callable[[str], bool]) -> Inventory:
    return {c: {o for o in objs if not gone(o)} for c, objs in inv.items()}


# -- applications ----------------------------------------------------------------------------


def application(tenant_name: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant_name},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": name, "image": IMAGE, "replicas": 1},
            "config": {
                "configMaps": {"settings": {"MODE": "fast"}},
                "secrets": {"db": {"PASSWORD": f"pw-{name}"}},
            },
        },
    }


def test_a_deleted_application_is_removed_after_a_crash_and_nothing_else(
    crashable: Crashable, kubectl
):
    lab, admin = crashable.lab, crashable.admin
    owner = tenant(admin, ["lab1", "lab2"])
    project(admin, owner, "shop", ["lab1", "lab2"])
    wait_ready(admin, f"/api/v1/tenants/{owner}/projects/shop")
    ns = f"{owner}--shop-dev"
    lab1 = lab.cluster("lab1")
    kubectl(lab1, "-n", ns, "create", "configmap", "not-wharfs")
    doomed = {moment: f"app{i}" for i, moment in enumerate(MOMENTS)}
    for name in [*doomed.values(), "keep"]:
        admin.ok(
            "PUT", f"/api/v1/tenants/{owner}/applications/{name}", json=application(owner, name)
        )
    for name in [*doomed.values(), "keep"]:
        wait_ready(admin, f"/api/v1/tenants/{owner}/applications/{name}", "state", "Available")
    selector = f"wharf.io/tenant={owner}"

    for moment, name in doomed.items():
        before = everywhere(kubectl, lab, selector)
        theirs = everywhere(kubectl, lab, f"{selector},wharf.io/app={name}")
        assert all(
            {o.split("/")[0] for o in objs}
            >= {
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "ConfigMap",
                "Secret",
                "Pod",
            }
            for objs in theirs.values()
        ), theirs
        marks = audit_marks(lab)

        def going(name: str = name, theirs: Inventory = theirs) -> bool:
            now = everywhere(kubectl, lab, f"{selector},wharf.io/app={name}")
            return any(now[c] != theirs[c] for c in now)

        path = f"/api/v1/tenants/{owner}/applications/{name}"
        crashable.delete_and_kill(path, name, moment, going)
        admin = crashable.admin
        finished(
            admin,
            path,
            lambda name=name: any(
                everywhere(kubectl, lab, f"{selector},wharf.io/app={name}").values()
            ),
        )
        # Exactly its objects are gone (ReplicaSets and pods with their workload), and Wharf
        # wrote nothing but their removals: the rest was reconciled after the restart with
        # nothing to change.
        after = everywhere(kubectl, lab, selector)
        assert after == without(before, lambda o, n=name: f"/{n}" in o), moment
        writes = writes_since(lab, marks, in_tenants(owner))
        assert writes, f"{moment}: no removal reached the audit logs"
        assert all(verb == "delete" and name in ref for _, verb, ref in writes), writes
    assert kubectl(lab1, "-n", ns, "get", "configmap", "not-wharfs", check=False).returncode == 0
    # The name is free again once the delete is done.
    admin.ok("PUT", f"/api/v1/tenants/{owner}/applications/app0", json=application(owner, "app0"))


# -- projects and tenants --------------------------------------------------------------------


def test_a_deleted_project_loses_its_namespaces_after_a_crash_and_nothing_else(
    crashable: Crashable, kubectl
):
    lab, admin = crashable.lab, crashable.admin
    owner = tenant(admin, ["lab1", "lab2"])
    doomed = {moment: f"p{i}" for i, moment in enumerate(MOMENTS)}
    for name in [*doomed.values(), "keep"]:
        project(admin, owner, name, ["lab1", "lab2"])
    for name in [*doomed.values(), "keep"]:
        wait_ready(admin, f"/api/v1/tenants/{owner}/projects/{name}")
    # Someone else's namespace that even carries the tenant's label: not Wharf's, so left.
    lab2 = lab.cluster("lab2")
    bystander = f"{owner}-not-wharfs"
    kubectl(lab2, "create", "namespace", bystander)
    kubectl(lab2, "label", "namespace", bystander, f"wharf.io/tenant={owner}")
    selector = f"wharf.io/tenant={owner}"

    for moment, name in doomed.items():
        before = everywhere(kubectl, lab, selector)
        ns = f"{owner}--{name}-dev"

        def going(ns: str = ns) -> bool:
            return namespace_going(kubectl, lab, ns)

        marks = audit_marks(lab)
        path = f"/api/v1/tenants/{owner}/projects/{name}"
        crashable.delete_and_kill(path, name, moment, going)
        admin = crashable.admin
        finished(
            admin,
            path,
            lambda ns=ns: any(
                f"Namespace//{ns}" in objs for objs in everywhere(kubectl, lab, selector).values()
            ),
        )
        after = everywhere(kubectl, lab, selector)
        assert after == without(before, lambda o, ns=ns: f"/{ns}/" in o or o.endswith(f"//{ns}"))
        writes = writes_since(lab, marks, in_tenants(owner))
        assert sorted(writes) == [
            ("lab1", "delete", f"namespaces/{ns}/{ns}"),
            ("lab2", "delete", f"namespaces/{ns}/{ns}"),
        ]
    assert kubectl(lab2, "get", "namespace", bystander, check=False).returncode == 0
    kubectl(lab2, "delete", "namespace", bystander, "--wait=false")


def test_a_deleted_tenant_is_removed_after_a_crash_and_nothing_else(crashable: Crashable, kubectl):
    lab, admin = crashable.lab, crashable.admin
    keep = tenant(admin, ["lab1", "lab2"])
    project(admin, keep, "stays", ["lab1", "lab2"])
    doomed = {moment: tenant(admin, ["lab1", "lab2"]) for moment in MOMENTS}
    for name in doomed.values():
        project(admin, name, "web", ["lab1", "lab2"])
    for name in [keep, *doomed.values()]:
        wait_ready(admin, f"/api/v1/tenants/{name}/projects/{'stays' if name == keep else 'web'}")
    kept = everywhere(kubectl, lab, f"wharf.io/tenant={keep}")
    assert all(kept.values())

    for moment, name in doomed.items():
        marks = audit_marks(lab)

        def going(name: str = name) -> bool:
            return namespace_going(kubectl, lab, f"{name}--web-dev")

        if moment == "recorded":
            crashable.restart(controllers=False)
        # The tenant goes with its project, both answered before either is done.
        project_path = f"/api/v1/tenants/{name}/projects/web"
        assert crashable.admin.delete(project_path, params={"confirm": "web"}).status_code == 200
        answer = crashable.admin.delete(f"/api/v1/tenants/{name}", params={"confirm": name})
        assert answer.status_code == 200, answer.text
        if moment == "midway":
            wait_for(going, timeout=60, what=f"removal of {name} begun")
        crashable.restart()
        admin = crashable.admin
        finished(
            admin,
            f"/api/v1/tenants/{name}",
            lambda name=name: any(everywhere(kubectl, lab, f"wharf.io/tenant={name}").values()),
        )
        assert admin.get(project_path).status_code == 404
        assert everywhere(kubectl, lab, f"wharf.io/tenant={keep}") == kept
        writes = writes_since(lab, marks, in_tenants(keep, *doomed.values()))
        ns = f"namespaces/{name}--web-dev/{name}--web-dev"
        assert sorted(writes) == [("lab1", "delete", ns), ("lab2", "delete", ns)]
    # A finished delete frees the name.
    body = {"kind": "Tenant", "metadata": {"name": doomed["recorded"]}, "spec": {}}
    assert admin.put(f"/api/v1/tenants/{doomed['recorded']}", body).status_code == 201


# -- node pools and clusters -----------------------------------------------------------------

# Pools on lab2, by zone (nodes 1 and 3 are in zone 2, node 2 in zone 1) and by host; their
# taints only prefer, so that the rest of the session can still schedule anywhere.
POOLS = {
    "zone1": ({"topology.kubernetes.io/zone": "lab2-zone-1"}, "wharf.test/zone1"),
    "zone2": ({"topology.kubernetes.io/zone": "lab2-zone-2"}, "wharf.test/zone2"),
    "node1": ({"kubernetes.io/hostname": "lab2-node-1"}, "wharf.test/node1"),
    "keep": ({"kubernetes.io/hostname": "lab2-node-3"}, "wharf.test/keep"),
}
SOMEONE_ELSES = "example.com/maintenance"


def node_pool(admin: Api, name: str) -> None:
    selector, key = POOLS[name]
    body = {
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "cluster": "lab2",
            "nodeSelector": selector,
            "taints": [{"key": key, "value": name, "effect": "PreferNoSchedule"}],
        },
    }
    admin.ok("PUT", f"/api/v1/nodepools/{name}", json=body)


def taints(kubectl, cluster: LabCluster) -> dict[str, set[str]]:
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: {t["key"] for t in n["spec"].get("taints", [])} for n in nodes}


def expected_taints(pools: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {f"lab2-node-{i}": set() for i in (1, 2, 3)}
    hosts = {
        "lab2-node-1": "lab2-zone-2",
        "lab2-node-2": "lab2-zone-1",
        "lab2-node-3": "lab2-zone-2",
    }
    for pool in pools:
        selector, key = POOLS[pool]
        for node, zone in hosts.items():
            labels = {"topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": node}
            if all(labels.get(k) == v for k, v in selector.items()):
                out[node].add(key)
    out["lab2-node-2"].add(SOMEONE_ELSES)
    return out


def node_writes(lab: Lab, marks: dict[str, int]) -> list[tuple[str, str, str]]:
    return writes_since(lab, marks, lambda ref: ref.get("resource") == "nodes")


@pytest.fixture
def someone_elses_taint(lab: Lab, kubectl) -> Iterator[None]:
    lab2 = lab.cluster("lab2")
    kubectl(lab2, "taint", "nodes", "lab2-node-2", f"{SOMEONE_ELSES}=yes:PreferNoSchedule")
    yield
    kubectl(lab2, "taint", "nodes", "lab2-node-2", f"{SOMEONE_ELSES}-", check=False)


def test_a_deleted_node_pool_takes_back_its_taints_after_a_crash_and_nothing_else(
    crashable: Crashable, someone_elses_taint, kubectl
):
    lab, admin = crashable.lab, crashable.admin
    lab2 = lab.cluster("lab2")
    pools = ["zone1", "zone2", "node1", "keep"]
    for name in pools:
        node_pool(admin, name)
    wait_for(lambda: taints(kubectl, lab2) == expected_taints(pools), what="pool taints")
    lab1_before = taints(kubectl, lab.cluster("lab1"))
    # Two pools give node 1 a taint each: one going takes only its own.
    for moment, name in zip(MOMENTS, ["node1", "zone1", "zone2"], strict=True):
        marks = audit_marks(lab)
        left = [p for p in pools if p != name]
        key = POOLS[name][1]
        owned = {n for n, t in expected_taints([name]).items() if key in t}

        def going(key: str = key, owned: set[str] = owned) -> bool:
            return any(key not in taints(kubectl, lab2)[n] for n in owned)

        crashable.delete_and_kill(f"/api/v1/nodepools/{name}", name, moment, going)
        admin = crashable.admin
        finished(
            admin,
            f"/api/v1/nodepools/{name}",
            lambda key=key: any(key in t for t in taints(kubectl, lab2).values()),
        )
        assert taints(kubectl, lab2) == expected_taints(left)
        pools = left
        touched = {ref.split("/")[-1] for _, _, ref in node_writes(lab, marks)}
        assert touched == owned, moment
    assert taints(kubectl, lab.cluster("lab1")) == lab1_before
    admin.ok("DELETE", "/api/v1/nodepools/keep", params={"confirm": "keep"})
    wait_for(lambda: taints(kubectl, lab2) == expected_taints([]), what="keep's taint gone")


def register_lab2(admin: Api, lab: Lab) -> None:
    kubeconfig = lab.cluster("lab2").user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
    body = {"kind": "Cluster", "metadata": {"name": "lab2"}, "spec": {"kubeconfig": kubeconfig}}
    admin.ok("PUT", "/api/v1/clusters/lab2", json=body)
    wait_for(
        lambda: admin.ok("GET", "/api/v1/clusters/lab2")["status"].get("phase") == "Ready",
        what="lab2 Ready",
    )


def test_a_cluster_leaving_takes_back_what_wharf_put_there_after_a_crash(
    crashable: Crashable, someone_elses_taint, kubectl
):
    lab = crashable.lab
    lab1, lab2 = lab.cluster("lab1"), lab.cluster("lab2")
    stays = tenant(crashable.admin, ["lab1"])
    project(crashable.admin, stays, "web", ["lab1"])
    wait_ready(crashable.admin, f"/api/v1/tenants/{stays}/projects/web")
    in_lab1 = inventory(kubectl, lab1, f"wharf.io/tenant={stays}")
    assert in_lab1
    for moment in MOMENTS:
        admin = crashable.admin
        register_lab2(admin, lab)  # again, after the previous round took it away
        # What Wharf puts in lab2: node pool taints, and the namespace of a project that
        # stayed placed there after its tenant lost the grant of lab2.
        for name in POOLS:
            node_pool(admin, name)
        gone = tenant(admin, ["lab1", "lab2"])
        project(admin, gone, "web", ["lab2"])
        wait_ready(admin, f"/api/v1/tenants/{gone}/projects/web")
        wait_for(lambda: taints(kubectl, lab2) == expected_taints(list(POOLS)), what="taints")
        grant = {
            "kind": "Tenant",
            "metadata": {"name": gone},
            "spec": {"quota": {"cpu": "8", "memory": "16Gi"}, "clusters": ["lab1"]},
        }
        admin.ok("PUT", f"/api/v1/tenants/{gone}", json=grant)
        assert inventory(kubectl, lab2, f"wharf.io/tenant={gone}")
        marks = audit_marks(lab)

        def going(gone: str = gone) -> bool:
            return taints(kubectl, lab2) != expected_taints(list(POOLS)) or namespace_going(
                kubectl, lab, f"{gone}--web-dev"
            )

        crashable.delete_and_kill("/api/v1/clusters/lab2", "lab2", moment, going)
        admin = crashable.admin
        finished(
            admin,
            "/api/v1/clusters/lab2",
            lambda gone=gone: (
                taints(kubectl, lab2) != expected_taints([])
                or inventory(kubectl, lab2, f"wharf.io/tenant={gone}")
            ),
        )
        for name in POOLS:
            assert admin.get(f"/api/v1/nodepools/{name}").status_code == 404
        # lab1 untouched: its objects are the same, and Wharf wrote nothing there.
        assert inventory(kubectl, lab1, f"wharf.io/tenant={stays}") == in_lab1
        ours = in_tenants(stays, gone)
        writes = writes_since(
            lab, marks, lambda r, ours=ours: ours(r) or r.get("resource") == "nodes"
        )
        assert {c for c, _, _ in writes} == {"lab2"}, writes
        assert (lab2.name, "delete", f"namespaces/{gone}--web-dev/{gone}--web-dev") in writes
        tainted = {n for n, t in expected_taints(list(POOLS)).items() if t - {SOMEONE_ELSES}}
        assert {r.split("/")[-1] for _, _, r in writes if r.startswith("nodes/")} == tainted
        # The project that was left on lab2 goes too, before the next round.
        admin.ok("DELETE", f"/api/v1/tenants/{gone}/projects/web", params={"confirm": "web"})
        admin.ok("DELETE", f"/api/v1/tenants/{gone}", params={"confirm": gone})
        wait_for(
            lambda gone=gone, admin=admin: admin.get(f"/api/v1/tenants/{gone}").status_code == 404
        )
