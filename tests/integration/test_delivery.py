"""Delivering applications from the catalog to both lab clusters: rollout, history, rollback,
configuration changes, and the checks that refuse before anything is applied."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.conftest import Wharf, cluster_writes, manifest, wait_for

IMAGE = "registry.example/shop/web:1.4.2"


def shop_project(wharf: Wharf) -> tuple[str, Any]:
    """A tenant and its project `shop` on both clusters (not waited for), and a developer."""
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(
        tenant,
        "shop",
        {"cpu": "4", "memory": "8Gi", "pods": "20"},
        members=[{"user": dev.user, "role": "developer"}],
    )
    return tenant, dev


@pytest.fixture
def place(wharf: Wharf):
    """A tenant and a project placed on both clusters, and a developer of that project."""
    tenant, dev = shop_project(wharf)
    wharf.wait_placed(tenant, "shop")
    return tenant, dev


def application(tenant: str, name: str, values: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wharf.io/v1",
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": name, "image": IMAGE, **values},
            **spec,
        },
    }


def wait_available(wharf: Wharf, api, tenant: str, name: str) -> dict[str, Any]:
    path = f"/api/v1/tenants/{tenant}/applications/{name}"

    def available() -> dict[str, Any] | None:
        obj = api.ok("GET", path)
        status = obj["status"]
        fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if fresh and status.get("state") == "Available" else None

    return wait_for(available, timeout=90, what=f"application {name} Available")  # type: ignore[no-any-return]


def deployment(kubectl, cluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        kubectl(cluster, "-n", namespace, "get", "deployment", name, "-o", "json").stdout
    )
    return result


def test_an_application_reaches_available_rolls_out_changes_and_rolls_back(
    wharf: Wharf, place, kubectl
):
    tenant, dev = place
    path = f"/api/v1/tenants/{tenant}/applications/web"
    created = dev.request("PUT", path, json=application(tenant, "web", {"replicas": 2}))
    assert created.status_code == 201, created.text
    app = wait_available(wharf, dev, tenant, "web")
    ns = f"{tenant}--shop-dev"
    for cluster in wharf.lab.clusters():
        status = app["status"]["clusters"][cluster.name]
        assert status["state"] == "Available"
        assert status["workloads"][0]["ready"] == 2
        assert {p["phase"] for p in status["pods"]} == {"Running"}
        assert all(p["node"].startswith(f"{cluster.name}-node-") for p in status["pods"])
        labels = deployment(kubectl, cluster, ns, "web")["metadata"]["labels"]
        assert labels["wharf.io/app"] == "web"
        assert labels["app.kubernetes.io/managed-by"] == "wharf"

    # A parameter change rolls out; the history has two revisions.
    dev.ok("PUT", path, json=application(tenant, "web", {"replicas": 3}))
    wait_available(wharf, dev, tenant, "web")
    for cluster in wharf.lab.clusters():
        assert deployment(kubectl, cluster, ns, "web")["status"]["readyReplicas"] == 3
    history = dev.ok("GET", f"{path}/revisions")["items"]
    assert [(r["revision"], r["actor"]) for r in history] == [(1, dev.user), (2, dev.user)]
    changes = dev.ok("GET", f"{path}/revisions/diff", params={"from": 1, "to": 2})["changes"]
    assert changes == [{"path": "values.replicas", "old": 2, "new": 3}]

    # Rolling back restores revision 1 in both clusters, as revision 3.
    dev.ok("POST", f"{path}/rollback", params={"revision": 1})
    wait_available(wharf, dev, tenant, "web")
    for cluster in wharf.lab.clusters():
        assert deployment(kubectl, cluster, ns, "web")["spec"]["replicas"] == 2
    history = dev.ok("GET", f"{path}/revisions")["items"]
    assert history[-1]["revision"] == 3
    assert history[-1]["reason"] == "rollback to revision 1"
    assert history[-1]["spec"] == history[0]["spec"]

    # A configuration change rolls the pods, through the hash on their template.
    lab1 = wharf.lab.cluster("lab1")
    before = deployment(kubectl, lab1, ns, "web")["spec"]["template"]["metadata"]["annotations"]
    dev.ok(
        "PUT",
        path,
        json=application(
            tenant, "web", {"replicas": 2}, config={"configMaps": {"settings": {"MODE": "blue"}}}
        ),
    )
    wait_available(wharf, dev, tenant, "web")
    after = deployment(kubectl, lab1, ns, "web")
    assert (
        after["spec"]["template"]["metadata"]["annotations"]["wharf.io/config-hash"]
        != (before["wharf.io/config-hash"])
    )
    assert after["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "web-settings"}}
    ]
    sets = json.loads(
        kubectl(
            lab1, "-n", ns, "get", "replicasets", "-l", "app.kubernetes.io/name=web", "-o", "json"
        ).stdout
    )["items"]
    assert len(sets) >= 2, "the configuration change made a new ReplicaSet"

    # Deleting the application removes exactly its objects, in every cluster.
    kubectl(lab1, "-n", ns, "create", "configmap", "not-wharfs")
    assert dev.request("DELETE", path, params={"confirm": "web"}).status_code == 200
    for cluster in wharf.lab.clusters():
        wait_for(
            lambda c=cluster: (
                kubectl(c, "-n", ns, "get", "deployment", "web", check=False).returncode != 0
            ),
            what="deployment removed",
        )
    assert kubectl(lab1, "-n", ns, "get", "configmap", "not-wharfs", check=False).returncode == 0


def test_an_application_over_quota_or_on_latest_is_refused_before_anything_is_applied(
    wharf: Wharf, place, kubectl
):
    tenant, dev = place
    # 2 CPUs per cluster for the project's dev namespace; 30 replicas of 100m ask 3.
    over = dev.request(
        "PUT",
        f"/api/v1/tenants/{tenant}/applications/big",
        json=application(tenant, "big", {"replicas": 30}),
    )
    assert over.status_code == 422, over.text
    error = over.json()
    assert error["code"] == "quota_exceeded"
    assert "would exceed the namespace quota by" in error["message"]
    latest = application(tenant, "edge", {"replicas": 1})
    latest["spec"]["values"]["image"] = "registry.example/shop/web:latest"
    refused = dev.request("PUT", f"/api/v1/tenants/{tenant}/applications/edge", json=latest)
    assert refused.status_code == 422
    assert "delivery check latestTag refuses it" in refused.json()["message"]
    injected = application(tenant, "inj", {"replicas": 1, "health_path": "${image}"})
    made = dev.request("PUT", f"/api/v1/tenants/{tenant}/applications/inj", json=injected)
    assert made.status_code == 201
    for name in ("big", "edge"):
        assert dev.get(f"/api/v1/tenants/{tenant}/applications/{name}").status_code == 404
        for cluster in wharf.lab.clusters():
            got = kubectl(
                cluster, "-n", f"{tenant}--shop-dev", "get", "deployment", name, check=False
            )
            assert got.returncode != 0
    app = wait_available(wharf, dev, tenant, "inj")
    lab2 = wharf.lab.cluster("lab2")
    probe = deployment(kubectl, lab2, f"{tenant}--shop-dev", "inj")["spec"]["template"]["spec"][
        "containers"
    ][0]["readinessProbe"]["httpGet"]["path"]
    assert probe == "${image}"
    assert app["status"]["state"] == "Available"
    # A viewer of the tenant reads applications but cannot deliver.
    viewer = wharf.user()
    body = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}"))
    body["spec"]["viewers"] = [viewer.user]
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}", json=body)
    assert viewer.get(f"/api/v1/tenants/{tenant}/applications/inj").status_code == 200
    assert (
        viewer.request(
            "PUT", f"/api/v1/tenants/{tenant}/applications/inj", json=injected
        ).status_code
        == 403
    )


def test_objects_the_cluster_schema_refuses_are_applied_nowhere(wharf: Wharf, place, kubectl):
    tenant, dev = place
    template = {
        "kind": "AppTemplate",
        "metadata": {"name": "typo"},
        "spec": {
            "versions": [
                {
                    "version": "1.0.0",
                    "published": True,
                    "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "objects": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "${name}-ok"},
                            "data": {"a": "b"},
                        },
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "metadata": {"name": "${name}"},
                            "spec": {
                                "replicaz": 1,
                                "selector": {"matchLabels": {"app": "x"}},
                                "template": {
                                    "metadata": {"labels": {"app": "x"}},
                                    "spec": {
                                        "containers": [
                                            {
                                                "name": "c",
                                                "image": "registry.example/x:1",
                                                "resources": {
                                                    "requests": {"cpu": "10m"},
                                                    "limits": {"cpu": "10m"},
                                                },
                                                "readinessProbe": {"tcpSocket": {"port": 1}},
                                                "livenessProbe": {"tcpSocket": {"port": 1}},
                                            }
                                        ]
                                    },
                                },
                            },
                        },
                    ],
                }
            ]
        },
    }
    wharf.admin.ok("PUT", "/api/v1/apptemplates/typo", json=template)
    body = {
        "kind": "Application",
        "metadata": {"name": "typo", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "typo", "version": "1.0.0"},
            "values": {"name": "typo"},
        },
    }
    dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/typo", json=body)

    def failed() -> dict[str, Any] | None:
        obj = dev.ok("GET", f"/api/v1/tenants/{tenant}/applications/typo")
        return obj if obj["status"].get("state") == "Failed" else None

    app = wait_for(failed, what="application Failed")
    for cluster in wharf.lab.clusters():
        message = app["status"]["clusters"][cluster.name]["message"]
        assert "rejected by the cluster" in message
        assert "replicaz" in message
        ns = f"{tenant}--shop-dev"
        # Not even the valid ConfigMap went in: the revision is applied nowhere in the cluster.
        assert (
            kubectl(cluster, "-n", ns, "get", "configmap", "typo-ok", check=False).returncode != 0
        )


def test_an_application_delivered_before_its_namespace_waits_for_it_instead_of_failing(
    wharf: Wharf, monkeypatch
):
    """Applied with its project in one go, an application can reach a cluster before the
    project's placement made the namespace: that is a wait (Pending, tried again), not a
    failure a watcher stops at. Placement is held back here to make the race certain."""
    placement = wharf.platform.placement.controller
    monkeypatch.setattr(placement, "lease_for", lambda _key: None)  # as if another's work
    tenant, dev = shop_project(wharf)
    path = f"/api/v1/tenants/{tenant}/applications/early"
    dev.ok("PUT", path, json=application(tenant, "early", {"replicas": 1}))

    def waiting() -> dict[str, Any] | None:
        status = dev.ok("GET", path)["status"]
        clusters = status.get("clusters", {})
        return status if len(clusters) == 2 else None

    status = wait_for(waiting, what="the delivery tried in both clusters")
    assert status["state"] == "Progressing", status
    for cluster in ("lab1", "lab2"):
        part = status["clusters"][cluster]
        assert part["state"] == "Pending", part
        assert f"waiting for its namespace {tenant}--shop-dev" in part["message"]

    monkeypatch.undo()  # placement goes on: the application follows without being touched
    placement.queue.add((tenant, "shop"))
    wait_available(wharf, dev, tenant, "early")


def test_only_an_application_change_its_namespaces_list_places_its_project_again(
    wharf: Wharf, place, monkeypatch
):
    """The namespaces list their applications' node ports and hosts: a new application with
    neither leaves them as they are (no placement pass per application delivered); an edit or
    a delete may not, and places the project again."""
    tenant, dev = place
    # Deletes stay unfinished (their controller's work is another replica's, as it were).
    monkeypatch.setattr(wharf.platform.delivery.controller, "lease_for", lambda _key: None)
    path = f"/api/v1/tenants/{tenant}/applications/plain"
    dev.ok("PUT", path, json=application(tenant, "plain", {"replicas": 1}))
    affected = wharf.platform._placement_of_application
    assert affected(tenant, "plain") == ""
    dev.ok("PUT", path, json=application(tenant, "plain", {"replicas": 2}))
    assert affected(tenant, "plain") == "shop"
    dev.ok("DELETE", path, params={"confirm": "plain"})
    assert affected(tenant, "plain") == "shop"
    assert affected(tenant, "nothing") == ""


def test_secrets_are_sealed_at_rest_and_reach_the_clusters(wharf: Wharf, place, kubectl):
    tenant, dev = place
    path = f"/api/v1/tenants/{tenant}/applications/api"
    body = application(
        tenant, "api", {"replicas": 1}, config={"secrets": {"db": {"PASSWORD": "s3cret-value"}}}
    )
    dev.ok("PUT", path, json=body)
    wait_available(wharf, dev, tenant, "api")
    shown = dev.ok("GET", path)["spec"]["config"]["secrets"]
    assert list(shown) == ["db"]
    assert list(shown["db"]) == ["PASSWORD"]
    assert shown["db"]["PASSWORD"].startswith("***")
    assert "s3cret-value" not in json.dumps(dev.ok("GET", path))
    with wharf.platform.db.engine.connect() as conn:
        rows = [json.dumps(r[0]) for r in conn.execute(text("SELECT spec FROM resources"))]
        rows += [json.dumps(r[0]) for r in conn.execute(text("SELECT spec FROM revisions"))]
    assert not any("s3cret-value" in row for row in rows)
    for cluster in wharf.lab.clusters():
        secret = json.loads(
            kubectl(
                cluster, "-n", f"{tenant}--shop-dev", "get", "secret", "api-db", "-o", "json"
            ).stdout
        )
        assert base64.b64decode(secret["data"]["PASSWORD"]).decode() == "s3cret-value"
    # The same manifest again changes nothing: no new revision, no new generation.
    generation = dev.ok("GET", path)["metadata"]["generation"]
    dev.ok("PUT", path, json=body)
    assert dev.ok("GET", path)["metadata"]["generation"] == generation
    assert len(dev.ok("GET", f"{path}/revisions")["items"]) == 1


def test_application_drift_is_reverted_and_a_no_op_reconcile_writes_nothing(
    wharf: Wharf, place, kubectl
):
    tenant, dev = place
    # Configuration and a secret too: a Secret must compare with the live one, not be re-sent.
    config = {"configMaps": {"settings": {"MODE": "calm"}}, "secrets": {"db": {"PASSWORD": "pw"}}}
    dev.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/applications/calm",
        json=application(tenant, "calm", {"replicas": 1}, config=config),
    )
    wait_available(wharf, dev, tenant, "calm")
    ns = f"{tenant}--shop-dev"
    lab1 = wharf.lab.cluster("lab1")
    kubectl(lab1, "-n", ns, "scale", "deployment", "calm", "--replicas=4")
    wait_for(
        lambda: deployment(kubectl, lab1, ns, "calm")["spec"]["replicas"] == 1,
        timeout=15,
        what="replicas drift reverted",
    )
    wait_available(wharf, dev, tenant, "calm")

    delivery = wharf.platform.delivery.controller
    portal = wharf.client.portal
    assert portal is not None

    async def settle() -> None:
        async with asyncio.timeout(30):
            await delivery.idle()

    portal.call(settle)
    before = {c.name: len(cluster_writes(c, ns)) for c in wharf.lab.clusters()}
    for _ in range(3):
        delivery.queue.add((tenant, "calm"))
        portal.call(settle)
    after = {c.name: len(cluster_writes(c, ns)) for c in wharf.lab.clusters()}
    assert after == before, "a no-op delivery wrote to a cluster"


def test_a_project_can_make_a_check_warn_instead_of_refuse(wharf: Wharf, place):
    tenant, dev = place
    project = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/shop"))
    project["spec"]["delivery"] = {
        "checks": {"latestTag": "warn"},
        "allowedRegistries": ["registry.example"],
    }
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/shop", json=project)
    body = application(tenant, "edge", {"replicas": 1})
    body["spec"]["values"]["image"] = "registry.example/shop/web:latest"
    path = f"/api/v1/tenants/{tenant}/applications/edge"
    assert dev.request("PUT", path, json=body).status_code == 201
    app = wait_available(wharf, dev, tenant, "edge")
    assert app["status"]["warnings"] == [
        "Deployment edge, container edge: image registry.example/shop/web:latest has no tag "
        "or :latest"
    ]
    # A registry outside the allowed list is still refused.
    body["spec"]["values"]["image"] = "docker.io/library/nginx:1.27"
    refused = dev.request("PUT", path, json=body)
    assert refused.status_code == 422
    assert "not from an allowed registry" in refused.json()["message"]


def test_per_cluster_overrides_apply_only_to_their_cluster(wharf: Wharf, place, kubectl):
    tenant, dev = place
    overrides = {
        "lab2": {
            "replicas": 1,
            "registry": "mirror.lab2.local:5000",
            "env": {"REGION": "two"},
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "100m", "memory": "128Mi"},
            },
        }
    }
    body = application(tenant, "multi", {"replicas": 2}, overrides=overrides)
    dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/multi", json=body)
    wait_available(wharf, dev, tenant, "multi")
    ns = f"{tenant}--shop-dev"
    one = deployment(kubectl, wharf.lab.cluster("lab1"), ns, "multi")["spec"]
    two = deployment(kubectl, wharf.lab.cluster("lab2"), ns, "multi")["spec"]
    assert (one["replicas"], two["replicas"]) == (2, 1)
    c1, c2 = one["template"]["spec"]["containers"][0], two["template"]["spec"]["containers"][0]
    assert c1["image"] == IMAGE
    assert c2["image"] == "mirror.lab2.local:5000/shop/web:1.4.2"
    assert "env" not in c1
    assert c2["env"] == [{"name": "REGION", "value": "two"}]
    assert c2["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    bad = application(tenant, "multi", {"replicas": 2}, overrides={"lab9": {"replicas": 1}})
    refused = dev.request("PUT", f"/api/v1/tenants/{tenant}/applications/multi", json=bad)
    assert refused.status_code == 422
    assert refused.json()["field"] == "spec.overrides.lab9"
