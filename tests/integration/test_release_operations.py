"""Release operations beyond promote/pause/resume/abort: skip-analysis (audited as such),
retry (a failed or aborted release from its first step), and maxParallel within a wave. No
Prometheus is configured, so an analysis only errs: it never passes by itself."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.conftest import Api, Wharf, wait_for

IMAGE = "registry.example/shop/web:1.4.2"
NEW_IMAGE = "registry.example/shop/web:1.5.0"
TEMPLATE = {
    "kind": "AnalysisTemplate",
    "metadata": {"name": "errors"},
    "spec": {
        "metrics": [
            {
                "name": "errors",
                "query": 'sum(rate(http_requests_total{app="${app}"}[1m]))',
                "interval": 1,
                "count": 3,
                "successCondition": "result < 1",
                "consecutiveErrorLimit": 1000,
            }
        ]
    },
}


def app(tenant: str, image: str) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"analysis": {"templates": ["errors"]}}, {"pause": {}}]
    return {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": image, "replicas": 1},
            "strategy": {
                "type": "canary",
                "canary": {"steps": steps},
                "waves": [{"clusters": ["lab1", "lab2"], "maxParallel": 1}],
            },
        },
    }


def release(api: Api, tenant: str) -> dict[str, Any]:
    return api.ok("GET", f"/api/v1/tenants/{tenant}/applications/web/release")


def wait_clusters(api: Api, tenant: str, what: str, check: Any) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        answer = api.get(f"/api/v1/tenants/{tenant}/applications/web/release")
        body = answer.json() if answer.status_code == 200 else None
        if body is None or body["revision"] != 2:
            return None
        return body if check(body["clusters"], body) else None

    return wait_for(seen, timeout=120, what=what)  # type: ignore[no-any-return]


def has_canary(kubectl: Any, cluster: Any, namespace: str) -> bool:
    got = kubectl(cluster, "-n", namespace, "get", "deployment", "web-canary", check=False)
    return got.returncode == 0


def test_skip_analysis_retry_and_max_parallel(wharf: Wharf, kubectl: Any):
    dev, viewer = wharf.user(), wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    members = [{"user": dev.user, "role": "developer"}, {"user": viewer.user, "role": "viewer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi", "pods": "10"}, members=members)
    wharf.wait_placed(tenant, "shop")
    wharf.admin.ok("PUT", f"/api/v1/tenants/{tenant}/analysistemplates/errors", json=TEMPLATE)
    path = f"/api/v1/tenants/{tenant}/applications/web"
    ns = f"{tenant}--shop-dev"
    lab = {c.name: c for c in wharf.lab.clusters()}
    dev.ok("PUT", path, json=app(tenant, IMAGE))
    dev.ok("PUT", path, json=app(tenant, NEW_IMAGE))

    # maxParallel 1: one cluster runs its steps, the other waits untouched.
    body = wait_clusters(
        dev,
        tenant,
        "one cluster at the analysis, one pending",
        lambda cs, _: (
            sorted((c["phase"], c["step"]) for c in cs.values())
            == [("Pending", 0), ("Progressing", 1)]
        ),
    )
    first = next(n for n, c in body["clusters"].items() if c["phase"] == "Progressing")
    second = next(n for n in body["clusters"] if n != first)
    assert has_canary(kubectl, lab[first], ns)
    assert not has_canary(kubectl, lab[second], ns)
    assert all(m["phase"] == "Error" for m in body["measurements"])  # no Prometheus: no pass

    # Skipping the analysis: not for a viewer (403), audited for the developer.
    skip = f"{path}/release/skip-analysis"
    assert viewer.request("POST", skip).status_code == 403
    skipped = dev.ok("POST", skip)
    assert skipped["clusters"][first]["skippedAnalysis"] == [1]
    wait_clusters(
        dev,
        tenant,
        "past the analysis, paused",
        lambda cs, _: cs[first]["phase"] == "WaitingPromote",
    )
    assert dev.request("POST", skip).status_code == 409  # nobody is at an analysis now
    trail = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
    actions = {(e["action"], e["outcome"], e["actor"]) for e in trail}
    assert ("release-skip-analysis", "allowed", dev.user) in actions
    assert ("release-skip-analysis", "denied", viewer.user) in actions

    # Promoted, the first cluster frees the wave's one place: the second starts.
    dev.ok("POST", f"{path}/release/promote")
    wait_clusters(
        dev,
        tenant,
        "the second cluster under way",
        lambda cs, _: cs[first]["phase"] == "Promoted" and cs[second]["phase"] != "Pending",
    )

    # Retry: only a failed or aborted release; it runs again from its first step.
    assert dev.request("POST", f"{path}/release/retry").status_code == 409
    dev.ok("POST", f"{path}/release/abort")
    wait_for(lambda: not has_canary(kubectl, lab[second], ns), timeout=60, what="rolled back")
    assert viewer.request("POST", f"{path}/release/retry").status_code == 403
    retried = dev.ok("POST", f"{path}/release/retry")
    assert retried["phase"] == "Progressing"
    assert {c["phase"] for c in retried["clusters"].values()} == {"Pending"}
    body = wait_clusters(
        dev,
        tenant,
        "the retry back at the analysis in one cluster",
        lambda cs, b: (
            b["phase"] == "Progressing"
            and sorted((c["phase"], c["step"]) for c in cs.values())
            == [("Pending", 0), ("Progressing", 1)]
        ),
    )
    again = next(n for n, c in body["clusters"].items() if c["phase"] == "Progressing")
    assert has_canary(kubectl, lab[again], ns)
    trail = wharf.admin.ok("GET", "/api/v1/audit", params={"tenant": tenant})["items"]
    assert any(e["action"] == "release-retry" and e["outcome"] == "allowed" for e in trail)


@pytest.fixture(scope="module")
def metrics_service() -> Iterator[tuple[int, list[str]]]:
    """A JSON service on loopback: /rate/<cluster> answers lab1's canary good, lab2's bad."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            rate = 0.9 if self.path.startswith("/rate/lab2") else 0.01
            body = json.dumps({"data": {"series": [{"errorRate": rate}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], asked
    server.shutdown()
    server.server_close()


@pytest.fixture
def wharf_settings() -> dict[str, Any]:
    return {"outbound_allow": "127.0.0.1"}  # the loopback JSON service above, nothing else


def web_template(url: str, **metric: Any) -> dict[str, Any]:
    check = {
        "name": "errors",
        "web": {"url": url, "jsonPath": "$.data.series[0].errorRate"},
        "interval": 1,
        "count": 2,
        "successCondition": "result < 0.05",
        "failureCondition": "result > 0.5",
        **metric,
    }
    return {"kind": "AnalysisTemplate", "metadata": {"name": "web"}, "spec": {"metrics": [check]}}


def test_a_web_analysis_judges_each_cluster_from_json(wharf: Wharf, metrics_service):
    port, asked = metrics_service
    dev = wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    members = [{"user": dev.user, "role": "developer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi", "pods": "10"}, members=members)
    wharf.wait_placed(tenant, "shop")
    templates = f"/api/v1/tenants/{tenant}/analysistemplates/web"
    # The same guard as webhooks: internal addresses, and a metric with no or two providers.
    for url in ("http://10.0.0.1/rate", "http://169.254.169.254/", "http://127.0.0.2:9/"):
        answer = wharf.admin.put(templates, web_template(url))
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "spec.metrics[0].web.url"
    both = web_template(f"http://127.0.0.1:{port}/rate", query="up")
    assert wharf.admin.put(templates, both).status_code == 422
    url = f"http://127.0.0.1:{port}/rate/${{cluster}}?revision=${{revision}}&ns=${{namespace}}"
    wharf.admin.ok("PUT", templates, json=web_template(url))

    path = f"/api/v1/tenants/{tenant}/applications/web"
    body = app(tenant, IMAGE)
    body["spec"]["strategy"] = {
        "type": "canary",
        "canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["web"]}}]},
        "onFailure": "clusterOnly",
    }
    dev.ok("PUT", path, json=body)
    body["spec"]["values"]["image"] = NEW_IMAGE
    dev.ok("PUT", path, json=body)
    done = wait_clusters(
        dev,
        tenant,
        "lab1 promoted, lab2 failed",
        lambda cs, _: cs["lab1"]["phase"] == "Promoted" and cs["lab2"]["phase"] == "Failed",
    )
    by_cluster: dict[str, list[tuple[str, float]]] = {}
    for m in done["measurements"]:
        by_cluster.setdefault(m["cluster"], []).append((m["phase"], m["value"]))
    assert by_cluster["lab1"] == [("Successful", 0.01), ("Successful", 0.01)]
    assert by_cluster["lab2"][0] == ("Failed", 0.9)
    assert f"/rate/lab1?revision=2&ns={tenant}--shop-dev" in asked
