"""A stored row from before today's rules: services and controllers read specs typed, so a row
the model now refuses is reported — a 409 naming the object and field, a Ready=False
condition on it — instead of failing deep inside (a retry loop in a controller, a 500), and a
valid apply over it repairs it."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Wharf, wait_for
from wharf.store.resources import ResourceStore


def _store_as_of_old(wharf: Wharf, tenant: str, name: str, spec: dict[str, Any]) -> None:
    """Write a spec as an older server would have stored it (no validation on the way)."""
    with wharf.platform.db.session() as session:
        store = ResourceStore(session)
        old = store.get("Project", tenant, name, lock=True)  # a status write may land meanwhile
        assert old is not None
        store.update(old, labels=old.labels, annotations=old.annotations, spec=spec)


def test_an_outdated_project_row_is_reported_and_repaired_by_a_valid_apply(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi", "pods": "10"})
    placed = wharf.wait_placed(tenant, "shop")
    path = f"/api/v1/tenants/{tenant}/projects/shop"
    valid = placed["spec"]
    _store_as_of_old(wharf, tenant, "shop", {**valid, "retired": True})

    # Its controller says what is wrong on the object, and leaves its namespaces alone.
    def reported() -> dict[str, Any] | None:
        obj = wharf.admin.ok("GET", path)  # still readable, as stored
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        return obj if ready["reason"] == "OutdatedSpec" else None

    obj = wait_for(reported, what="the project reported as outdated")
    assert obj["spec"]["retired"] is True
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    assert f"Project 'shop' in tenant '{tenant}'" in ready["message"]
    assert "spec.retired" in ready["message"]
    assert obj["status"]["phase"] == "Degraded"
    for cluster in wharf.lab.clusters():
        kubectl(cluster, "get", "namespace", f"{tenant}--shop-dev")  # not pruned

    # A use case that must read it answers 409 naming it, and changes nothing.
    sibling = {
        "kind": "Project",
        "metadata": {"name": "blog"},
        "spec": {"quota": {"cpu": "1"}, "environments": [{"name": "dev", "clusters": ["lab1"]}]},
    }
    answer = wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/blog", sibling)
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["code"] == "conflict"
    assert body["field"] == "spec.retired"
    assert "Project 'shop'" in body["message"]
    assert wharf.admin.get(f"/api/v1/tenants/{tenant}/projects/blog").status_code == 404

    # Applying a valid spec over it repairs it: the old row is not read for the write.
    repaired = {"kind": "Project", "metadata": {"name": "shop"}, "spec": valid}
    wharf.admin.ok("PUT", path, json=repaired)
    obj = wharf.wait_placed(tenant, "shop")
    assert "retired" not in obj["spec"]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/blog", json=sibling)


def test_an_outdated_node_pool_stops_only_its_own_tenants_placement(wharf: Wharf):
    owner = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    other = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    pool = f"pool-{owner}"
    body = {
        "kind": "NodePool",
        "metadata": {"name": pool},
        "spec": {"cluster": "lab1", "nodeSelector": {"wharf.test/pool": pool}, "tenants": [owner]},
    }
    wharf.admin.ok("PUT", f"/api/v1/nodepools/{pool}", json=body)
    with wharf.platform.db.session() as session:
        store = ResourceStore(session)
        old = store.get("NodePool", "", pool)
        assert old is not None
        spec = {**old.spec, "retired": True}
        store.update(old, labels=old.labels, annotations=old.annotations, spec=spec)
    try:
        # Another tenant's projects are placed as ever, and hear nothing of the pool.
        wharf.project(other, "shop", {"cpu": "1", "memory": "1Gi", "pods": "5"})
        placed = wharf.wait_placed(other, "shop")
        assert pool not in str(placed["status"])
        # The pool's own tenant is told (its pods' scheduling depends on the pool).
        wharf.project(owner, "shop", {"cpu": "1", "memory": "1Gi", "pods": "5"})

        def reported() -> dict[str, Any] | None:
            obj = wharf.admin.ok("GET", f"/api/v1/tenants/{owner}/projects/shop")
            conditions = obj["status"].get("conditions", [])
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            return obj if ready and ready["reason"] == "OutdatedSpec" else None

        obj = wait_for(reported, what="the pool's tenant told of the outdated pool")
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert f"NodePool '{pool}'" in ready["message"]
        # The pool says so itself; its cluster stays Ready for everyone else.
        told = wait_for(
            lambda: any(
                c["reason"] == "OutdatedSpec"
                for c in wharf.admin.ok("GET", f"/api/v1/nodepools/{pool}")["status"].get(
                    "conditions", []
                )
            ),
            what="the pool reported as outdated",
        )
        assert told
        assert wharf.admin.ok("GET", "/api/v1/clusters/lab1")["status"]["phase"] == "Ready"
    finally:
        wharf.admin.ok("PUT", f"/api/v1/nodepools/{pool}", json=body)
        wharf.admin.ok("DELETE", f"/api/v1/nodepools/{pool}?confirm={pool}")
