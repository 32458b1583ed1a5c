"""What every lab cluster must do for Wharf to be proven on it: schedule, quota, policy, RBAC.

Each test runs once per lab cluster, so a failure names the cluster it happened in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from wharf.lab import Lab, LabCluster


@pytest.fixture(params=["lab1", "lab2"])
def cluster(lab: Lab, request: pytest.FixtureRequest) -> LabCluster:
    return lab.cluster(request.param)


@pytest.fixture
def namespace(cluster: LabCluster, kubectl) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl(cluster, "create", "namespace", name)
    return name


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def get_json(kubectl, cluster: LabCluster, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout)
    return result


def test_the_lab_has_two_clusters(lab):
    assert [c.name for c in lab.clusters()] == ["lab1", "lab2"]


def test_the_cluster_has_three_ready_kwok_nodes(cluster, kubectl):
    nodes = get_json(kubectl, cluster, "nodes")["items"]
    assert len(nodes) == 3
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True"


def test_a_deployment_reaches_three_running_pods_on_kwok_nodes(cluster, namespace, kubectl):
    kubectl(
        cluster,
        "-n",
        namespace,
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1.0",
        "--replicas=3",
    )

    def running_pods() -> list[dict[str, Any]] | None:
        pods = get_json(kubectl, cluster, "-n", namespace, "pods")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running if len(running) == 3 else None

    pods = wait_for(running_pods)
    assert pods, f"{cluster.name}: 3 pods did not reach Running"
    kwok_nodes = {f"{cluster.name}-node-{i}" for i in (1, 2, 3)}
    assert {p["spec"]["nodeName"] for p in pods} <= kwok_nodes
    assert wait_for(
        lambda: (
            get_json(kubectl, cluster, "-n", namespace, "deployment", "web")["status"].get(
                "readyReplicas"
            )
            == 3
        )
    )


def test_a_resource_quota_rejects_a_pod_that_goes_over_it(cluster, namespace, kubectl):
    kubectl(cluster, "-n", namespace, "create", "quota", "small", "--hard=requests.cpu=500m,pods=2")
    # Admission counts against usage only once the quota controller has computed it.
    assert wait_for(
        lambda: "used" in get_json(kubectl, cluster, "-n", namespace, "quota", "small")["status"]
    )

    def pod(name: str, cpu: str) -> str:
        container = {
            "name": "c",
            "image": "registry.example/app:1.0",
            "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}},
        }
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": [container]},
            }
        )

    kubectl(cluster, "-n", namespace, "apply", "-f", "-", stdin=pod("fits", "400m"))
    over = kubectl(
        cluster, "-n", namespace, "apply", "-f", "-", stdin=pod("over", "400m"), check=False
    )
    assert over.returncode != 0
    assert "exceeded quota: small, requested: requests.cpu=400m" in over.stderr
    assert "limited: requests.cpu=500m" in over.stderr


def test_a_network_policy_is_accepted(cluster, namespace, kubectl):
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-other-namespaces"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
    }
    kubectl(cluster, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(policy))
    stored = get_json(kubectl, cluster, "-n", namespace, "networkpolicy", "deny-other-namespaces")
    assert stored["spec"]["ingress"] == policy["spec"]["ingress"]


def test_rbac_denies_a_user_without_a_role_binding(cluster, namespace, kubectl):
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubeconfig = cluster.user_kubeconfig(user)
    denied = kubectl(cluster, "-n", namespace, "get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert f'User "{user}" cannot list resource "pods"' in denied.stderr
    # With a RoleBinding the same user gets in: the denial was RBAC, not a failed login.
    kubectl(
        cluster,
        "-n",
        namespace,
        "create",
        "rolebinding",
        "view",
        "--clusterrole=view",
        f"--user={user}",
    )
    assert wait_for(
        lambda: (
            kubectl(
                cluster, "-n", namespace, "get", "pods", kubeconfig=kubeconfig, check=False
            ).returncode
            == 0
        )
    )


def test_status_reports_every_cluster_healthy_with_its_processes(lab):
    for row in lab.status():
        assert row["healthy"] is True
        assert row["nodes_ready"] == 3
        assert all(pid is not None for pid in row["processes"].values())
