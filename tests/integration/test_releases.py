"""Progressive releases across the lab's clusters, judged by a real Prometheus scraping the
test exporter: a good canary goes wave by wave, a bad one is rolled back in the first cluster
and never reaches the second, an inconclusive one waits for a person."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Api, Wharf, cluster_writes, wait_for
from tests.integration.exporter import Exporter
from wharf.lab.prometheus import Prometheus
from wharf.releases.model import Metric, build_query

IMAGE = "registry.example/shop/web:1.4.2"
NEW_IMAGE = "registry.example/shop/web:1.5.0"
ERROR_RATE = (
    'sum(rate(wharf_test_requests_total{app="${app}",cluster="${cluster}",'
    'revision="${revision}",code="500"}[4s])) / sum(rate(wharf_test_requests_total{'
    'app="${app}",cluster="${cluster}",revision="${revision}"}[4s]))'
)


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with Exporter().running() as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(
    exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.address], "1s")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def wharf_settings(prometheus: Prometheus) -> dict[str, Any]:
    return {"prometheus_url": prometheus.url}


@pytest.fixture
def shop(wharf: Wharf) -> tuple[str, Api, str]:
    """A tenant, its project placed on both clusters, a developer, and an error-rate template."""
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(
        tenant,
        "shop",
        {"cpu": "4", "memory": "8Gi", "pods": "20"},
        members=[{"user": dev.user, "role": "developer"}],
    )
    wharf.wait_placed(tenant, "shop")
    template = {
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "metrics": [
                {
                    "name": "errors",
                    "query": ERROR_RATE,
                    "interval": 1,
                    "count": 2,
                    "initialDelay": 3,
                    "successCondition": "result < 0.05",
                    "failureCondition": "result > 0.3",
                    "consecutiveErrorLimit": 6,
                }
            ]
        },
    }
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/analysistemplates/error-rate", json=template)
    return tenant, dev, f"{tenant}--shop-dev"


def canary_app(tenant: str, image: str, **strategy: Any) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": image, "replicas": 2},
            "strategy": {
                "type": "canary",
                "canary": {
                    "steps": [{"setWeight": 50}, {"analysis": {"templates": ["error-rate"]}}]
                },
                "waves": [{"clusters": ["lab1"]}, {"clusters": ["lab2"]}],
                **strategy,
            },
        },
    }


def deliver(wharf: Wharf, dev: Api, tenant: str, image: str, **strategy: Any) -> None:
    path = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("PUT", path, json=canary_app(tenant, image, **strategy))


def wait_images(wharf: Wharf, kubectl, ns: str, images: dict[str, str]) -> None:
    def match() -> bool:
        for cluster in wharf.lab.clusters():
            want = images.get(cluster.name)
            if want is None:
                continue
            got = deployment(kubectl, cluster, ns, "web")
            if got is None or got["spec"]["template"]["spec"]["containers"][0]["image"] != want:
                return False
            if got["status"].get("readyReplicas") != got["spec"]["replicas"]:
                return False
        return True

    wait_for(match, timeout=90, what=f"stable images {images}")


def deployment(kubectl, cluster, ns: str, name: str) -> dict[str, Any] | None:
    got = kubectl(cluster, "-n", ns, "get", "deployment", name, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def release(api: Api, tenant: str) -> dict[str, Any]:
    return api.ok("GET", f"/api/v1/tenants/{tenant}/applications/web/release")


def wait_release(api: Api, tenant: str, what: str, check) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        answer = api.request("GET", f"/api/v1/tenants/{tenant}/applications/web/release")
        body = answer.json() if answer.status_code == 200 else None
        return body if body is not None and body["revision"] == 2 and check(body) else None

    return wait_for(seen, timeout=120, what=what)  # type: ignore[no-any-return]


def first_delivery(wharf: Wharf, kubectl, exporter: Exporter, tenant: str, dev: Api, ns: str):
    deliver(wharf, dev, tenant, IMAGE)
    wait_images(wharf, kubectl, ns, {"lab1": IMAGE, "lab2": IMAGE})


def test_a_good_canary_is_promoted_wave_by_wave(wharf: Wharf, shop, exporter, kubectl):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, exporter, tenant, dev, ns)
    for cluster in ("lab1", "lab2"):
        exporter.serve(ns, "web", cluster, 2, errors=0.0)
    deliver(wharf, dev, tenant, NEW_IMAGE)

    # lab1 runs the canary beside the unchanged stable workload while lab2 is untouched.
    lab1, lab2 = wharf.lab.cluster("lab1"), wharf.lab.cluster("lab2")
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary"), what="canary in lab1")
    canary = deployment(kubectl, lab1, ns, "web-canary")
    assert canary["spec"]["replicas"] == 1  # 50 % of 2
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert deployment(kubectl, lab2, ns, "web-canary") is None
    stable = deployment(kubectl, lab1, ns, "web")
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE

    done = wait_release(dev, tenant, "release Succeeded", lambda r: r["phase"] == "Succeeded")
    assert done["waves"] == [["lab1"], ["lab2"]]
    assert {c["phase"] for c in done["clusters"].values()} == {"Promoted"}
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for m in done["measurements"]:
        by_cluster.setdefault(m["cluster"], []).append(m)
    for cluster in ("lab1", "lab2"):
        assert [m["phase"] for m in by_cluster[cluster]][-2:] == ["Successful", "Successful"]
    # Wave by wave: lab2 was measured only after lab1 had passed.
    assert max(m["time"] for m in by_cluster["lab1"]) <= min(m["time"] for m in by_cluster["lab2"])
    wait_images(wharf, kubectl, ns, {"lab1": NEW_IMAGE, "lab2": NEW_IMAGE})
    for cluster in wharf.lab.clusters():
        assert deployment(kubectl, cluster, ns, "web-canary") is None
    conditions = {c["type"]: c["status"] for c in done["conditions"]}
    assert conditions["Completed"] == "True"


def test_a_bad_canary_is_rolled_back_in_the_first_cluster_only(
    wharf: Wharf, shop, exporter, kubectl
):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, exporter, tenant, dev, ns)
    exporter.serve(ns, "web", "lab1", 2, errors=0.5)
    exporter.serve(ns, "web", "lab2", 2, errors=0.0)
    lab1, lab2 = wharf.lab.cluster("lab1"), wharf.lab.cluster("lab2")
    wait_for(lambda: not wharf.platform.delivery.controller.queue, what="delivery idle")
    lab2_before = len(cluster_writes(lab2, ns))
    deliver(wharf, dev, tenant, NEW_IMAGE)

    failed = wait_release(dev, tenant, "release Failed", lambda r: r["phase"] == "Failed")
    assert failed["clusters"]["lab1"]["phase"] == "Failed"
    assert failed["clusters"]["lab2"]["phase"] == "Pending"
    assert "lab1" in failed["message"]
    assert failed["measurements"][-1]["phase"] == "Failed"
    assert failed["measurements"][-1]["value"] > 0.3
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary") is None, what="canary gone")
    wait_images(wharf, kubectl, ns, {"lab1": IMAGE, "lab2": IMAGE})
    # lab2 was never written to while the release ran and failed.
    assert len(cluster_writes(lab2, ns)) == lab2_before

    # Another tenant does not see the release; a reader of the project may not abort it.
    stranger = wharf.user()
    other = wharf.tenant({"cpu": "1"}, admins=[stranger.user])
    assert other
    path = f"/api/v1/tenants/{tenant}/applications/web/release"
    assert stranger.get(path).status_code == 404
    assert stranger.request("POST", f"{path}/abort").status_code == 404
    viewer = wharf.user()
    project = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/shop")
    members = [*project["spec"]["members"], {"user": viewer.user, "role": "viewer"}]
    project["spec"]["members"] = members
    wharf.admin.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/projects/shop",
        json={"kind": "Project", "metadata": {"name": "shop"}, "spec": project["spec"]},
    )
    assert viewer.get(path).status_code == 200
    assert viewer.request("POST", f"{path}/promote").status_code == 403
    trail = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
    assert any(
        e["action"] == "release-promote" and e["outcome"] == "denied" and e["actor"] == viewer.user
        for e in trail
    )


def test_an_inconclusive_canary_waits_for_a_person(wharf: Wharf, shop, exporter, kubectl):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, exporter, tenant, dev, ns)
    exporter.serve(ns, "web", "lab1", 2, errors=0.1)  # between 5 % and 30 %: inconclusive
    exporter.serve(ns, "web", "lab2", 2, errors=0.0)
    deliver(wharf, dev, tenant, NEW_IMAGE)
    paused = wait_release(
        dev, tenant, "lab1 inconclusive", lambda r: r["clusters"]["lab1"]["phase"] == "Inconclusive"
    )
    assert {c["type"]: c["status"] for c in paused["conditions"]}["Paused"] == "True"
    assert paused["clusters"]["lab2"]["phase"] == "Pending"
    path = f"/api/v1/tenants/{tenant}/applications/web/release"

    dev.ok("POST", f"{path}/promote")
    done = wait_release(dev, tenant, "release Succeeded", lambda r: r["phase"] == "Succeeded")
    assert done["clusters"]["lab2"]["phase"] == "Promoted"
    wait_images(wharf, kubectl, ns, {"lab1": NEW_IMAGE, "lab2": NEW_IMAGE})
    trail = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
    assert any(e["action"] == "release-promote" and e["actor"] == dev.user for e in trail)


def test_abort_rolls_back_what_the_release_changed(wharf: Wharf, shop, exporter, kubectl):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, exporter, tenant, dev, ns)
    # A step that waits for a person keeps the canary up in lab1 until the abort.
    deliver(
        wharf,
        dev,
        tenant,
        NEW_IMAGE,
        canary={"steps": [{"setReplicas": 1}, {"pause": {}}]},
    )
    lab1 = wharf.lab.cluster("lab1")
    wait_release(
        dev, tenant, "paused", lambda r: r["clusters"]["lab1"]["phase"] == "WaitingPromote"
    )
    assert deployment(kubectl, lab1, ns, "web-canary") is not None
    path = f"/api/v1/tenants/{tenant}/applications/web/release"
    aborted = dev.ok("POST", f"{path}/abort")
    assert aborted["phase"] == "Aborted"
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary") is None, what="canary gone")
    wait_images(wharf, kubectl, ns, {"lab1": IMAGE, "lab2": IMAGE})
    assert dev.request("POST", f"{path}/promote").status_code == 409


def test_bad_strategies_are_refused_naming_the_field(wharf: Wharf, shop, prometheus):
    tenant, dev, _ns = shop
    path = f"/api/v1/tenants/{tenant}/applications/web"

    def refused(body: dict[str, Any], field: str) -> None:
        answer = dev.request("PUT", path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field, answer.text

    bad = canary_app(tenant, IMAGE)
    bad["spec"]["strategy"]["canary"]["steps"][1]["analysis"]["templates"] = ["missing"]
    refused(bad, "spec.strategy.canary.steps[1].analysis.templates[0]")
    bad = canary_app(tenant, IMAGE)
    bad["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = 101
    refused(bad, "spec.strategy.canary.steps.0.setWeight")
    refused(
        canary_app(tenant, IMAGE, waves=[{"clusters": ["lab9"]}]),
        "spec.strategy.waves[0].clusters[0]",
    )
    assert dev.get(path).status_code == 404  # nothing was created

    templates = f"/api/v1/tenants/{tenant}/analysistemplates"

    def template_refused(query: str, why: str) -> None:
        body = {
            "kind": "AnalysisTemplate",
            "metadata": {"name": "bad"},
            "spec": {"metrics": [{"name": "m", "query": query, "successCondition": "result < 1"}]},
        }
        answer = wharf.admin.request("PUT", f"{templates}/bad", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "spec.metrics[0].query"
        assert why in answer.json()["message"]

    template_refused("sum(rate(x[1m]", "not valid PromQL")
    template_refused('sum(x{namespace="someone-else"})', "names a namespace")
    # Parsed, but Prometheus itself refuses it (a function this Prometheus does not have).
    template_refused('sort_by_label(x, "a")', "Prometheus refuses it")


def test_a_query_reads_only_its_own_namespace_whatever_its_args_say(exporter, prometheus):
    """Wharf puts the application's namespace on every selector after the arguments are
    filled in, so an argument that closes the selector and opens another reads nothing else."""
    exporter.serve("ta--shop-dev", "web", "lab1", 7, errors=0.0)
    exporter.serve("tb--bank-dev", "vault", "lab1", 7, errors=0.5)
    metric = Metric(
        name="m",
        query='sum by (namespace) (wharf_test_requests_total{code="${code}"})',
        successCondition="result < 1",
    )
    sneaky = '500"} or wharf_test_requests_total{app="vault'
    query = build_query(metric, {"code": sneaky}, "ta--shop-dev")

    def scraped() -> bool:
        return bool(prometheus.query('wharf_test_requests_total{namespace="tb--bank-dev"}'))

    wait_for(scraped, what="the other tenant's series in Prometheus")
    namespaces = {r["metric"].get("namespace") for r in prometheus.query(query)}  # type: ignore[union-attr]
    assert namespaces <= {"ta--shop-dev"}
    assert "tb--bank-dev" not in query.replace('namespace="ta--shop-dev"', "")
