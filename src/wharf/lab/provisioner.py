"""The lab's volume provisioner: a stand-in for a CSI driver, so that claims are really Bound.

kwok simulates nodes and pods, not storage, and kube-controller-manager binds a claim only to a
volume that exists. This process (one per lab cluster, started and stopped with it) does what an
external provisioner and resizer do for the lab's storage classes (`provisioner:
lab.wharf.io/hostpath`): it creates a PersistentVolume for each pending claim of those classes,
pre-bound to it (the controller manager then binds both), deletes released volumes whose
reclaim policy is Delete, and grows a volume and its claim's capacity when the claim asks for
more (the API server has already checked that the class allows it). Nothing is mounted: the
volumes exist as API objects only. Part of the lab, not of Wharf.

The lab starts it as a component of each cluster (`main(<cluster directory>)`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from wharf.core.quantity import parse_quantity

PROVISIONER = "lab.wharf.io/hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
# The lab's classes: a default one whose volumes may grow, and one whose volumes may not.
STORAGE_CLASSES: list[dict[str, Any]] = [
    {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": name,
            "annotations": {DEFAULT_CLASS: "true"} if default else {},
            "labels": {"lab.wharf.io/storage": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": expandable,
    }
    for name, default, expandable in (("standard", True, True), ("fixed", False, False))
]


def _items(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = http.get(path)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items", [])
    return items


def _volume_for(claim: dict[str, Any], storage_class: dict[str, Any]) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim["spec"]
    name = f"pvc-{meta['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy", "Delete"),
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": f"/var/lib/wharf-lab/{name}"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def _provision(http: httpx.Client, claims: list[dict[str, Any]], classes: dict[str, Any]) -> None:
    volumes = _items(http, "/api/v1/persistentvolumes")
    claimed = {(v["spec"].get("claimRef") or {}).get("uid") for v in volumes}
    for claim in claims:
        storage_class = classes.get(claim["spec"].get("storageClassName") or "")
        pending = claim.get("status", {}).get("phase") == "Pending"
        if storage_class and pending and claim["metadata"]["uid"] not in claimed:
            http.post("/api/v1/persistentvolumes", json=_volume_for(claim, storage_class))
    for volume in volumes:
        ours = (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
        released = volume.get("status", {}).get("phase") == "Released"
        if ours and released and volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete":
            http.delete(f"/api/v1/persistentvolumes/{volume['metadata']['name']}")


def _resize(http: httpx.Client, claims: list[dict[str, Any]], classes: dict[str, Any]) -> None:
    for claim in claims:
        if (claim["spec"].get("storageClassName") or "") not in classes:
            continue
        status = claim.get("status", {})
        wanted = claim["spec"]["resources"]["requests"]["storage"]
        has = (status.get("capacity") or {}).get("storage")
        volume = claim["spec"].get("volumeName")
        if status.get("phase") != "Bound" or not has or not volume:
            continue
        if parse_quantity(wanted) <= parse_quantity(has):
            continue
        merge = {"Content-Type": "application/merge-patch+json"}
        http.patch(
            f"/api/v1/persistentvolumes/{volume}",
            json={"spec": {"capacity": {"storage": wanted}}},
            headers=merge,
        )
        meta = claim["metadata"]
        http.patch(
            f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}/status",
            json={"status": {"capacity": {"storage": wanted}, "conditions": None}},
            headers=merge,
        )


def run_once(http: httpx.Client) -> None:
    classes = {
        sc["metadata"]["name"]: sc
        for sc in _items(http, "/apis/storage.k8s.io/v1/storageclasses")
        if sc.get("provisioner") == PROVISIONER
    }
    claims = _items(http, "/api/v1/persistentvolumeclaims")
    _provision(http, claims, classes)
    _resize(http, claims, classes)


def install_classes(http: httpx.Client) -> None:
    for storage_class in STORAGE_CLASSES:
        response = http.post("/apis/storage.k8s.io/v1/storageclasses", json=storage_class)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"StorageClass: {response.text[:300]}")


def main(directory: str, interval: float = 0.5) -> None:
    from wharf.lab.lab import LabCluster

    cluster = LabCluster(Path(directory))
    while True:
        try:
            with cluster.http(timeout=10.0) as http:
                while True:
                    run_once(http)
                    time.sleep(interval)
        except (httpx.HTTPError, OSError) as exc:
            print(f"provisioner: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(1.0)
