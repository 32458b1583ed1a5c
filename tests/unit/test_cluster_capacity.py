"""A cluster's capacity summed from many pods: exact, and each distinct quantity parsed once
(the bench/scale.py run: 3,000 pods a cluster took seconds of the event loop per reconcile,
long enough for the server's own /version probes to time out)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

import wharf.clusters.model as model
from wharf.clusters.controller import ClusterController
from wharf.clusters.model import capacity_of


def _pod(cpu: str, memory: str, phase: str = "Running", node: str = "n1") -> dict[str, Any]:
    return {
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        },
        "status": {"phase": phase},
    }


NODE = {"status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}}


def test_requests_add_up_exactly() -> None:
    pods = [_pod("100m", "128Mi")] * 7 + [_pod("0.25", "1Gi"), _pod("1", "1G")]
    pods += [_pod("5", "5Gi", phase="Succeeded"), _pod("5", "5Gi", node="")]
    capacity = capacity_of([NODE, NODE], pods)
    assert capacity["nodes"] == 2
    allocatable = capacity["allocatable"]
    assert (allocatable["cpu"], allocatable["memory"], allocatable["pods"]) == (
        "32",
        "128Gi",
        "220",
    )
    # 7 x 100m + 250m + 1 = 1950m; 7 x 128Mi + 1Gi + 1G = 1920Mi + 10^9 bytes
    assert capacity["requested"]["cpu"] == "1950m"
    assert capacity["requested"]["pods"] == "9"
    memory = model.parse_quantity(capacity["requested"]["memory"])
    assert memory == 1920 * 2**20 + 10**9


def test_many_pods_parse_each_quantity_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = model.parse_quantity

    def counting(text: str | int) -> Any:
        parsed.append(str(text))
        return real(text)

    monkeypatch.setattr(model, "parse_quantity", counting)
    pods = [_pod("1m", "1Mi") for _ in range(3000)] + [_pod("2", "2Gi")]
    capacity = capacity_of([NODE], pods)
    assert capacity["requested"]["cpu"] == "5"  # 3000 x 1m + 2
    assert capacity["requested"]["pods"] == "3001"
    assert len(parsed) < 20, f"{len(parsed)} quantities parsed for 3,001 pods"


def _kwok_pod(i: int) -> dict[str, Any]:
    """A pod as a Deployment's ReplicaSet and kwok leave it (the bench's, abridged)."""
    pod = _pod("1m", "1Mi")
    pod["metadata"] = {
        "name": f"load-000-cd4cd69b4-{i:05d}",
        "namespace": "scale-load",
        "labels": {"pod-template-hash": "cd4cd69b4", "app": "load"},
        "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}],
        "ownerReferences": [{"kind": "ReplicaSet", "name": "load-000-cd4cd69b4"}],
        "uid": f"4a1be05c-8008-48a0-ba01-{i:012d}",
    }
    pod["spec"]["containers"][0] |= {"name": "idle", "image": "registry.example/idle:1"}
    pod["spec"]["tolerations"] = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]
    pod["status"] |= {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def test_the_cluster_controller_keeps_of_a_pod_only_what_capacity_reads() -> None:
    informers: list[Any] = []

    class Watches:
        async def ensure(self, _name: str, _fp: str, make: Any) -> list[Any]:
            informers.extend(make())
            return informers

    class Connections:
        timeouts = type("T", (), {"watch": 60})()

        def client(self, *_: Any) -> None:
            return None

    controller = ClusterController.__new__(ClusterController)
    controller.watches = Watches()  # type: ignore[assignment]
    controller.connections = Connections()  # type: ignore[assignment]

    class Queue:  # what the pods' events ask for: the capacity refreshed soon
        def __init__(self) -> None:
            self.soon: list[Any] = []

        def add(self, key: Any) -> None:
            raise AssertionError(f"a pod queued {key} at once")

        def add_after(self, key: Any, _seconds: float) -> None:
            self.soon.append(key)

    queue = Queue()
    controller.controller = SimpleNamespace(queue=queue)  # type: ignore[assignment]
    asyncio.run(controller._watch("lab1", {}))
    pods = next(i for i in informers if i.name == "lab1/pods")
    full = [_kwok_pod(i) for i in range(3)]
    for pod in full:
        pods._take("ADDED", pod)
    kept = list(pods.items.values())
    assert queue.soon == ["lab1"] * 3
    assert capacity_of([NODE], kept) == capacity_of([NODE], full)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in kept] == [
        ("scale-load", f"load-000-cd4cd69b4-{i:05d}") for i in range(3)
    ]
    assert all("managedFields" not in p["metadata"] and "labels" not in p["metadata"] for p in kept)
    assert all("tolerations" not in p["spec"] and "podIP" not in p["status"] for p in kept)


class _Listed:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def to_dict(self) -> dict[str, Any]:
        return self.obj


class _Listing:
    """What lightkube's list gives: items, then the list's resourceVersion."""

    resourceVersion = "5"

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.objs = objs

    async def __aiter__(self) -> Any:
        for obj in self.objs:
            yield _Listed(obj)


def test_a_relist_keeps_only_what_capacity_reads_in_every_index() -> None:
    # The first cut trimmed `items` after a relist but not the per-namespace index, which
    # kept every whole pod of each relist (found by the review of that change).
    from lightkube.resources.core_v1 import Pod

    from wharf.clusters.controller import PodRequests

    client = SimpleNamespace(list=lambda *_a, **_k: _Listing([_kwok_pod(i) for i in range(2)]))
    pods = PodRequests(client, Pod, name="lab1/pods")  # type: ignore[arg-type]
    asyncio.run(pods._list())
    kept = list(pods.items.values()) + pods.in_namespace("scale-load")
    assert len(kept) == 4
    assert all("tolerations" not in p["spec"] and "labels" not in p["metadata"] for p in kept)
