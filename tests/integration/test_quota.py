"""The quota hierarchy holds at every level, refusals say by how much, usage is reported."""

from __future__ import annotations

import json

from tests.integration.conftest import Wharf, manifest, wait_for


def test_a_tenant_cannot_exceed_the_platform_capacity(wharf: Wharf):
    # Two lab clusters of 3 nodes with 16 CPUs each: 96 CPUs, less what other tenants hold.
    capacity = sum(
        int(c["status"]["capacity"]["allocatable"]["cpu"])
        for c in wharf.admin.ok("GET", "/api/v1/clusters")["items"]
    )
    assert capacity == 96
    body = {
        "kind": "Tenant",
        "metadata": {"name": "toobig"},
        "spec": {"quota": {"cpu": "1000"}, "clusters": ["lab1"]},
    }
    refused = wharf.admin.put("/api/v1/tenants/toobig", body)
    assert refused.status_code == 422, refused.text
    error = refused.json()
    assert error["code"] == "quota_exceeded"
    assert error["field"] == "spec.quota.requests.cpu"
    assert "would exceed the platform's capacity by" in error["message"]
    assert wharf.admin.get("/api/v1/tenants/toobig").status_code == 404


def test_a_project_cannot_exceed_what_its_tenant_has_left(wharf: Wharf):
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    wharf.project(tenant, "one", {"cpu": "3", "memory": "4Gi"})
    body = {
        "kind": "Project",
        "metadata": {"name": "two"},
        "spec": {
            "quota": {"cpu": "1500m"},
            "environments": [{"name": "dev", "clusters": ["lab1"]}],
        },
    }
    refused = wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/two", body)
    assert refused.status_code == 422
    error = refused.json()
    assert error["message"] == (
        f"project two: requests.cpu would exceed tenant {tenant}'s quota by 500m "
        f"(tenant {tenant}'s quota 4, others hold 3, this asks 1500m)"
    )
    assert error["details"] == {"resource": "requests.cpu", "exceededBy": "500m"}
    # Exactly what is left is fine.
    body["spec"]["quota"] = {"cpu": "1"}
    assert wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/two", body).status_code == 201
    # A resource the tenant has no quota for cannot be handed out.
    body["spec"]["quota"] = {"cpu": "1", "nvidia.com/gpu": "1"}
    refused = wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/two", body)
    assert refused.status_code == 422
    assert "has no quota for requests.nvidia.com/gpu" in refused.json()["message"]


def test_a_tenant_quota_cannot_drop_below_what_its_projects_hold(wharf: Wharf):
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi"})
    wharf.project(tenant, "one", {"cpu": "3", "memory": "4Gi"})
    before = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}")
    body = manifest(before)
    body["spec"]["quota"] = {"cpu": "2", "memory": "8Gi"}
    refused = wharf.admin.put(f"/api/v1/tenants/{tenant}", body)
    assert refused.status_code == 422
    assert refused.json()["message"] == (
        f"tenant {tenant}: requests.cpu 2 is below what its projects hold (3) by 1; "
        "quota is never cut below what is in use"
    )
    after = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}")
    assert after["spec"]["quota"]["cpu"] == "4"
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_usage_is_reported_and_a_project_quota_cannot_drop_below_it(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(
        tenant,
        "app",
        {"cpu": "4", "memory": "8Gi", "pods": "20"},
        envs=[{"name": "prod", "clusters": ["lab1"]}],
    )
    wharf.wait_placed(tenant, "app")
    ns = f"{tenant}--app-prod"
    lab1 = wharf.lab.cluster("lab1")
    kubectl(
        lab1,
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1",
        "--replicas=3",
    )
    path = f"/api/v1/tenants/{tenant}/projects/app"
    # Three pods with the LimitRange's default request of 100m CPU and 128Mi each.
    project = wait_for(
        lambda: (
            (p := wharf.admin.ok("GET", path))["status"].get("used", {}).get("pods") == "3" and p
        ),
        what="usage of 3 pods reported",
    )
    assert project["status"]["used"] == {
        "pods": "3",
        "requests.cpu": "300m",
        "requests.memory": "384Mi",
    }
    tenant_obj = wait_for(
        lambda: (
            (t := wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}"))["status"]
            .get("used", {})
            .get("pods")
            == "3"
            and t
        ),
        what="tenant usage",
    )
    assert tenant_obj["status"]["allocated"] == {
        "pods": "20",
        "requests.cpu": "4",
        "requests.memory": "8Gi",
    }
    body = manifest(wharf.admin.ok("GET", path))
    body["spec"]["quota"]["cpu"] = "200m"
    refused = wharf.admin.put(path, body)
    assert refused.status_code == 422
    assert refused.json()["message"] == (
        "project app: requests.cpu 200m is below its current usage (300m) by 100m; "
        "quota is never cut below what is in use"
    )
    body["spec"]["quota"]["cpu"] = "300m"
    assert wharf.admin.put(path, body).status_code == 200


def test_bad_quota_input_is_a_clear_4xx_that_changes_nothing(wharf: Wharf):
    tenant = wharf.tenant({"cpu": "4"})
    path = f"/api/v1/tenants/{tenant}/projects/bad"
    cases = [
        ({"cpu": "12x"}, "spec.quota", "'12x' is not a Kubernetes quantity"),
        ({"cpus": "1"}, "spec.quota.cpus", "not a resource a Kubernetes ResourceQuota accepts"),
        ({"cpu": "-1"}, "spec.quota", "negative"),
    ]
    for quota, field, message in cases:
        body = {
            "kind": "Project",
            "metadata": {"name": "bad"},
            "spec": {"quota": quota, "environments": [{"name": "dev", "clusters": ["lab1"]}]},
        }
        answer = wharf.admin.put(path, body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"].startswith(field)
        assert message in answer.json()["message"]
    body = {
        "kind": "Project",
        "metadata": {"name": "bad"},
        "spec": {"quota": {"cpu": "1"}, "environments": [{"name": "dev", "clusters": ["x"]}]},
    }
    answer = wharf.admin.put(path, body)
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.environments[0].clusters[0]"
    body["spec"]["environments"] = [{"name": "dev", "clusters": ["lab1"]}]
    body["spec"]["unknown"] = 1
    answer = wharf.admin.put(path, body)
    assert answer.status_code == 422
    assert answer.json()["field"] == "spec.unknown"
    assert wharf.admin.get(path).status_code == 404
    # Every refusal is in the audit trail, with what was wrong.
    events = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant, "outcome": "failed"})
    assert len(events["items"]) == 5
    assert json.dumps(events).count("not a Kubernetes quantity") == 1


def test_a_write_pinned_to_a_stale_resource_version_is_refused(wharf: Wharf):
    tenant = wharf.tenant({"cpu": "4"})
    wharf.project(tenant, "pin", {"cpu": "1"})
    path = f"/api/v1/tenants/{tenant}/projects/pin"
    read = wharf.admin.ok("GET", path)
    newer = manifest(read)
    newer["spec"]["displayName"] = "first"
    wharf.admin.ok("PUT", path, json=newer)
    stale = manifest(read)
    stale["metadata"]["resourceVersion"] = read["metadata"]["resourceVersion"]
    stale["spec"]["displayName"] = "second"
    refused = wharf.admin.put(path, stale)
    assert refused.status_code == 409
    assert refused.json()["field"] == "metadata.resourceVersion"
    assert wharf.admin.ok("GET", path)["spec"]["displayName"] == "first"
