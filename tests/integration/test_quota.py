"""The quota hierarchy holds at every level, refusals say by how much, usage is reported."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import ADMIN_PASSWORD, Wharf, manifest, wait_for


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


SHORT = {"cpu": "cpu", "memory": "memory"}
LONG = {"cpu": "requests.cpu", "memory": "requests.memory"}


def meter(page: str, label: str) -> str:
    """What a quota bar says to a screen reader: "3.8% (300m of 8)"."""
    found = re.search(rf'aria-label="{re.escape(label)}"[^>]*aria-valuetext="([^"]*)"', page)
    assert found, f"no bar {label!r} on the page"
    return found.group(1)


@pytest.mark.parametrize(
    ("t", "p", "e"),
    [(SHORT, LONG, SHORT), (LONG, SHORT, LONG)],
    ids=["cpu/requests.cpu/cpu", "requests.cpu/cpu/requests.cpu"],
)
def test_each_spelling_of_a_quota_is_one_quota_at_every_level(
    wharf: Wharf, kubectl, t: dict[str, str], p: dict[str, str], e: dict[str, str]
):
    # Tenant, project and environment each spell CPU and memory their own way (t, p, e).
    tenant = wharf.tenant({t["cpu"]: "8", t["memory"]: "16Gi", "pods": "40"})
    envs = [
        {"name": "prod", "clusters": ["lab1"], "quota": {e["cpu"]: "1", e["memory"]: "2Gi"}},
        {"name": "dev", "clusters": ["lab1", "lab2"]},
    ]
    wharf.project(tenant, "web", {p["cpu"]: "4", p["memory"]: "8Gi", "pods": "20"}, envs=envs)
    wharf.wait_placed(tenant, "web")
    placed = wait_for(
        lambda: (
            (x := wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/web"))["status"]
            and all(pl.get("hard") for pl in x["status"]["placements"])
            and x["status"]["placements"]
        ),
        what="each namespace's quota reported by its cluster",
    )
    closed = {"services.nodeports": "0", "services.loadbalancers": "0"}
    assert {(x["environment"], x["cluster"]): x["hard"] for x in placed} == {
        ("prod", "lab1"): {"requests.cpu": "1", "requests.memory": "2Gi", "pods": "10", **closed},
        ("dev", "lab1"): {"requests.cpu": "1500m", "requests.memory": "3Gi", "pods": "5", **closed},
        ("dev", "lab2"): {"requests.cpu": "1500m", "requests.memory": "3Gi", "pods": "5", **closed},
    }

    # The sums and refusals count both spellings as one resource.
    path = f"/api/v1/tenants/{tenant}/projects"
    second = {
        "kind": "Project",
        "metadata": {"name": "more"},
        "spec": {"quota": {p["cpu"]: "5"}, "environments": [{"name": "dev", "clusters": ["lab1"]}]},
    }
    refused = wharf.admin.put(f"{path}/more", second)
    assert refused.status_code == 422, refused.text
    assert refused.json()["details"] == {"resource": "requests.cpu", "exceededBy": "1"}
    web = manifest(wharf.admin.ok("GET", f"{path}/web"))
    web["spec"]["environments"][0]["quota"] = {e["cpu"]: "5"}
    refused = wharf.admin.put(f"{path}/web", web)
    assert refused.status_code == 422, refused.text
    assert "requests.cpu quotas add up to 5, over the project's 4 by 1" in refused.json()["message"]
    lowered = manifest(wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}"))
    lowered["spec"]["quota"][t["cpu"]] = "3"
    refused = wharf.admin.put(f"/api/v1/tenants/{tenant}", lowered)
    assert refused.status_code == 422, refused.text
    assert "below what its projects hold (4) by 1" in refused.json()["message"]

    # Usage: three pods with the LimitRange's default request (100m CPU, 128Mi) in prod.
    kubectl(
        wharf.lab.cluster("lab1"),
        "-n",
        f"{tenant}--web-prod",
        "create",
        "deployment",
        "api",
        "--image=registry.example/api:1",
        "--replicas=3",
    )
    counted = wait_for(
        lambda: (
            (x := wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}"))["status"]
            .get("used", {})
            .get("pods")
            == "3"
            and x
        ),
        what="the tenant counts 3 pods",
    )
    assert counted["status"]["used"] == {
        "pods": "3",
        "requests.cpu": "300m",
        "requests.memory": "384Mi",
    }
    assert counted["status"]["allocated"] == {
        "pods": "20",
        "requests.cpu": "4",
        "requests.memory": "8Gi",
    }

    # The console's bars put that usage against the quota, whichever way either is spelled.
    console = TestClient(wharf.app, follow_redirects=False)
    signed_in = console.post(
        "/console/login", data={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert signed_in.status_code == 303
    for page in (console.get("/console/").text, console.get("/console/tenants").text):
        assert meter(page, f"{tenant} cpu") == "3.8% (300m of 8)"
        assert meter(page, f"{tenant} memory") == "2.3% (384Mi of 16Gi)"
    overview = console.get("/console/").text
    assert meter(overview, f"{tenant} pods") == "7.5% (3 of 40)"
    page = console.get(f"/console/tenants/{tenant}").text
    assert meter(page, f"used {t['cpu']}") == "3.8% (300m of 8)"
    assert meter(page, f"allocated {t['cpu']}") == "50.0% (4 of 8)"
    assert meter(page, f"allocated {t['memory']}") == "50.0% (8Gi of 16Gi)"
    assert f"{p['cpu']}=300m, {p['memory']}=384Mi" in page  # the project's row, in its names
    page = console.get(f"/console/tenants/{tenant}/projects/web").text
    assert meter(page, f"Project quota {p['cpu']}") == "7.5% (300m of 4)"
    assert meter(page, f"Project quota {p['memory']}") == "4.7% (384Mi of 8Gi)"
    assert meter(page, "prod lab1 requests.cpu") == "30.0% (300m of 1)"
