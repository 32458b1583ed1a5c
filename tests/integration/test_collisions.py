"""Names chosen to collide: namespaces across tenants, objects across applications, objects
that exist already. Refused at write time, never adopted, nothing read across; and quota that
leaves nothing a parent limits unlimited, also under concurrent writes."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from tests.integration.conftest import Wharf, wait_for


def _app(tenant: str, name: str, workload: str, project: str = "x") -> dict:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": project,
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": workload, "image": "registry.example/web:1.0", "replicas": 1},
        },
    }


def test_names_that_would_collide_across_tenants_get_distinct_namespaces(wharf: Wharf, kubectl):
    first = f"c{uuid.uuid4().hex[:6]}"
    second = f"{first}-lab"
    a_admin, b_admin = wharf.user(), wharf.user()
    wharf.tenant({"cpu": "2", "memory": "2Gi"}, admins=[a_admin.user], name=first)
    wharf.tenant({"cpu": "2", "memory": "2Gi"}, admins=[b_admin.user], name=second)
    # acme + lab-x and acme-lab + x: the tenant is set off by "--", which no tenant name holds.
    wharf.project(first, "lab-x", {"cpu": "1", "memory": "1Gi"}, api=a_admin)
    wharf.project(second, "x", {"cpu": "1", "memory": "1Gi"}, api=b_admin)
    wharf.wait_placed(first, "lab-x")
    wharf.wait_placed(second, "x")
    for cluster in wharf.lab.clusters():
        for tenant, ns in ((first, f"{first}--lab-x-dev"), (second, f"{second}--x-dev")):
            labels = json.loads(kubectl(cluster, "get", "ns", ns, "-o", "json").stdout)["metadata"][
                "labels"
            ]
            assert labels["wharf.io/tenant"] == tenant
    refused = wharf.admin.put(
        "/api/v1/tenants/a--b", {"kind": "Tenant", "metadata": {"name": "a--b"}, "spec": {}}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "metadata.name"


def test_two_projects_cannot_be_given_one_namespace(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    body = {
        "kind": "Project",
        "metadata": {"name": "a-b"},
        "spec": {
            "quota": {"cpu": "1", "memory": "1Gi"},
            "environments": [{"name": "c", "clusters": ["lab1", "lab2"]}],
        },
    }
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/a-b", json=body)
    # a-b + c and a + b-c would both be <tenant>--a-b-c.
    body["metadata"]["name"] = "a"
    body["spec"]["environments"][0]["name"] = "b-c"
    answer = wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/a", body)
    assert answer.status_code == 409, answer.text
    error = answer.json()
    assert error["field"] == "spec.environments[0].name"
    assert error["message"] == (
        f"spec.environments[0].name: namespace {tenant}--a-b-c is already held by another Project"
    )
    assert wharf.admin.get(f"/api/v1/tenants/{tenant}/projects/a").status_code == 404
    failed = wharf.admin.ok(
        "GET", "/api/v1/audit", params={"tenant": tenant, "kind": "Project", "outcome": "failed"}
    )["items"]
    assert [e["name"] for e in failed] == ["a"]
    assert "spec.environments[0].name" in failed[0]["reason"]
    wharf.wait_placed(tenant, "a-b")
    # Deleting the holder frees the name.
    wharf.admin.ok("DELETE", f"/api/v1/tenants/{tenant}/projects/a-b", params={"confirm": "a-b"})
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/projects/a", json=body)


def test_a_namespace_that_exists_already_is_not_adopted(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    lab1, lab2 = wharf.lab.clusters()
    taken = f"{tenant}--web-dev"
    kubectl(lab1, "create", "namespace", taken)
    kubectl(lab1, "-n", taken, "create", "secret", "generic", "theirs", "--from-literal=k=v")
    wharf.project(tenant, "web", {"cpu": "1", "memory": "1Gi"})
    path = f"/api/v1/tenants/{tenant}/projects/web"

    def conflict() -> dict | None:
        status = wharf.admin.ok("GET", path)["status"]
        found = {c["type"]: c for c in status.get("conditions", [])}
        return found.get("Conflict") if found.get("Conflict", {}).get("status") == "True" else None

    condition = wait_for(conflict, what="a Conflict condition on the project")
    assert taken in condition["message"]
    assert "lab1" in condition["message"]
    ns = json.loads(kubectl(lab1, "get", "ns", taken, "-o", "json").stdout)
    assert "wharf.io/tenant" not in ns["metadata"].get("labels", {})
    quotas = kubectl(lab1, "-n", taken, "get", "resourcequota,rolebinding", "-o", "name").stdout
    assert quotas.strip() == ""
    # The other cluster, where nothing was in the way, is placed.
    placements = wharf.admin.ok("GET", path)["status"]["placements"]
    assert {p["cluster"]: p["state"] for p in placements} == {"lab1": "Conflict", "lab2": "Ready"}
    assert kubectl(lab2, "get", "ns", taken).returncode == 0


def test_two_applications_cannot_render_one_object(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "4", "memory": "4Gi", "pods": "20"})
    wharf.project(tenant, "x", {"cpu": "2", "memory": "2Gi", "pods": "10"})
    wharf.wait_placed(tenant, "x")
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/one", json=_app(tenant, "one", "web")
    )
    answer = wharf.admin.put(
        f"/api/v1/tenants/{tenant}/applications/two", _app(tenant, "two", "web")
    )
    assert answer.status_code == 409, answer.text
    assert f"Deployment web in namespace {tenant}--x-dev" in answer.json()["message"]
    assert wharf.admin.get(f"/api/v1/tenants/{tenant}/applications/two").status_code == 404
    # Renaming the workload is fine; and the first keeps its object.
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/two", json=_app(tenant, "two", "api")
    )
    # An application may not move onto a name another one holds by an update either.
    moved = wharf.admin.put(
        f"/api/v1/tenants/{tenant}/applications/two", _app(tenant, "two", "web")
    )
    assert moved.status_code == 409, moved.text
    ns = f"{tenant}--x-dev"

    def owner() -> str | None:
        result = kubectl(
            wharf.lab.clusters()[0], "-n", ns, "get", "deploy", "web", "-o", "json", check=False
        )
        if result.returncode:
            return None
        return json.loads(result.stdout)["metadata"]["labels"].get("wharf.io/app")

    assert wait_for(owner, what="the first application's Deployment") == "one"


def test_an_object_that_exists_already_is_not_taken_over(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "4", "memory": "4Gi", "pods": "20"})
    wharf.project(tenant, "x", {"cpu": "2", "memory": "2Gi", "pods": "10"})
    wharf.wait_placed(tenant, "x")
    lab1, lab2 = wharf.lab.clusters()
    ns = f"{tenant}--x-dev"
    kubectl(lab1, "-n", ns, "create", "service", "clusterip", "web", "--tcp=80:80")
    wharf.admin.ok(
        "PUT", f"/api/v1/tenants/{tenant}/applications/one", json=_app(tenant, "one", "web")
    )
    path = f"/api/v1/tenants/{tenant}/applications/one"

    def conflicted() -> dict | None:
        status = wharf.admin.ok("GET", path)["status"]
        return (
            status
            if status.get("clusters", {}).get("lab1", {}).get("state") == "Conflict"
            else None
        )

    status = wait_for(conflicted, what="lab1 reports a Conflict")
    assert f"Service web in namespace {ns}" in status["clusters"]["lab1"]["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Conflict"]["status"] == "True"
    service = json.loads(kubectl(lab1, "-n", ns, "get", "svc", "web", "-o", "json").stdout)
    assert "wharf.io/app" not in service["metadata"].get("labels", {})
    # Nothing of the application was applied in lab1 (the whole delivery there waits).
    assert kubectl(lab1, "-n", ns, "get", "deploy", "web", check=False).returncode != 0
    assert wait_for(
        lambda: kubectl(lab2, "-n", ns, "get", "deploy", "web", check=False).returncode == 0
    )


def test_what_a_tenant_limits_is_limited_in_every_namespace(wharf: Wharf, kubectl):
    tenant = wharf.tenant({"cpu": "4", "memory": "4Gi", "pods": "20", "services.nodeports": "2"})
    wharf.project(tenant, "empty", {})
    wharf.project(tenant, "some", {"requests.cpu": "1"})
    wharf.wait_placed(tenant, "empty")
    wharf.wait_placed(tenant, "some")
    for cluster in wharf.lab.clusters():
        for project, cpu in (("empty", "0"), ("some", "500m")):
            hard = json.loads(
                kubectl(
                    cluster,
                    "-n",
                    f"{tenant}--{project}-dev",
                    "get",
                    "resourcequota",
                    "wharf-quota",
                    "-o",
                    "json",
                ).stdout
            )["spec"]["hard"]
            assert hard["requests.cpu"] == cpu
            assert hard["requests.memory"] == "0"
            assert hard["pods"] == "0"
            assert hard["services.nodeports"] == "0"
            assert hard["services.loadbalancers"] == "0"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_project_writes_cannot_both_pass_the_sum(wharf: Wharf):
    tenant = wharf.tenant({"cpu": "4"})
    results: list[int] = []

    def write(name: str, gate: threading.Barrier) -> None:
        body = {
            "kind": "Project",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {"quota": {"cpu": "3"}, "environments": []},
        }
        gate.wait()
        answer = wharf.admin.put(f"/api/v1/tenants/{tenant}/projects/{name}", body)
        results.append(answer.status_code)

    for round_ in range(6):
        gate = threading.Barrier(2)
        threads = [threading.Thread(target=write, args=(f"r{round_}{side}", gate)) for side in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) in ([200, 422], [201, 422]), results
        projects = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects")["items"]
        for p in projects:
            wharf.admin.ok(
                "DELETE",
                f"/api/v1/tenants/{tenant}/projects/{p['metadata']['name']}",
                params={"confirm": p["metadata"]["name"]},
            )
        results.clear()
