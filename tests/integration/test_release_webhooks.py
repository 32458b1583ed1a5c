"""Release notifications through a project's webhooks: a real HTTP receiver on loopback gets
each event signed with HMAC-SHA256 (verified here), an unanswered event is retried from the
outbox, a redirect is not followed, and a tenant's URL may not point the server at internal
addresses (only 127.0.0.1, which these tests' server allows)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.conftest import Api, Wharf, wait_for
from wharf.releases.controller import WebhookSender
from wharf.store.tables import release_notifications, resources

SECRET = "a-shared-secret-of-the-receiver"
IMAGE = "registry.example/shop/web:1.4.2"
NEW_IMAGE = "registry.example/shop/web:1.5.0"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers /ok with 200, /flaky with 500 until `fail` runs out, /redirect with a 302."""

    fail: int = 2
    seen: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str) -> list[Received]:
        return [r for r in list(self.seen) if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # One per test: shared by the SQLite and PostgreSQL runs of a test, it held the other
    # run's events under the same paths.
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.seen.append(Received(self.path, dict(self.headers), body))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", state.url("/stolen"))
            elif self.path == "/flaky" and state.fail > 0:
                state.fail -= 1
                self.send_response(500)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def wharf_settings() -> dict[str, Any]:
    return {"outbound_allow": "127.0.0.1"}


def webhook(name: str, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"project": "shop", "url": url, "secret": SECRET}
    if events is not None:
        body["events"] = events
    return {"kind": "ReleaseWebhook", "metadata": {"name": name}, "spec": body}


def app(tenant: str, image: str) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": "web", "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": image, "replicas": 1},
            "strategy": {"type": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        },
    }


def signed(received: Received) -> dict[str, Any]:
    """The event, once its signature checks out against the shared secret."""
    want = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Wharf-Signature-256"], want)
    event: dict[str, Any] = json.loads(received.body)
    assert received.headers["X-Wharf-Event"] == event["event"]
    return event


def test_release_events_reach_the_projects_webhooks_signed(wharf: Wharf, receiver: Receiver):
    dev, viewer = wharf.user(), wharf.user()
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    members = [{"user": dev.user, "role": "developer"}, {"user": viewer.user, "role": "viewer"}]
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi", "pods": "10"}, members=members)
    wharf.project(tenant, "other", {"cpu": "1", "memory": "2Gi", "pods": "5"})
    wharf.wait_placed(tenant, "shop")
    hooks = f"/api/v1/tenants/{tenant}/releasewebhooks"

    # Internal addresses are refused (422 naming spec.url), even by the platform admin.
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://127.0.0.2:9/hook",
        "http://[::1]:9/hook",
        "http://metadata.google.internal/",
        "file:///etc/passwd",
    ):
        answer = wharf.admin.put(f"{hooks}/bad", webhook("bad", url))
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["field"] == "spec.url", url
    # Only the project's admins manage its webhooks: a developer or viewer may not (403),
    # another tenant's admin does not see the tenant at all (404).
    outsider = wharf.user()
    wharf.tenant({"cpu": "1", "memory": "1Gi", "pods": "2"}, admins=[outsider.user])
    assert dev.put(f"{hooks}/mine", webhook("mine", receiver.url("/ok"))).status_code == 403
    assert viewer.put(f"{hooks}/mine", webhook("mine", receiver.url("/ok"))).status_code == 403
    assert outsider.put(f"{hooks}/mine", webhook("mine", receiver.url("/ok"))).status_code == 404
    assert wharf.admin.get(f"{hooks}/bad").status_code == 404  # nothing was stored

    wharf.admin.ok("PUT", f"{hooks}/all", json=webhook("all", receiver.url("/ok")))
    wharf.admin.ok(
        "PUT", f"{hooks}/done", json=webhook("done", receiver.url("/flaky"), ["completed"])
    )
    wharf.admin.ok(
        "PUT", f"{hooks}/moved", json=webhook("moved", receiver.url("/redirect"), ["started"])
    )
    elsewhere = webhook("elsewhere", receiver.url("/other"))
    elsewhere["spec"]["project"] = "other"
    wharf.admin.ok("PUT", f"{hooks}/elsewhere", json=elsewhere)
    # Members read a webhook, never its secret; it is sealed in the database.
    shown = viewer.ok("GET", f"{hooks}/all")
    assert SECRET not in json.dumps(shown)
    with wharf.platform.db.reader() as session:
        rows = session.execute(
            select(resources.c.spec).where(
                resources.c.kind == "ReleaseWebhook", resources.c.tenant == tenant
            )
        ).all()
    assert rows
    assert all(r.spec["secret"].startswith("sealed:") for r in rows)

    path = f"/api/v1/tenants/{tenant}/applications/web"
    dev.ok("PUT", path, json=app(tenant, IMAGE))
    dev.ok("PUT", path, json=app(tenant, NEW_IMAGE))

    def events(path: str) -> list[dict[str, Any]]:
        return [signed(r) for r in receiver.got(path)]

    def kinds() -> list[str]:
        return sorted(e["event"] for e in events("/ok"))

    wait_for(
        lambda: kinds() == ["paused", "paused", "started", "stepPassed", "stepPassed"],
        timeout=90,
        what="started, a step passed and paused in both clusters",
    )
    started = next(e for e in events("/ok") if e["event"] == "started")
    assert started["application"] == "web"
    assert started["revision"] == 2
    assert started["tenant"] == tenant
    assert started["project"] == "shop"
    assert {e["cluster"] for e in events("/ok") if e["event"] == "paused"} == {"lab1", "lab2"}

    dev.ok("POST", f"{path}/release/promote")
    wait_for(lambda: "completed" in kinds(), timeout=120, what="completed")
    # The flaky receiver answered 500 twice: the same event (same delivery id) came again
    # until it was taken, and only the event it asked for.
    wait_for(lambda: len(receiver.got("/flaky")) == 3, timeout=30, what="retried twice")
    tries = receiver.got("/flaky")
    assert {r.headers["X-Wharf-Delivery"] for r in tries} == {tries[0].headers["X-Wharf-Delivery"]}
    assert [signed(r)["event"] for r in tries] == ["completed"] * 3
    # A redirect is not followed: the webhook is told once per try, its target never.
    assert [signed(r)["event"] for r in receiver.got("/redirect")][:1] == ["started"]
    assert receiver.got("/stolen") == []
    assert receiver.got("/other") == []  # another project's webhook hears nothing of this one
    with wharf.platform.db.reader() as session:
        moved = session.execute(
            select(release_notifications).where(
                release_notifications.c.tenant == tenant,
                release_notifications.c.webhook == "moved",
            )
        ).one()
    assert moved.delivered_at is None
    assert "302" in moved.last_error


def release_phase(api: Api, tenant: str) -> str | None:
    answer = api.get(f"/api/v1/tenants/{tenant}/applications/web/release")
    return answer.json()["phase"] if answer.status_code == 200 else None


def test_an_accepted_event_outlives_the_sender(wharf: Wharf, receiver: Receiver):
    """Events are rows: with the server's sender gone (as if the process died), a new one on
    the same database (a restarted server) delivers what was accepted."""
    platform = wharf.platform
    tasks = [t for t in platform._tasks if t.get_name() == "release-webhooks"]
    assert tasks
    for task in tasks:
        task.get_loop().call_soon_threadsafe(task.cancel)
    wait_for(lambda: all(t.done() for t in tasks), what="the sender stopped")
    tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
    wharf.project(tenant, "shop", {"cpu": "2", "memory": "4Gi", "pods": "10"})
    wharf.wait_placed(tenant, "shop")
    wharf.admin.ok(
        "PUT",
        f"/api/v1/tenants/{tenant}/releasewebhooks/later",
        json=webhook("later", receiver.url("/later"), ["started"]),
    )
    path = f"/api/v1/tenants/{tenant}/applications/web"
    wharf.admin.ok("PUT", path, json=app(tenant, IMAGE))
    wharf.admin.ok("PUT", path, json=app(tenant, NEW_IMAGE))
    wait_for(lambda: release_phase(wharf.admin, tenant) == "Progressing", what="a release")

    def accepted() -> bool:
        with platform.db.reader() as session:
            rows = session.execute(
                select(release_notifications).where(release_notifications.c.tenant == tenant)
            ).all()
        return len(rows) == 1 and rows[0].delivered_at is None

    wait_for(accepted, what="the started event accepted")
    assert receiver.got("/later") == []
    restarted = WebhookSender(platform.resources, platform.webhook_rules, platform.outbound)

    async def send() -> int:
        try:
            return await restarted.send_due()
        finally:
            await restarted.stop()

    assert asyncio.run(send()) >= 1
    assert [signed(r)["event"] for r in receiver.got("/later")] == ["started"]
