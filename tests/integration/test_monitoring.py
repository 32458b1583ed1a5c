"""The monitoring feed: Wharf's /metrics/workloads, scraped by a real Prometheus, carries each
application's pods (CPU and memory from metrics-server, restarts, readiness), replicas and its
project's quota, labelled by tenant, project, app, cluster and namespace from Wharf's records."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import Monitored, wait_for
from wharf.core.config import Settings
from wharf.lab.lab import USAGE_CPU_ANNOTATION, USAGE_MEMORY_ANNOTATION
from wharf.server import create_app

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

IMAGE = "registry.example/shop/web:1.4.2"


def application(tenant: str, name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "worker", "version": "1.0.0"},  # no autoscaler
            "values": {"name": name, "image": IMAGE, "replicas": replicas},
        },
    }


@pytest.fixture(scope="module")
def shop(monitored: Monitored) -> dict[str, Any]:
    """A tenant's project on both clusters with an application of 2 replicas using 200m and
    300Mi per pod, and a developer of it."""
    wharf = monitored.wharf
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "8", "memory": "16Gi", "pods": "40"})
    wharf.project(
        tenant,
        "shop",
        {"cpu": "4", "memory": "8Gi", "pods": "20"},
        members=[{"user": dev.user, "role": "developer"}],
    )
    wharf.wait_placed(tenant, "shop")
    dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=application(tenant, "web"))
    return {"tenant": tenant, "dev": dev, "namespace": f"{tenant}--shop-dev"}


def use(kubectl, monitored: Monitored, namespace: str, cpu: str, memory: str) -> None:
    for cluster in monitored.wharf.lab.clusters():
        wait_for(
            lambda c=cluster: kubectl(c, "-n", namespace, "get", "pods", "-o", "name").stdout,
            what=f"{cluster.name}: pods of web",
        )
        kubectl(
            cluster,
            "-n",
            namespace,
            "annotate",
            "pods",
            "--all",
            "--overwrite",
            f"{USAGE_CPU_ANNOTATION}={cpu}",
            f"{USAGE_MEMORY_ANNOTATION}={memory}",
        )


def feed(monitored: Monitored) -> str:
    scraper = {"Authorization": f"Bearer {monitored.token}"}
    return httpx.get(f"{monitored.server.url}/metrics/workloads", headers=scraper).text


def by_cluster(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["metric"]["cluster"], []).append(row)
    return out


def test_prometheus_holds_each_pods_use_readiness_restarts_and_the_apps_replicas(
    monitored: Monitored, shop, kubectl
):
    tenant, namespace = shop["tenant"], shop["namespace"]
    use(kubectl, monitored, namespace, "200m", "300Mi")
    cpu_query = f'wharf_pod_cpu_usage_cores{{tenant="{tenant}",app="web"}}'

    def measured() -> list[dict[str, Any]] | None:
        rows = monitored.series(cpu_query)
        clusters = by_cluster(rows)
        fine = len(clusters) == 2 and all(
            len(r) == 2 and all(abs(float(x["value"][1]) - 0.2) < 0.01 for x in r)
            for r in clusters.values()
        )
        return rows if fine else None

    try:
        rows = wait_for(measured, timeout=180, what="both clusters' pods at 200m in Prometheus")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nPrometheus: {monitored.series(cpu_query)}\nfeed:\n{feed(monitored)}"
        ) from None
    labels = rows[0]["metric"]
    assert {k: labels[k] for k in ("tenant", "project", "app", "namespace")} == {
        "tenant": tenant,
        "project": "shop",
        "app": "web",
        "namespace": namespace,
    }
    assert labels["pod"].startswith("web-")

    def series(promql: str) -> dict[tuple[str, str], float]:
        return {
            (r["metric"]["cluster"], r["metric"].get("pod", "")): float(r["value"][1])
            for r in monitored.series(promql)
        }

    memory = series(f'wharf_pod_memory_usage_bytes{{tenant="{tenant}"}}')
    assert len(memory) == 4
    assert set(memory.values()) == {300 * 2**20}
    ready = wait_for(
        lambda: (s := series(f'wharf_pod_ready{{tenant="{tenant}"}}')) and set(s.values()) == {1}
    )
    assert ready
    assert set(series(f'wharf_pod_restarts_total{{tenant="{tenant}"}}').values()) == {0}
    replicas = series(f'wharf_app_replicas{{tenant="{tenant}",app="web"}}')
    assert replicas == {("lab1", ""): 2, ("lab2", ""): 2}
    wait_for(
        lambda: (
            series(f'wharf_app_ready_replicas{{tenant="{tenant}"}}')
            == {("lab1", ""): 2, ("lab2", ""): 2}
        ),
        what="ready replicas 2 in each cluster",
    )
    quota = {
        r["metric"]["resource"]: float(r["value"][1])
        for r in monitored.series(f'wharf_project_quota{{tenant="{tenant}",project="shop"}}')
    }
    assert quota == {"cpu": 4, "memory": 8 * 2**30, "pods": 20}


def test_a_pod_claiming_an_application_outside_its_namespace_is_not_in_the_feed(
    monitored: Monitored, shop, kubectl
):
    """Owners come from Wharf's records: a pod labelled as the tenant's app, in a namespace that
    is not the project's, speaks for nobody."""
    cluster = monitored.wharf.lab.clusters()[0]
    rogue = f"rogue-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", rogue)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-fake", "labels": {"wharf.io/app": "web"}},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
    }
    kubectl(cluster, "-n", rogue, "apply", "-f", "-", stdin=json.dumps(pod))
    # The scrape after the pod exists: the feed has the real pods of web, never this one.
    wait_for(
        lambda: monitored.series(f'wharf_pod_ready{{tenant="{shop["tenant"]}"}}'),
        what="the feed scraped",
    )
    feed = httpx.get(
        f"{monitored.server.url}/metrics/workloads",
        headers={"Authorization": f"Bearer {monitored.token}"},
    ).text
    assert 'pod="web-fake"' not in feed
    assert rogue not in feed
    assert monitored.series(f'{{namespace="{rogue}"}}') == []


def test_the_feed_is_for_the_scraper_and_platform_readers_only(monitored: Monitored, shop):
    url = f"{monitored.server.url}/metrics/workloads"
    assert httpx.get(url).status_code == 401
    bearer = {"Authorization": f"Bearer {shop['dev'].token}"}
    assert httpx.get(url, headers=bearer).status_code == 403  # a tenant's developer
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(url, headers=wrong).status_code == 401
    scraper = {"Authorization": f"Bearer {monitored.token}"}
    answer = httpx.get(url, headers=scraper)
    assert answer.status_code == 200
    assert "wharf_pod_ready" in answer.text


def metrics(api, tenant: str, project: str = "shop", **params: Any) -> httpx.Response:
    return api.get(f"/api/v1/tenants/{tenant}/projects/{project}/metrics", params=params)


def test_a_developer_reads_the_apps_charts_with_the_projects_quota(monitored: Monitored, shop):
    tenant, dev = shop["tenant"], shop["dev"]

    def charted() -> dict[str, Any] | None:
        answer = metrics(dev, tenant, app="web", chart=["cpu", "replicas"]).json()
        assert "charts" in answer, answer
        cpu = answer["charts"][0]
        clusters = {line["labels"]["cluster"] for line in cpu["lines"] if line["points"]}
        return answer if clusters == {"lab1", "lab2"} and cpu["quota"] else None

    answer = wait_for(charted, timeout=120, what="cpu lines of web in both clusters")
    cpu, replicas = answer["charts"]
    assert cpu["unit"] == "cores"
    assert {q["resource"]: q["value"] for q in cpu["quota"]} == {"cpu": 4}
    assert all(line["labels"] == {"cluster": line["labels"]["cluster"]} for line in cpu["lines"])
    assert {q["resource"]: q["value"] for q in replicas["quota"]} == {"pods": 20}
    assert {line["name"] for line in replicas["lines"]} == {"desired", "ready"}
    assert "request" in answer["requestRate"]
    # The project's chart: a line per application.
    project = metrics(dev, tenant, chart="memory").json()["charts"][0]
    assert {line["labels"]["app"] for line in project["lines"]} == {"web"}


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("app", 'x"} or {tenant="other"'),
        ("app", 'web",tenant=~".+'),
        ("app", "web|.*"),
        ("app", "__name__"),
        ("app", '{__name__=~".+"}'),
        ("project", 'shop"}or{project=~".*'),
    ],
)
def test_hostile_selectors_are_refused_naming_the_parameter(
    monitored: Monitored, shop, where: str, value: str
):
    tenant, dev = shop["tenant"], shop["dev"]
    if where == "app":
        answer = metrics(dev, tenant, app=value)
    else:
        answer = metrics(dev, tenant, project=httpx.URL(value).path.replace("/", "%2F"))
    assert answer.status_code in (404, 422), answer.text
    if answer.status_code == 422:
        assert answer.json()["field"] == where


def test_ranges_too_wide_and_steps_too_small_are_refused(monitored: Monitored, shop):
    tenant, dev = shop["tenant"], shop["dev"]
    wide = metrics(dev, tenant, start="2026-01-01T00:00:00Z", end="2026-01-09T00:00:00Z")
    assert wide.status_code == 422
    assert wide.json()["field"] == "start"
    fine = metrics(dev, tenant, start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z", step=1)
    assert fine.status_code == 422
    assert fine.json()["field"] == "step"
    assert "step" in metrics(dev, tenant, step="soon").json()["field"]
    backwards = metrics(dev, tenant, start="2026-01-02T00:00:00Z", end="2026-01-01T00:00:00Z")
    assert backwards.json()["field"] == "end"


def test_another_tenant_gets_404_and_no_series(monitored: Monitored, shop):
    wharf, tenant = monitored.wharf, shop["tenant"]
    stranger = wharf.user()
    other = wharf.tenant({"cpu": "2", "memory": "4Gi"}, admins=[stranger.user])
    wharf.project(other, "shop", {"cpu": "1", "memory": "1Gi"}, api=stranger)
    for path in ("metrics", "top"):
        answer = stranger.get(f"/api/v1/tenants/{tenant}/projects/shop/{path}")
        assert answer.status_code == 404, answer.text
    # Its own project with the same names reads nothing of the first tenant's.
    own = metrics(stranger, other).json()
    assert all(not chart["lines"] for chart in own["charts"])
    assert stranger.get(f"/api/v1/tenants/{other}/projects/shop/top?app=web").status_code == 404


def test_wharf_top_prints_each_pods_use(monitored: Monitored, shop, tmp_path):
    env = {**os.environ, "WHARF_CONFIG": str(tmp_path / "config.yaml")}

    def wharf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wharf", *args], env=env, capture_output=True, text=True
        )

    url = monitored.server.url
    login = wharf("login", "--server", url, "-u", shop["dev"].user, "-p", "password-123")
    assert login.returncode == 0, login.stderr
    out = wharf("top", "web", "-t", shop["tenant"])
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "APP", "CLUSTER", "CPU(cores)"]
    assert len(rows) == 4
    assert {row.split()[2] for row in rows} == {"lab1", "lab2"}
    assert {row.split()[3] for row in rows} == {"200m"}
    assert {row.split()[4] for row in rows} == {"300Mi"}


# -- the console's charts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        yield chromium
        chromium.close()


def signed_in(browser, url: str, user: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/console/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill("password-123")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/$"))
    return page


def test_a_developer_sees_charts_with_data_and_another_tenant_gets_404(
    monitored: Monitored, shop, browser
):
    from playwright.sync_api import expect

    tenant, url = shop["tenant"], monitored.server.url
    path = f"/console/tenants/{tenant}/projects/shop/metrics"
    wait_for(
        lambda: (
            all(
                line["points"]
                for c in metrics(shop["dev"], tenant, app="web", chart="cpu").json()["charts"]
                for line in c["lines"]
            )
            and metrics(shop["dev"], tenant, app="web", chart="cpu").json()["charts"][0]["lines"]
        ),
        what="web's CPU in Prometheus",
    )
    page = signed_in(browser, url, shop["dev"].user)
    page.goto(f"{url}{path}?app=web&range=15m")
    cpu = page.locator('svg[data-chart="cpu"]')
    expect(cpu).to_be_visible()
    assert cpu.locator("polyline.series").count() == 2  # one line per cluster
    assert cpu.locator('line.quota[data-resource="cpu"]').count() == 1
    expect(page.locator('svg[data-chart="replicas"] line.quota')).to_have_count(1)
    # The range is chosen on the page.
    page.locator('select[name="range"]').select_option("6h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"range=6h"))
    expect(page.locator('svg[data-chart="memory"] polyline.series')).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-metrics.png"), full_page=True)
    # The project's page: a line per application.
    page.goto(f"{url}{path}")
    expect(page.locator('svg[data-chart="cpu"] polyline.series')).to_have_count(1)
    page.close()

    wharf = monitored.wharf
    viewer = wharf.user()
    other = wharf.tenant({"cpu": "1", "memory": "1Gi"}, viewers=[viewer.user])
    assert other
    stranger = signed_in(browser, url, viewer.user)
    answer = stranger.goto(f"{url}{path}?app=web")
    assert answer is not None
    assert answer.status == 404
    assert "polyline" not in stranger.content()
    stranger.close()
    assert viewer.get(f"/api/v1/tenants/{tenant}/projects/shop/metrics").status_code == 404


def test_with_prometheus_down_the_panel_says_so_and_the_page_works(monitored: Monitored, shop):
    """Another server process on the same database whose Prometheus does not answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    settings = Settings(
        database_url=monitored.server.env["WHARF_DATABASE_URL"],
        secret_key="integration-test-key",
        prometheus_url=f"http://127.0.0.1:{closed}",
        controllers=False,
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        signed = client.post(
            "/console/login", data={"username": shop["dev"].user, "password": "password-123"}
        )
        assert signed.status_code == 303
        page = client.get(f"/console/tenants/{shop['tenant']}/projects/shop/metrics?app=web")
        assert page.status_code == 200
        assert "Metrics are unavailable: Prometheus did not answer" in page.text
        assert 'aria-label="Time range"' in page.text  # the rest of the page is there
        assert "<svg" not in page.text
        api = client.get(
            f"/api/v1/tenants/{shop['tenant']}/projects/shop/metrics",
            headers={"Authorization": f"Bearer {shop['dev'].token}"},
        )
        assert api.status_code == 503
        assert api.json()["code"] == "metrics-unavailable"
