"""A cluster's capacity summed from many pods: exact, and each distinct quantity parsed once
(the bench/scale.py run: 3,000 pods a cluster took seconds of the event loop per reconcile,
long enough for the server's own /version probes to time out)."""

from __future__ import annotations

from typing import Any

import pytest

import wharf.clusters.model as model
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
