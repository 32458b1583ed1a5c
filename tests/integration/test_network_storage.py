"""Volumes in the lab, Bound for real (the lab's provisioner stand-in): an application's claims
with capacity and phase read from each cluster; growing one where its class allows it, refused
naming the field where it does not, and shrinking refused; deleting an application keeps its
volumes unless the caller asks, and the answer says which. Another tenant's claims are never
touched, whatever labels they carry."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.integration.conftest import Wharf, wait_for

STANDARD = "standard.storageclass.storage.k8s.io/requests.storage"
FIXED = "fixed.storageclass.storage.k8s.io/requests.storage"
TEMPLATE = "claim-and-set"


def _template(wharf: Wharf) -> None:
    """A PersistentVolumeClaim of a class and size given as values, and a StatefulSet with a
    claim template of the lab's fixed class."""
    container = {
        "name": "main",
        "image": "registry.example/db:1.0",
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "10m", "memory": "16Mi"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "${name}-data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "${storage_class}",
            "resources": {"requests": {"storage": "${size}"}},
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
                    "metadata": {"name": "state"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "fixed",
                        "resources": {"requests": {"storage": "100Mi"}},
                    },
                }
            ],
        },
    }
    names = ("name", "storage_class", "size")
    body = {
        "kind": "AppTemplate",
        "metadata": {"name": TEMPLATE},
        "spec": {
            "versions": [
                {
                    "version": "1.0.0",
                    "published": True,
                    "parameters": {
                        "type": "object",
                        "properties": {n: {"type": "string"} for n in names},
                        "required": list(names),
                    },
                    "objects": [claim, statefulset],
                }
            ]
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


def test_volumes_are_bound_grow_where_allowed_and_outlive_a_delete_unless_asked(
    wharf: Wharf, kubectl
):
    _template(wharf)
    dev, viewer = wharf.user(), wharf.user()
    quota = {"cpu": "2", "memory": "2Gi", STANDARD: "20Gi", FIXED: "8Gi"}
    tenant = wharf.tenant(quota, storageClasses=["standard", "fixed"])
    members = [{"user": dev.user, "role": "developer"}, {"user": viewer.user, "role": "viewer"}]
    share = {"cpu": "1", "memory": "1Gi", STANDARD: "16Gi", FIXED: "4Gi"}
    wharf.project(tenant, "data", share, members=members)
    wharf.wait_placed(tenant, "data")
    apps = f"/api/v1/tenants/{tenant}/applications"
    namespace = f"{tenant}--data-dev"
    dev.ok("PUT", f"{apps}/db", json=_app(tenant, "db", "standard", "1Gi"))
    dev.ok("PUT", f"{apps}/logs", json=_app(tenant, "logs", "fixed", "1Gi"))

    def volumes(app: str, size: str) -> dict[str, list[dict[str, Any]]] | None:
        status = dev.ok("GET", f"{apps}/{app}")["status"]
        found = {c: s.get("volumes", []) for c, s in (status.get("clusters") or {}).items()}
        data = {c: [v for v in vs if v["name"] == f"{app}-data"] for c, vs in found.items()}
        done = len(found) == 2 and all(
            len(vs) == 2 and all(v["phase"] == "Bound" for v in vs) for vs in found.values()
        )
        grown = all(d and d[0]["capacity"] == size for d in data.values())
        return found if done and grown else None

    # Each cluster's claims, with capacity and phase as the cluster holds them: Bound.
    listed = wait_for(lambda: volumes("db", "1Gi"), timeout=120, what="db's volumes Bound")
    for cluster, claims in listed.items():
        assert claims == [
            {
                "name": "db-data",
                "storageClass": "standard",
                "requested": "1Gi",
                "capacity": "1Gi",
                "phase": "Bound",
            },
            {
                "name": "state-db-0",
                "storageClass": "fixed",
                "requested": "100Mi",
                "capacity": "100Mi",
                "phase": "Bound",
            },
        ], cluster

    # Growing where the class allows it: the claims grow in both clusters.
    dev.ok("PUT", f"{apps}/db", json=_app(tenant, "db", "standard", "2Gi"))
    wait_for(lambda: volumes("db", "2Gi"), timeout=120, what="db's volume grown")
    # Shrinking, and growing a class without expansion: 422 naming the field, nothing changed.
    for app, storage_class, size, words in (
        ("db", "standard", "1Gi", "never shrink"),
        ("logs", "fixed", "2Gi", "'fixed' in cluster lab1 does not allow volume expansion"),
    ):
        refused = dev.put(f"{apps}/{app}", _app(tenant, app, storage_class, size))
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "spec.values"
        assert words in refused.json()["message"]
    assert dev.ok("GET", f"{apps}/db")["spec"]["values"]["size"] == "2Gi"

    # A claim outside the tenant's namespaces, labelled as if it were db's: never touched.
    decoy = f"decoy-{uuid.uuid4().hex[:6]}"
    lab1 = wharf.lab.cluster("lab1")
    labels = {"app.kubernetes.io/managed-by": "wharf", "wharf.io/tenant": tenant}
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": decoy,
            "namespace": "default",
            "labels": {**labels, "wharf.io/app": "db"},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    }
    kubectl(lab1, "create", "-f", "-", stdin=json.dumps(claim))

    # Who may delete, and how: a viewer may not; deleteVolumes means something only for kinds
    # with volumes.
    assert viewer.delete(f"{apps}/db", params={"confirm": "db"}).status_code == 403
    nonsense = wharf.admin.delete(
        f"/api/v1/tenants/{tenant}/projects/data",
        params={"confirm": "data", "deleteVolumes": "true"},
    )
    assert nonsense.status_code == 422, nonsense.text
    assert nonsense.json()["field"] == "deleteVolumes"

    # Deleting keeps the volumes unless asked, and the answer says which.
    kept = dev.ok("DELETE", f"{apps}/logs", params={"confirm": "logs"})
    assert kept["status"]["deletion"]["volumes"] == "kept"
    assert "deleteVolumes=true" in kept["status"]["deletion"]["message"]
    gone = dev.ok("DELETE", f"{apps}/db", params={"confirm": "db", "deleteVolumes": "true"})
    assert gone["status"]["deletion"]["volumes"] == "deleted"
    wait_for(
        lambda: (
            dev.get(f"{apps}/db").status_code == 404 and dev.get(f"{apps}/logs").status_code == 404
        ),
        what="both deletes finished",
    )

    def claims(cluster: Any) -> set[str]:
        got = kubectl(cluster, "-n", namespace, "get", "pvc", "-o", "json")
        items = json.loads(got.stdout)["items"]
        return {c["metadata"]["name"] for c in items if not c["metadata"].get("deletionTimestamp")}

    for cluster in wharf.lab.clusters():
        wait_for(
            lambda c=cluster: claims(c) == {"logs-data", "state-logs-0"},
            what=f"db's claims gone from {cluster.name}, logs' kept",
        )
    assert kubectl(lab1, "-n", "default", "get", "pvc", decoy, check=False).returncode == 0
    kubectl(lab1, "-n", "default", "delete", "pvc", decoy)
