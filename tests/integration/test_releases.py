"""Progressive releases across three clusters (the lab's two and a third, edge), judged by a
real Prometheus scraping the test exporter: a good canary goes wave by wave, a bad one is
rolled back in the first cluster and never touches the others, an inconclusive one waits for a
person, blue-green switches and switches back, a killed server resumes at the same step.

The two central cases run on both databases; the others on one each, to keep the run short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import (
    WHARF_USER,
    Api,
    ServerProcess,
    Wharf,
    cluster_writes,
    manifest,
    register_clusters,
    wait_for,
)
from tests.integration.exporter import Exporter
from wharf.lab import Lab, LabCluster, find_binaries
from wharf.lab.prometheus import Prometheus
from wharf.network.model import route_name
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


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    """A third cluster (a lab of its own, one node), so that releases go through three."""
    binaries = find_binaries()
    assert binaries is not None
    lab = Lab(tmp_path_factory.mktemp("edge"), binaries)
    lab.up(clusters=1, nodes=1, progress=lambda _: None)
    yield lab.cluster("lab1")
    lab.down(progress=lambda _: None)


@pytest.fixture
def clusters(wharf: Wharf, edge: LabCluster) -> dict[str, LabCluster]:
    """The three clusters by the names Wharf knows them by: lab1, lab2 and edge."""
    kubeconfig = edge.user_kubeconfig(WHARF_USER, ("system:masters",)).read_text()
    body = {"kind": "Cluster", "metadata": {"name": "edge"}, "spec": {"kubeconfig": kubeconfig}}
    wharf.admin.ok("PUT", "/api/v1/clusters/edge", json=body)
    wait_for(
        lambda: wharf.admin.ok("GET", "/api/v1/clusters/edge")["status"].get("phase") == "Ready",
        what="edge Ready",
    )
    return {"lab1": wharf.lab.cluster("lab1"), "lab2": wharf.lab.cluster("lab2"), "edge": edge}


@pytest.fixture
def shop(wharf: Wharf, clusters: dict[str, LabCluster]) -> tuple[str, Api, str]:
    """A tenant, its project placed on the three clusters, a developer, and an error-rate
    analysis template."""
    dev = wharf.user()
    names = list(clusters)
    tenant = wharf.tenant({"cpu": "12", "memory": "24Gi", "pods": "60"}, clusters=names)
    wharf.project(
        tenant,
        "shop",
        {"cpu": "6", "memory": "12Gi", "pods": "30"},
        members=[{"user": dev.user, "role": "developer"}],
        envs=[{"name": "dev", "clusters": names}],
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


def canary_app(
    tenant: str, image: str, routes: list[dict[str, Any]] | None = None, **strategy: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
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
                "waves": [{"clusters": ["lab1"]}, {"clusters": ["lab2"]}, {"clusters": ["edge"]}],
                **strategy,
            },
        },
    }
    if routes is not None:
        body["spec"]["routes"] = routes
    return body


def deliver(
    wharf: Wharf,
    dev: Api,
    tenant: str,
    image: str,
    routes: list[dict[str, Any]] | None = None,
    **strategy: Any,
) -> None:
    path = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("PUT", path, json=canary_app(tenant, image, routes, **strategy))


def wait_images(kubectl, clusters: dict[str, LabCluster], ns: str, images: dict[str, str]):
    """Until each named cluster's stable workload runs that image, all replicas ready."""

    def match() -> bool:
        for name, want in images.items():
            got = deployment(kubectl, clusters[name], ns, "web")
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


def everywhere(image: str) -> dict[str, str]:
    return {"lab1": image, "lab2": image, "edge": image}


def first_delivery(wharf: Wharf, kubectl, clusters, tenant: str, dev: Api, ns: str) -> None:
    deliver(wharf, dev, tenant, IMAGE)
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))


def test_a_good_canary_is_promoted_wave_by_wave(wharf: Wharf, shop, clusters, exporter, kubectl):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, clusters, tenant, dev, ns)
    for name in clusters:
        exporter.serve(ns, "web", name, 2, errors=0.0)
    deliver(wharf, dev, tenant, NEW_IMAGE)

    # lab1 runs the canary beside the unchanged stable workload; the others are untouched.
    lab1 = clusters["lab1"]
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary"), what="canary in lab1")
    canary = deployment(kubectl, lab1, ns, "web-canary")
    assert canary is not None
    assert canary["spec"]["replicas"] == 1  # 50 % of 2
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    for name in ("lab2", "edge"):
        assert deployment(kubectl, clusters[name], ns, "web-canary") is None
    stable = deployment(kubectl, lab1, ns, "web")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE

    done = wait_release(dev, tenant, "release Succeeded", lambda r: r["phase"] == "Succeeded")
    assert done["waves"] == [["lab1"], ["lab2"], ["edge"]]
    assert {c["phase"] for c in done["clusters"].values()} == {"Promoted"}
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for m in done["measurements"]:
        by_cluster.setdefault(m["cluster"], []).append(m)
    for name in clusters:
        assert [m["phase"] for m in by_cluster[name]][-2:] == ["Successful", "Successful"]
    # Wave by wave: each cluster was measured only after the one before it had passed.
    for before, after in (("lab1", "lab2"), ("lab2", "edge")):
        assert max(m["time"] for m in by_cluster[before]) <= min(
            m["time"] for m in by_cluster[after]
        )
    wait_images(kubectl, clusters, ns, everywhere(NEW_IMAGE))
    for cluster in clusters.values():
        assert deployment(kubectl, cluster, ns, "web-canary") is None
    conditions = {c["type"]: c["status"] for c in done["conditions"]}
    assert conditions["Completed"] == "True"


def test_a_bad_canary_is_rolled_back_in_the_first_cluster_only(
    wharf: Wharf, shop, clusters, exporter, kubectl
):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, clusters, tenant, dev, ns)
    exporter.serve(ns, "web", "lab1", 2, errors=0.5)
    for name in ("lab2", "edge"):
        exporter.serve(ns, "web", name, 2, errors=0.0)
    writes_before = {n: len(cluster_writes(clusters[n], ns)) for n in ("lab2", "edge")}
    deliver(wharf, dev, tenant, NEW_IMAGE)

    failed = wait_release(dev, tenant, "release Failed", lambda r: r["phase"] == "Failed")
    assert failed["clusters"]["lab1"]["phase"] == "Failed"
    assert failed["clusters"]["lab2"]["phase"] == failed["clusters"]["edge"]["phase"] == "Pending"
    assert "lab1" in failed["message"]
    assert failed["measurements"][-1]["phase"] == "Failed"
    assert failed["measurements"][-1]["value"] > 0.3
    lab1 = clusters["lab1"]
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary") is None, what="canary gone")
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))
    # The other two clusters were never written to while the release ran and failed.
    assert {n: len(cluster_writes(clusters[n], ns)) for n in ("lab2", "edge")} == writes_before

    # Another tenant does not see the release; a viewer of the project may not promote it.
    stranger = wharf.user()
    wharf.tenant({"cpu": "1"}, admins=[stranger.user])
    path = f"/api/v1/tenants/{tenant}/applications/web/release"
    assert stranger.get(path).status_code == 404
    assert stranger.request("POST", f"{path}/abort").status_code == 404
    viewer = wharf.user()
    project = wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/shop")
    project["spec"]["members"].append({"user": viewer.user, "role": "viewer"})
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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_inconclusive_canary_waits_for_a_person(wharf: Wharf, shop, clusters, exporter, kubectl):
    """Inconclusive in lab1 and in lab2: a promote lets lab1 go on; in lab2 an abort rolls
    back every cluster the release changed (lab1's promotion too) and edge is never reached."""
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, clusters, tenant, dev, ns)
    for name in ("lab1", "lab2"):
        exporter.serve(ns, "web", name, 2, errors=0.1)  # between 5 % and 30 %: inconclusive
    exporter.serve(ns, "web", "edge", 2, errors=0.0)
    deliver(wharf, dev, tenant, NEW_IMAGE)
    paused = wait_release(
        dev, tenant, "lab1 inconclusive", lambda r: r["clusters"]["lab1"]["phase"] == "Inconclusive"
    )
    assert {c["type"]: c["status"] for c in paused["conditions"]}["Paused"] == "True"
    assert paused["clusters"]["lab2"]["phase"] == "Pending"
    path = f"/api/v1/tenants/{tenant}/applications/web/release"

    dev.ok("POST", f"{path}/promote")
    wait_release(
        dev, tenant, "lab2 inconclusive", lambda r: r["clusters"]["lab2"]["phase"] == "Inconclusive"
    )
    assert release(dev, tenant)["clusters"]["lab1"]["phase"] == "Promoted"
    lab2 = clusters["lab2"]
    assert deployment(kubectl, lab2, ns, "web-canary") is not None
    aborted = dev.ok("POST", f"{path}/abort")
    assert aborted["phase"] == "Aborted"
    assert {n: c["phase"] for n, c in aborted["clusters"].items()} == {
        "lab1": "RolledBack",
        "lab2": "RolledBack",
        "edge": "Pending",
    }
    wait_for(lambda: deployment(kubectl, lab2, ns, "web-canary") is None, what="canary gone")
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))
    trail = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
    assert any(e["action"] == "release-promote" and e["actor"] == dev.user for e in trail)
    assert any(e["action"] == "release-abort" and e["actor"] == dev.user for e in trail)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_header_routed_canary_and_abort(wharf: Wharf, shop, clusters, kubectl):
    """ingress-nginx canary annotations route one header (and one cookie) to the canary,
    accepted by the API server; abort removes the canary objects and leaves the stable
    revision everywhere."""
    tenant, dev, ns = shop
    # The canary's Ingress names a host the application holds: the tenant guard lets a
    # namespace route only hosts the domain register gave its applications.
    host = f"web.{tenant}.example"
    grant = {"tenant": tenant, "domains": [host]}
    wharf.admin.ok(
        "PUT",
        f"/api/v1/domaingrants/{tenant}",
        json={"kind": "DomainGrant", "metadata": {"name": tenant}, "spec": grant},
    )
    routes = [{"host": host, "service": "web", "port": 80}]
    deliver(wharf, dev, tenant, IMAGE, routes)
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))
    header = {"name": "X-Canary", "value": "yes"}
    routing = {"nginx": {"host": host, "header": header, "cookie": {"name": "canary"}}}
    steps = [{"setWeight": 20}, {"pause": {}}]
    canary = {"steps": steps, "trafficRouting": routing}
    deliver(wharf, dev, tenant, NEW_IMAGE, routes, canary=canary)
    wait_release(
        dev, tenant, "paused", lambda r: r["clusters"]["lab1"]["phase"] == "WaitingPromote"
    )
    lab1 = clusters["lab1"]
    ingress = json.loads(
        kubectl(lab1, "-n", ns, "get", "ingress", "web-canary", "-o", "json").stdout
    )
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/canary-by-header"] == "X-Canary"
    assert annotations["nginx.ingress.kubernetes.io/canary-by-header-value"] == "yes"
    assert annotations["nginx.ingress.kubernetes.io/canary-by-cookie"] == "canary"
    assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "20"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "web-canary"
    service = json.loads(
        kubectl(lab1, "-n", ns, "get", "service", "web-canary", "-o", "json").stdout
    )
    assert service["spec"]["selector"]["wharf.io/track"] == "canary"
    assert deployment(kubectl, lab1, ns, "web-canary") is not None

    path = f"/api/v1/tenants/{tenant}/applications/web/release"
    aborted = dev.ok("POST", f"{path}/abort")
    assert aborted["phase"] == "Aborted"
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary") is None, what="canary gone")
    for kind in ("ingress", "service"):
        gone = kubectl(lab1, "-n", ns, "get", kind, "web-canary", check=False)
        assert gone.returncode != 0
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))
    assert dev.request("POST", f"{path}/promote").status_code == 409


def grant_host(wharf: Wharf, tenant: str, host: str) -> None:
    grant = {"tenant": tenant, "domains": [host]}
    wharf.admin.ok(
        "PUT",
        f"/api/v1/domaingrants/{tenant}",
        json={"kind": "DomainGrant", "metadata": {"name": tenant}, "spec": grant},
    )


def route_through_gateway(wharf: Wharf, names) -> None:
    """Each cluster's routes become HTTPRoutes on a Gateway (its spec.routing)."""
    for name in names:
        body = manifest(wharf.admin.ok("GET", f"/api/v1/clusters/{name}"))
        body["spec"]["routing"] = {"gateway": {"name": "edge", "namespace": "wharf-gateways"}}
        wharf.admin.ok("PUT", f"/api/v1/clusters/{name}", json=body)
    for name in names:
        wait_for(
            lambda n=name: (
                wharf.admin.ok("GET", f"/api/v1/clusters/{n}")["status"]
                .get("routing", {})
                .get("routes")
                == "HTTPRoute"
            ),
            what=f"{name} routes with a Gateway",
        )


def backends(kubectl, cluster: LabCluster, ns: str, route: str) -> list[tuple[Any, ...]]:
    """(header matches, [(backend, weight)]) of each rule of an HTTPRoute, as stored."""
    got = json.loads(kubectl(cluster, "-n", ns, "get", "httproute", route, "-o", "json").stdout)
    return [
        (
            [h for m in rule.get("matches", []) for h in m.get("headers", [])],
            [(b["name"], b.get("weight")) for b in rule["backendRefs"]],
        )
        for rule in got["spec"]["rules"]
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_gateway_api_canary_shifts_httproute_weights(wharf: Wharf, shop, clusters, kubectl):
    """With trafficRouting.gatewayAPI, each weight step is the backendRefs' weights of the
    host's HTTPRoute (read back from the API server, which checked it against the Gateway API
    CRD's schema), a header and a cookie are rules to the canary alone; abort gives the
    stable Service all of it again."""
    tenant, dev, ns = shop
    host = f"web.{tenant}.example"
    grant_host(wharf, tenant, host)
    route_through_gateway(wharf, clusters)
    path = f"/api/v1/tenants/{tenant}/applications/web"
    routes = [{"host": host, "service": "web", "port": 80}]
    body = canary_app(tenant, IMAGE)
    body["spec"]["routes"] = routes
    dev.ok("PUT", path, json=body)
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))
    routing = {
        "gatewayAPI": {
            "host": host,
            "header": {"name": "X-Canary", "value": "yes"},
            "cookie": {"name": "canary"},
        }
    }
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    body = canary_app(tenant, NEW_IMAGE, canary={"steps": steps, "trafficRouting": routing})
    body["spec"]["routes"] = routes
    dev.ok("PUT", path, json=body)
    lab1, name = clusters["lab1"], route_name("web", host)
    release_path = f"{path}/release"

    def at_pause(step: int):
        def check(r: dict[str, Any]) -> bool:
            lab1_state = r["clusters"]["lab1"]
            return lab1_state["phase"] == "WaitingPromote" and lab1_state["step"] == step

        return check

    header = {"type": "Exact", "name": "X-Canary", "value": "yes"}
    cookie = {"type": "RegularExpression", "name": "Cookie", "value": r"(^|;\s*)canary=always(;|$)"}
    for step, weight in ((1, 20), (3, 50)):
        wait_release(dev, tenant, f"paused at step {step}", at_pause(step))
        assert backends(kubectl, lab1, ns, name) == [
            ([header], [("web-canary", 1)]),
            ([cookie], [("web-canary", 1)]),
            ([], [("web", 100 - weight), ("web-canary", weight)]),
        ]
        if step == 1:
            dev.ok("POST", f"{release_path}/promote")
    # The clusters of later waves are untouched: their route leads to the stable Service.
    assert backends(kubectl, clusters["lab2"], ns, name) == [([], [("web", 1)])]

    dev.ok("POST", f"{release_path}/abort")
    wait_for(
        lambda: backends(kubectl, lab1, ns, name) == [([], [("web", 1)])],
        what="the HTTPRoute back to the stable Service alone",
    )
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-canary") is None, what="canary gone")
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_canary_cannot_route_another_tenants_host(wharf: Wharf, shop):
    """Tenant B (shop's tenant) cannot point its canary at a host granted to tenant A, nor
    route it: each a 422 naming the field, and nothing is created."""
    tenant, dev, _ns = shop
    other = wharf.tenant({"cpu": "1"})
    theirs, mine = f"shop.{other}.example", f"web.{tenant}.example"
    grant_host(wharf, other, theirs)
    grant_host(wharf, tenant, mine)
    path = f"/api/v1/tenants/{tenant}/applications/web"

    def refused(routes: list[str], routing: dict[str, Any], field: str) -> None:
        steps = [{"setWeight": 20}, {"pause": {}}]
        body = canary_app(tenant, IMAGE, canary={"steps": steps, "trafficRouting": routing})
        body["spec"]["routes"] = [{"host": h, "service": "web", "port": 80} for h in routes]
        answer = dev.request("PUT", path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field, answer.text

    where = "spec.strategy.canary.trafficRouting"
    refused([mine], {"nginx": {"host": theirs}}, f"{where}.nginx.host")
    refused([], {"nginx": {"host": theirs}}, f"{where}.nginx.host")
    refused([mine], {"gatewayAPI": {"host": theirs}}, f"{where}.gatewayAPI.host")
    refused([theirs], {"nginx": {"host": theirs}}, "spec.routes[0].host")
    # Gateway API only where the environment's clusters route with a Gateway; one router.
    refused([mine], {"gatewayAPI": {"host": mine}}, f"{where}.gatewayAPI")
    refused([mine], {"nginx": {"host": mine}, "gatewayAPI": {"host": mine}}, where)
    assert dev.get(path).status_code == 404


def pods(kubectl, cluster: LabCluster, ns: str, selector: dict[str, str]) -> dict[str, str]:
    """Name: image of the pods a selector picks (what a Service with it sends traffic to)."""
    text = ",".join(f"{k}={v}" for k, v in selector.items())
    listing = json.loads(kubectl(cluster, "-n", ns, "get", "pods", "-l", text, "-o", "json").stdout)
    return {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in listing["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def selector(kubectl, cluster: LabCluster, ns: str, name: str) -> dict[str, str]:
    got = json.loads(kubectl(cluster, "-n", ns, "get", "service", name, "-o", "json").stdout)
    result: dict[str, str] = got["spec"]["selector"]
    return result


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_blue_green_previews_switches_and_switches_back_without_new_pods(
    wharf: Wharf, shop, clusters, kubectl
):
    tenant, dev, ns = shop
    first_delivery(wharf, kubectl, clusters, tenant, dev, ns)
    lab1 = clusters["lab1"]
    strategy = {"type": "blueGreen", "blueGreen": {"scaleDownDelaySeconds": 3600}}
    deliver(wharf, dev, tenant, NEW_IMAGE, **strategy)
    wait_release(
        dev, tenant, "preview up", lambda r: r["clusters"]["lab1"]["phase"] == "WaitingPromote"
    )

    # The preview Service reaches only the new version; the live one only the old.
    def serving(service: str, image: str) -> bool:
        found = pods(kubectl, lab1, ns, selector(kubectl, lab1, ns, service))
        return len(found) == 2 and set(found.values()) == {image}

    wait_for(lambda: serving("web-preview", NEW_IMAGE), what="preview pods ready")
    assert serving("web", IMAGE)
    before = set(pods(kubectl, lab1, ns, {"wharf.io/app": "web"}))

    # Promotion switches the live Service's selector to the preview pods.
    path = f"/api/v1/tenants/{tenant}/applications/web/release"
    dev.ok("POST", f"{path}/promote")
    wait_for(lambda: serving("web", NEW_IMAGE), what="live Service on the new version")
    assert selector(kubectl, lab1, ns, "web")["wharf.io/track"] == "preview"

    # Abort switches it back to the old pods at once: a selector change, no pod made.
    dev.ok("POST", f"{path}/abort")
    wait_for(lambda: serving("web", IMAGE), what="live Service back on the old version")
    wait_for(lambda: deployment(kubectl, lab1, ns, "web-preview") is None, what="preview gone")
    after = set(pods(kubectl, lab1, ns, {"wharf.io/app": "web"}))
    assert after <= before  # the preview's pods went, no new pod came
    assert selector(kubectl, lab1, ns, "web") == {"app.kubernetes.io/name": "web"}
    wait_images(kubectl, clusters, ns, everywhere(IMAGE))

    # Deleted, the application takes its releases along at once: one made again under the
    # same name (by anyone who may, in any project) never sees the old one's history.
    app = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("DELETE", app, params={"confirm": "web"})
    gone = dev.request("GET", path)
    assert gone.status_code == 404, gone.text
    again = canary_app(tenant, IMAGE)
    again["spec"]["strategy"] = {"type": "rolling"}
    # Accepted once delivery has taken the old one out of the clusters.
    wait_for(lambda: dev.request("PUT", app, json=again).status_code == 201, what="web again")
    assert dev.request("GET", path).status_code == 404


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
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
    bad = canary_app(tenant, IMAGE)
    bad["spec"]["strategy"]["canary"]["steps"][0] = {"setWeight": 10, "setReplicas": 1}
    refused(bad, "spec.strategy.canary.steps[0]")
    bad = canary_app(tenant, IMAGE)
    del bad["spec"]["strategy"]["canary"]
    refused(bad, "spec.strategy.canary")
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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_release_killed_mid_step_resumes_at_the_same_step(
    lab, database_url, kubectl, tmp_path, exporter, prometheus
):
    """SIGKILL of the server while the canary is up in the first cluster, and again while the
    second cluster is being measured: the release finishes as it would have, each canary
    applied once and removed once, each cluster measured exactly `count` times."""
    server = ServerProcess(tmp_path, database_url, WHARF_PROMETHEUS_URL=prometheus.url)
    server.start()
    try:
        admin = server.login()
        register_clusters(admin, lab)
        tenant = "kill" + os.urandom(3).hex()
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{tenant}",
            json={
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {"quota": {"cpu": "8", "memory": "16Gi"}, "clusters": ["lab1", "lab2"]},
            },
        )
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{tenant}/projects/shop",
            json={
                "kind": "Project",
                "metadata": {"name": "shop"},
                "spec": {
                    "quota": {"cpu": "4", "memory": "8Gi"},
                    "environments": [{"name": "dev", "clusters": ["lab1", "lab2"]}],
                },
            },
        )
        template = {
            "kind": "AnalysisTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {
                "metrics": [
                    {
                        "name": "errors",
                        "query": ERROR_RATE,
                        "interval": 1,
                        "count": 3,
                        "initialDelay": 3,
                        "successCondition": "result < 0.05",
                        "consecutiveErrorLimit": 10,
                    }
                ]
            },
        }
        admin.ok("PUT", f"/api/v1/tenants/{tenant}/analysistemplates/error-rate", json=template)
        ns = f"{tenant}--shop-dev"
        two = {"lab1": lab.cluster("lab1"), "lab2": lab.cluster("lab2")}
        waves = {"waves": [{"clusters": ["lab1"]}, {"clusters": ["lab2"]}]}
        app_path = f"/api/v1/tenants/{tenant}/applications/web"

        def wait_placed() -> bool:
            project = admin.ok("GET", f"/api/v1/tenants/{tenant}/projects/shop")
            return project["status"].get("phase") == "Ready"

        wait_for(wait_placed, what="project placed")
        admin.ok("PUT", app_path, json=canary_app(tenant, IMAGE, **waves))
        wait_images(kubectl, two, ns, {"lab1": IMAGE, "lab2": IMAGE})
        for name in two:
            exporter.serve(ns, "web", name, 2, errors=0.0)
        admin.ok("PUT", app_path, json=canary_app(tenant, NEW_IMAGE, **waves))

        # Kill while the canary is up in lab1 (its step recorded, analysis under way).
        wait_for(lambda: deployment(kubectl, two["lab1"], ns, "web-canary"), what="canary")
        server.kill()
        server.start()

        # Kill again once lab2's analysis has begun.
        def measured_in_lab2() -> bool:
            body = release(admin, tenant)
            return any(m["cluster"] == "lab2" for m in body["measurements"])

        wait_for(measured_in_lab2, timeout=120, what="lab2 measured")
        server.kill()
        server.start()

        done = wait_for(
            lambda: (r := release(admin, tenant))["phase"] in ("Succeeded", "Failed") and r,
            timeout=120,
            what="release finished",
        )
        assert done["phase"] == "Succeeded", done
        assert {c["phase"] for c in done["clusters"].values()} == {"Promoted"}
        for name in two:
            taken = [m for m in done["measurements"] if m["cluster"] == name]
            assert [m["phase"] for m in taken if m["phase"] != "Error"] == ["Successful"] * 3
        wait_images(kubectl, two, ns, {"lab1": NEW_IMAGE, "lab2": NEW_IMAGE})
        for name, cluster in two.items():
            canary_writes = [
                e["verb"]
                for e in cluster_writes(cluster, ns)
                if e.get("objectRef", {}).get("name") == "web-canary"
                and e.get("objectRef", {}).get("resource") == "deployments"
            ]
            assert canary_writes == ["patch", "delete"], (name, canary_writes)

        # The CLI reads the same release.
        shown = subprocess.run(
            [sys.executable, "-m", "wharf", "release", "status", "web", "-t", tenant],
            env={**os.environ, "WHARF_SERVER": server.url, "WHARF_TOKEN": admin.token},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr
        assert "revision 1 -> 2, Succeeded" in shown.stdout
        assert "wave 1 lab2: Promoted" in shown.stdout
    finally:
        server.stop()
