"""Clusters report version and capacity from watches; node pools select and taint nodes."""

from __future__ import annotations

import json
import uuid

from tests.integration.conftest import Wharf, wait_for


def test_cluster_status_has_version_health_and_capacity(wharf: Wharf, kubectl):
    cluster = wharf.admin.ok("GET", "/api/v1/clusters/lab1")
    status = cluster["status"]
    assert status["kubernetesVersion"] == "v1.37.2"
    assert status["lastHeartbeatTime"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Reachable")
    assert status["capacity"]["nodes"] == 3
    assert status["capacity"]["allocatable"] == {
        "cpu": "48",
        "memory": "192Gi",
        "nvidia.com/gpu": "0",
        "pods": "330",
    }
    assert cluster["metadata"]["labels"] == {"env": "lab"}

    # Requested resources follow the pods, through the watches. Other tests' pods come and go
    # on the shared lab, so the status is compared with the pods the cluster holds at the time.
    lab1 = wharf.lab.cluster("lab1")
    probe = f"capacity-probe-{uuid.uuid4().hex[:6]}"
    kubectl(lab1, "create", "namespace", probe)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "registry.example/probe:1",
                    "resources": {"requests": {"cpu": "750m"}},
                }
            ]
        },
    }

    def scheduled_pods() -> tuple[int, bool]:
        pods = json.loads(kubectl(lab1, "get", "pods", "-A", "-o", "json").stdout)["items"]
        counted = [
            p
            for p in pods
            if p["spec"].get("nodeName")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        return len(counted), any(p["metadata"]["namespace"] == probe for p in counted)

    def agrees(want_probe: bool) -> bool:
        seen = int(
            wharf.admin.ok("GET", "/api/v1/clusters/lab1")["status"]["capacity"]["requested"][
                "pods"
            ]
        )
        count, has_probe = scheduled_pods()
        again = int(
            wharf.admin.ok("GET", "/api/v1/clusters/lab1")["status"]["capacity"]["requested"][
                "pods"
            ]
        )
        return has_probe == want_probe and seen == again == count

    try:
        kubectl(lab1, "-n", probe, "apply", "-f", "-", stdin=json.dumps(pod))
        wait_for(lambda: agrees(True), what="requested pods to count the new pod")
        kubectl(lab1, "-n", probe, "delete", "pod", "probe", "--grace-period=0", "--force")
    finally:
        kubectl(lab1, "delete", "namespace", probe, "--wait=false")
    wait_for(lambda: agrees(False), what="requested pods to drop the deleted pod")


def test_a_node_pool_selects_nodes_and_taints_them(wharf: Wharf, kubectl):
    lab2 = wharf.lab.cluster("lab2")
    body = {
        "kind": "NodePool",
        "metadata": {"name": "zone2"},
        "spec": {
            "cluster": "lab2",
            "nodeSelector": {"topology.kubernetes.io/zone": "lab2-zone-2"},
            "taints": [{"key": "wharf.io/pool", "value": "zone2", "effect": "PreferNoSchedule"}],
        },
    }
    try:
        wharf.admin.ok("PUT", "/api/v1/nodepools/zone2", json=body)
        pool = wait_for(
            lambda: (
                (p := wharf.admin.ok("GET", "/api/v1/nodepools/zone2"))["status"].get("nodes") and p
            ),
            what="node pool status",
        )
        assert pool["status"]["nodeNames"] == ["lab2-node-1", "lab2-node-3"]

        def tainted() -> bool:
            nodes = json.loads(kubectl(lab2, "get", "nodes", "-o", "json").stdout)["items"]
            keys = {
                n["metadata"]["name"]: [t["key"] for t in n["spec"].get("taints", [])]
                for n in nodes
            }
            return keys == {
                "lab2-node-1": ["wharf.io/pool"],
                "lab2-node-2": [],
                "lab2-node-3": ["wharf.io/pool"],
            }

        wait_for(tainted, what="pool taints on exactly its nodes")
        bad = {**body, "spec": {**body["spec"], "cluster": "nowhere"}}
        refused = wharf.admin.put("/api/v1/nodepools/zone2", bad)
        assert refused.status_code == 422
        assert refused.json()["field"] == "spec.cluster"
    finally:
        wharf.admin.delete("/api/v1/nodepools/zone2", params={"confirm": "zone2"})
        # Deleting the pool takes its taints back (Wharf recorded them on the nodes).
        wait_for(
            lambda: all(
                "wharf.io/pool" not in {t["key"] for t in n["spec"].get("taints", [])}
                for n in json.loads(kubectl(lab2, "get", "nodes", "-o", "json").stdout)["items"]
            ),
            what="the pool's taints gone",
        )
        wait_for(lambda: wharf.admin.get("/api/v1/nodepools/zone2").status_code == 404)
