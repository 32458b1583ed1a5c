"""Node pool taints: a node gets its pools' taints, loses only those Wharf put there, and is
written only when something differs."""

from __future__ import annotations

from typing import Any

from wharf.clusters.model import TAINTS_ANNOTATION, NodePoolSpec, pool_taints, tainted_node

GPU = {"key": "wharf.io/pool", "value": "gpu", "effect": "NoSchedule"}
ZONE = {"key": "zone", "value": "a", "effect": "PreferNoSchedule"}
THEIRS = {"key": "maintenance", "value": "", "effect": "NoExecute", "timeAdded": "2026-01-01"}


def node(taints: list[dict[str, Any]], record: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n1", "resourceVersion": "7", "labels": labels}
    if record is not None:
        meta["annotations"] = {TAINTS_ANNOTATION: record}
    return {"metadata": meta, "spec": {"taints": taints}}


def pool(taints: list[dict[str, str]], **selector: str) -> NodePoolSpec:
    return NodePoolSpec.model_validate(
        {"cluster": "c1", "nodeSelector": selector, "taints": taints}
    )


def test_overlapping_pools_give_each_taint_once_and_only_to_selected_nodes():
    pools = [pool([GPU], kind="gpu"), pool([GPU, ZONE], zone="a"), pool([ZONE], zone="b")]
    assert pool_taints(pools, node([], kind="gpu", zone="a")) == [GPU, ZONE]
    assert pool_taints(pools, node([], kind="cpu", zone="c")) == []


def test_a_node_is_tainted_and_recorded_and_keeps_the_taints_of_others():
    body = tainted_node(node([THEIRS]), [GPU])
    assert body is not None
    assert body["spec"]["taints"] == [THEIRS, GPU]
    assert body["metadata"] == {
        "name": "n1",
        "resourceVersion": "7",
        "labels": {},
        "annotations": {TAINTS_ANNOTATION: "wharf.io/pool:NoSchedule"},
    }


def test_a_node_that_already_matches_is_not_written():
    assert tainted_node(node([GPU, THEIRS], "wharf.io/pool:NoSchedule"), [GPU]) is None
    assert tainted_node(node([THEIRS]), []) is None
    assert tainted_node(node([]), []) is None


def test_wharf_takes_back_only_what_it_recorded():
    body = tainted_node(
        node([THEIRS, GPU, ZONE], "wharf.io/pool:NoSchedule,zone:PreferNoSchedule"), [ZONE]
    )
    assert body is not None
    assert body["spec"]["taints"] == [THEIRS, ZONE]
    body = tainted_node(node([THEIRS, GPU], "wharf.io/pool:NoSchedule"), [])
    assert body is not None
    assert body["spec"]["taints"] == [THEIRS]
    assert "annotations" not in body["metadata"]  # nothing of Wharf's left to record


def test_a_changed_value_is_written():
    moved = {**GPU, "value": "gpu2"}
    body = tainted_node(node([GPU], "wharf.io/pool:NoSchedule"), [moved])
    assert body is not None
    assert body["spec"]["taints"] == [moved]
