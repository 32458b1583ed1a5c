"""Volumes against the lab and both databases: a volume of a storage class the tenant was not
granted is refused by Wharf before anything is applied; one over the namespace's share of the
class capacity too; and a claim made in the cluster over that capacity is rejected by the
cluster's own ResourceQuota, whose per-class entry is in every namespace of the tenant."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import Wharf, manifest, wait_for

FAST = "fast.storageclass.storage.k8s.io/requests.storage"
TEMPLATE = "volume-set"


def _template(wharf: Wharf) -> None:
    """A StatefulSet with one volume per replica, of a class and size given as values."""
    container = {
        "name": "main",
        "image": "registry.example/db:1.0",
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "10m", "memory": "16Mi"},
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "${name}"},
        "spec": {
            "replicas": 1,
            "serviceName": "${name}",
            "selector": {"matchLabels": {"app": "${name}"}},
            "template": {
                "metadata": {"labels": {"app": "${name}"}},
                "spec": {"containers": [container]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "${storage_class}",
                        "resources": {"requests": {"storage": "${size}"}},
                    },
                }
            ],
        },
    }
    parameters = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "storage_class": {"type": "string"},
            "size": {"type": "string"},
        },
        "required": ["name", "storage_class", "size"],
    }
    body = {
        "kind": "AppTemplate",
        "metadata": {"name": TEMPLATE},
        "spec": {
            "description": "A StatefulSet with a volume",
            "versions": [
                {
                    "version": "1.0.0",
                    "published": True,
                    "parameters": parameters,
                    "objects": [statefulset],
                }
            ],
        },
    }
    answer = wharf.admin.put(f"/api/v1/apptemplates/{TEMPLATE}", body)
    assert answer.status_code in (200, 201), answer.text


def _app(tenant: str, name: str, storage_class: str, size: str) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "data",
            "environment": "dev",
            "template": {"name": TEMPLATE, "version": "1.0.0"},
            "values": {"name": name, "storage_class": storage_class, "size": size},
        },
    }


def _pvc(name: str, size: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "fast",
                "resources": {"requests": {"storage": size}},
            },
        }
    )


def test_volume_classes_and_capacity_hold_before_and_inside_the_cluster(
    wharf: Wharf, kubectl, tmp_path: Path
):
    _template(wharf)
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi", FAST: "10Gi"}, storageClasses=["fast"])
    members = [{"user": dev.user, "role": "developer"}]
    # 4Gi of fast for the project: 2Gi in each cluster's namespace.
    wharf.project(tenant, "data", {"cpu": "1", "memory": "1Gi", FAST: "4Gi"}, members=members)
    wharf.project(tenant, "plain", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "data")
    wharf.wait_placed(tenant, "plain")
    apps = f"/api/v1/tenants/{tenant}/applications"
    namespace = f"{tenant}--data-dev"
    lab1 = wharf.lab.clusters()[0]

    # A class the tenant was not granted: refused by Wharf, nothing stored or applied.
    refused = dev.put(f"{apps}/db", _app(tenant, "db", "slow", "1Gi"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "spec.values"
    assert "'slow'" in refused.json()["message"]
    # Over the namespace's share of the class (2Gi): refused by Wharf too, saying by how much.
    over = dev.put(f"{apps}/db", _app(tenant, "db", "fast", "3Gi"))
    assert over.status_code == 422, over.text
    assert over.json()["details"]["resource"] == FAST
    assert over.json()["details"]["exceededBy"] == "1Gi"
    assert dev.get(f"{apps}/db").status_code == 404
    for cluster in wharf.lab.clusters():
        sets = kubectl(cluster, "-n", namespace, "get", "statefulsets", "-o", "name").stdout
        assert sets.strip() == ""

    # Within the share: delivered, and the cluster's StatefulSet controller makes the claim.
    dev.ok("PUT", f"{apps}/db", json=_app(tenant, "db", "fast", "1Gi"))

    def claimed() -> bool:
        got = kubectl(lab1, "-n", namespace, "get", "pvc", "data-db-0", check=False)
        return got.returncode == 0

    wait_for(claimed, timeout=90, what="the StatefulSet's volume claim")

    # Inside the cluster, with the tenant's own kubeconfig: the ResourceQuota rejects a claim
    # over the class capacity left (1Gi of 2Gi is used).
    config = dev.ok(
        "POST", f"/api/v1/tenants/{tenant}/projects/data/kubeconfig", params={"env": "dev"}
    )
    path = tmp_path / "dev.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    context = config["contexts"][0]["name"]

    def create(name: str, size: str) -> Any:
        return kubectl(
            lab1,
            "--context",
            context,
            "-n",
            namespace,
            "create",
            "-f",
            "-",
            kubeconfig=path,
            stdin=_pvc(name, size),
            check=False,
        )

    rejected = create("big", "2Gi")
    assert rejected.returncode != 0
    assert "exceeded quota" in rejected.stderr, rejected.stderr
    assert FAST in rejected.stderr
    fits = create("small", "1Gi")
    assert fits.returncode == 0, fits.stderr

    # Every namespace of the tenant carries the class entry: zero where none was given.
    for project, expected in (("data", "2Gi"), ("plain", "0")):
        quota = json.loads(
            kubectl(
                lab1, "-n", f"{tenant}--{project}-dev", "get", "quota", "wharf-quota", "-o", "json"
            ).stdout
        )
        assert quota["spec"]["hard"][FAST] == expected


def test_the_storage_catalog_is_read_from_the_cluster_with_the_platforms_words(
    wharf: Wharf, kubectl
):
    name = f"sc-{uuid.uuid4().hex[:6]}"
    lab1 = wharf.lab.clusters()[0]
    storage_class = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "example.com/ceph-rbd",
        "allowVolumeExpansion": True,
        "reclaimPolicy": "Retain",
    }
    kubectl(lab1, "create", "-f", "-", stdin=json.dumps(storage_class))
    try:
        cluster = manifest(wharf.admin.ok("GET", "/api/v1/clusters/lab1"))
        cluster["spec"]["storageClasses"] = {name: "ceph-rbd, replicated, for databases"}
        wharf.admin.ok("PUT", "/api/v1/clusters/lab1", json=cluster)

        def listed() -> dict[str, Any] | None:
            status = wharf.admin.ok("GET", "/api/v1/clusters/lab1")["status"]
            found = [c for c in status.get("storageClasses", []) if c["name"] == name]
            return found[0] if found and found[0]["description"] else None

        entry = wait_for(listed, what="the storage class in the cluster's catalog")
        assert entry == {
            "name": name,
            "provisioner": "example.com/ceph-rbd",
            "allowVolumeExpansion": True,
            "reclaimPolicy": "Retain",
            "default": False,
            "description": "ceph-rbd, replicated, for databases",
        }
    finally:
        kubectl(lab1, "delete", "storageclass", name)
