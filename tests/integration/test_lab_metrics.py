"""The lab's metrics pipeline: kwok simulates each pod's CPU and memory use (set per pod by an
annotation), metrics-server serves it as the `metrics.k8s.io` API, and `kubectl top` reads it —
in every lab cluster."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.conftest import wait_for
from wharf.lab import Lab, LabCluster
from wharf.lab.lab import USAGE_CPU_ANNOTATION, USAGE_MEMORY_ANNOTATION


@pytest.fixture(params=["lab1", "lab2"])
def cluster(lab: Lab, request: pytest.FixtureRequest) -> LabCluster:
    return lab.cluster(request.param)


def _pod(name: str, cpu: str, memory: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {USAGE_CPU_ANNOTATION: cpu, USAGE_MEMORY_ANNOTATION: memory},
        },
        "spec": {"containers": [{"name": "main", "image": "registry.example/busy:1.0"}]},
    }


def millicores(text: str) -> int:
    return int(text.removesuffix("m")) if text.endswith("m") else int(text) * 1000


def test_the_metrics_api_is_registered_and_available(cluster, kubectl):
    def available() -> bool:
        out = kubectl(cluster, "get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json")
        conditions = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    wait_for(available, timeout=60, what=f"{cluster.name}: metrics.k8s.io Available")


def test_kubectl_top_shows_the_use_a_pod_is_given(cluster, kubectl):
    namespace = f"top-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", namespace)
    kubectl(
        cluster,
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(_pod("busy", "250m", "300Mi")),
    )

    def top() -> str | None:
        result = kubectl(
            cluster, "-n", namespace, "top", "pod", "busy", "--no-headers", check=False
        )
        return result.stdout if result.returncode == 0 and "busy" in result.stdout else None

    # metrics-server reports a pod after two scrapes (CPU is a rate between them).
    line = wait_for(top, timeout=90, what=f"{cluster.name}: kubectl top pod busy")
    _, cpu, memory = line.split()
    # CPU is a rate of kwok's cumulative counter between two scrapes: exact up to their jitter.
    assert abs(millicores(cpu) - 250) <= 5, line
    assert memory == "300Mi", line

    # Raised on the pod, the use follows: what the HPA tests move replicas with.
    kubectl(
        cluster,
        "-n",
        namespace,
        "annotate",
        "pod",
        "busy",
        "--overwrite",
        f"{USAGE_CPU_ANNOTATION}=900m",
    )
    wait_for(
        lambda: (out := top()) is not None and abs(millicores(out.split()[1]) - 900) <= 10,
        timeout=90,
        what=f"{cluster.name}: busy's CPU to read 900m",
    )
    nodes = kubectl(cluster, "top", "nodes", "--no-headers").stdout
    assert f"{cluster.name}-node-" in nodes
