"""The lab's storage: a default StorageClass and a provisioner stand-in (kwok binds no claims),
so claims are really Bound, grow where their class allows it, and their volumes go with them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.conftest import wait_for
from wharf.lab import Lab, LabCluster


@pytest.fixture(params=["lab1", "lab2"])
def cluster(lab: Lab, request: pytest.FixtureRequest) -> LabCluster:
    return lab.cluster(request.param)


def _claim(name: str, size: str, storage_class: str | None = None) -> str:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


def test_claims_are_bound_grow_where_allowed_and_release_their_volumes(cluster, kubectl):
    classes = json.loads(kubectl(cluster, "get", "storageclass", "-o", "json").stdout)["items"]
    by_name = {c["metadata"]["name"]: c for c in classes}
    assert by_name["standard"]["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    assert by_name["standard"]["allowVolumeExpansion"] is True
    assert by_name["fixed"]["allowVolumeExpansion"] is False

    name, fixed = f"c-{uuid.uuid4().hex[:6]}", f"f-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "apply", "-f", "-", stdin=_claim(name, "1Gi"))  # the default class
    kubectl(cluster, "apply", "-f", "-", stdin=_claim(fixed, "1Gi", "fixed"))

    def claim(which: str) -> dict[str, Any]:
        got = kubectl(cluster, "-n", "default", "get", "pvc", which, "-o", "json")
        return json.loads(got.stdout)  # type: ignore[no-any-return]

    def bound(which: str, size: str) -> dict[str, Any] | None:
        found = claim(which)
        status = found.get("status", {})
        capacity = status.get("capacity", {}).get("storage")
        return found if status.get("phase") == "Bound" and capacity == size else None

    volume = wait_for(lambda: bound(name, "1Gi"), what="the claim Bound")["spec"]["volumeName"]
    wait_for(lambda: bound(fixed, "1Gi"), what="the fixed claim Bound")

    grow = '{"spec": {"resources": {"requests": {"storage": "2Gi"}}}}'
    kubectl(cluster, "-n", "default", "patch", "pvc", name, "-p", grow)
    wait_for(lambda: bound(name, "2Gi"), what="the claim grown")
    pv = json.loads(kubectl(cluster, "get", "pv", volume, "-o", "json").stdout)
    assert pv["spec"]["capacity"]["storage"] == "2Gi"
    refused = kubectl(cluster, "-n", "default", "patch", "pvc", fixed, "-p", grow, check=False)
    assert refused.returncode != 0
    assert "resize" in refused.stderr

    kubectl(cluster, "-n", "default", "delete", "pvc", name, fixed)
    wait_for(
        lambda: kubectl(cluster, "get", "pv", volume, check=False).returncode != 0,
        what="the released volume deleted",
    )
