"""Must show 4, end to end with real parts: a pod that keeps restarting (its restartCount
raised in the lab cluster, as a kubelet would) shows in Wharf's monitoring feed, a real
Prometheus evaluates the project's podRestarting rule Wharf rendered and fires it, a real
Alertmanager delivers it to Wharf's receiver with Wharf's token, an incident opens, the
project's webhook channel receives it signed, and when the restarts stop the alert resolves
and so does the incident. Short evaluation and group intervals (1 s); every wait is for a
condition, none is a sleep.

The signature is checked here with the test's own HMAC (not Wharf's `sign`), on every delivery
the channel got for the tenant: one unsigned, signed with another key, or over other bytes
fails the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Api, ServerProcess, register_clusters, wait_for
from wharf.lab.alertmanager import Alertmanager
from wharf.lab.prometheus import Prometheus, wharf_feed

IMAGE = "registry.example/shop/web:1.4.2"
SECRET = "the-channels-shared-secret"


def signed(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether the delivery's X-Wharf-Signature-256 is the HMAC-SHA256 of its bytes under
    `secret` (compared in constant time, as a receiver should)."""
    want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Wharf-Signature-256", ""), want)


@dataclass
class Hook:
    """A webhook channel's receiving end on loopback: every delivery, as it came."""

    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    def deliveries(self, tenant: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in list(self.seen) if json.loads(b).get("tenant") == tenant]


@dataclass
class Stack:
    server: ServerProcess
    prometheus: Prometheus
    admin: Api
    hook: Hook


@pytest.fixture(scope="module")
def stack(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("incidents")
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.seen.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = http.server_address[1]
    threading.Thread(target=http.serve_forever, daemon=True).start()

    scrape_token = uuid.uuid4().hex
    server = ServerProcess(workdir, None, WHARF_METRICS_TOKEN=scrape_token)
    token_file = workdir / "receiver.token"
    alertmanager = Alertmanager(
        workdir / "alertmanager", f"{server.url}/api/v1/alerting/receiver", token_file
    )
    rules_dir = workdir / "rules"
    prometheus = Prometheus(
        workdir / "prometheus",
        [],
        "1s",
        [wharf_feed(server.url, scrape_token)],
        rules_dir=rules_dir,
        alertmanager=alertmanager.address,
    )
    server.env.update(
        WHARF_PROMETHEUS_URL=prometheus.url,
        WHARF_ALERT_RULES_DIR=str(rules_dir),
        WHARF_ALERTMANAGER_URL=alertmanager.url,
        WHARF_ALERT_RECEIVER_TOKEN_FILE=str(token_file),
        WHARF_OUTBOUND_ALLOW="127.0.0.1",
        WHARF_LOG_LEVEL="warning",
    )
    try:
        alertmanager.start()
        prometheus.start()
        server.launch()
        server.wait_ready(timeout=300)  # a loaded machine starts an interpreter slowly
        admin = server.login()
        register_clusters(admin, lab)
        yield Stack(server, prometheus, admin, hook)
    finally:
        server.stop()
        prometheus.stop()
        alertmanager.stop()
        http.shutdown()
        http.server_close()


def restart_count(kubectl, cluster, namespace: str, pod: str) -> int:
    out = kubectl(cluster, "-n", namespace, "get", "pod", pod, "-o", "json").stdout
    statuses = json.loads(out).get("status", {}).get("containerStatuses", [])
    return int(statuses[0].get("restartCount", 0)) if statuses else -1


def restart(kubectl, cluster, namespace: str, pod: str, count: int) -> None:
    """What a kubelet reports when the container restarted: a higher restartCount."""
    patch = [{"op": "replace", "path": "/status/containerStatuses/0/restartCount", "value": count}]
    kubectl(
        cluster, "-n", namespace, "patch", "pod", pod, "--subresource=status",
        "--type=json", "-p", json.dumps(patch),
    )  # fmt: skip


def rule_loaded(prometheus: Prometheus, group: str) -> bool:
    body = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
    return any(g["name"] == group for g in body["data"]["groups"])


def put(admin: Api, path: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    admin.ok("PUT", path, json={"kind": kind, "metadata": {"name": name}, "spec": spec})


def test_the_signature_check_refuses_what_wharf_did_not_sign():
    """The check the end-to-end test relies on can fail: unsigned, another key, other bytes."""
    body = b'{"event": "incidentOpened", "id": 1}'
    good = {
        "X-Wharf-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, "sha256").hexdigest()
    }
    assert signed(SECRET, good, body)
    assert not signed(SECRET, {}, body)
    assert not signed("another-key-of-16-chars", good, body)
    assert not signed(SECRET, good, body.replace(b"1", b"2"))
    forged = {"X-Wharf-Signature-256": "sha256=" + hashlib.sha256(body).hexdigest()}
    assert not signed(SECRET, forged, body)


def test_a_restarting_pod_opens_an_incident_tells_the_channel_and_resolves(
    stack: Stack, lab, kubectl
):
    admin = stack.admin
    tenant = "inc" + uuid.uuid4().hex[:6]
    base = f"/api/v1/tenants/{tenant}"
    tenant_spec = {"quota": {"cpu": "8", "memory": "16Gi"}, "clusters": ["lab1", "lab2"]}
    put(admin, base, "Tenant", tenant, tenant_spec)
    project = {
        "quota": {"cpu": "4", "memory": "8Gi"},
        "environments": [{"name": "dev", "clusters": ["lab1"]}],
    }
    put(admin, f"{base}/projects/shop", "Project", "shop", project)
    wait_for(
        lambda: admin.ok("GET", f"{base}/projects/shop")["status"].get("phase") == "Ready",
        what="project placed",
    )
    app = {
        "project": "shop",
        "environment": "dev",
        "template": {"name": "worker", "version": "1.0.0"},
        "values": {"name": "web", "image": IMAGE, "replicas": 1},
    }
    put(admin, f"{base}/applications/web", "Application", "web", app)
    hook_url = f"http://127.0.0.1:{stack.hook.port}/incidents"
    channel = {"project": "shop", "type": "webhook", "url": hook_url, "secret": SECRET}
    put(admin, f"{base}/notificationchannels/oncall", "NotificationChannel", "oncall", channel)
    rule = {
        "project": "shop",
        "template": "podRestarting",
        "params": {"window": "20s", "app": "web"},
        "for": "1s",
        "severity": "critical",
        "summary": "web keeps restarting",
    }
    put(admin, f"{base}/alertrules/restarts", "AlertRule", "restarts", rule)
    wait_for(
        lambda: rule_loaded(stack.prometheus, f"{tenant}/restarts"),
        what="the rule loaded by Prometheus",
    )

    namespace, cluster = f"{tenant}--shop-dev", lab.cluster("lab1")

    def running_pod() -> str | None:
        out = kubectl(cluster, "-n", namespace, "get", "pods", "-o", "json").stdout
        pods = json.loads(out)["items"]
        ready = [p for p in pods if p.get("status", {}).get("containerStatuses")]
        return ready[0]["metadata"]["name"] if ready else None

    pod = wait_for(running_pod, timeout=120, what="the pod of web running")
    incidents = f"{base}/incidents"
    assert admin.ok("GET", incidents)["items"] == []  # nothing fires before it restarts

    # It keeps restarting: each restart seen by the cluster before the next.
    for count in (1, 2, 3):
        restart(kubectl, cluster, namespace, pod, count)
        wait_for(lambda c=count: restart_count(kubectl, cluster, namespace, pod) == c)
    (incident,) = wait_for(
        lambda: admin.ok("GET", incidents)["items"], timeout=120, what="an incident opened"
    )
    assert (incident["rule"], incident["application"], incident["cluster"]) == (
        "restarts",
        "web",
        "lab1",
    )
    assert (incident["state"], incident["severity"]) == ("open", "critical")
    assert incident["summary"] == "web keeps restarting"
    assert incident["resolvedAt"] is None

    # The channel is told, signed with its secret.
    (opened,) = wait_for(
        lambda: stack.hook.deliveries(tenant), what="the notification on the webhook channel"
    )
    headers, body = opened
    assert signed(SECRET, headers, body), headers
    assert not signed(SECRET + "x", headers, body)
    told = json.loads(body)
    assert (told["event"], headers["X-Wharf-Event"]) == ("incidentOpened", "incidentOpened")
    assert (told["id"], told["state"], told["application"]) == (incident["id"], "open", "web")

    # The cause resolved: no more restarts; the increase over the window falls to 0, the alert
    # stops firing, and Alertmanager's resolution resolves the incident.
    resolved = wait_for(
        lambda: (
            (i := admin.ok("GET", f"{incidents}/{incident['id']}"))["state"] == "resolved" and i
        ),
        timeout=120,
        what="the incident resolved",
    )
    assert resolved["resolvedAt"] is not None
    actions = [(e["actor"], e["action"]) for e in resolved["timeline"]]
    assert actions == [("alertmanager", "opened"), ("alertmanager", "resolved")]
    wait_for(
        lambda: len(stack.hook.deliveries(tenant)) >= 2, what="the resolution told on the channel"
    )
    deliveries = stack.hook.deliveries(tenant)
    assert all(signed(SECRET, h, b) for h, b in deliveries)
    assert [json.loads(b)["event"] for _, b in deliveries] == ["incidentOpened", "incidentResolved"]
    # Still one incident: Alertmanager's repeated notifications opened no second one.
    assert [i["id"] for i in admin.ok("GET", incidents)["items"]] == [incident["id"]]
