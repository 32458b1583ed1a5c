"""The console's incident pages over HTTP, without a browser: a tenant's list (paginated,
filtered by project and state, only that tenant's), an incident's page with its timeline and
links, and its forms (acknowledge, resolve, assign, note) going through the same service and
checks as the REST API: CSRF, a viewer reads but may not act, another tenant finds nothing.
What an alert or a person wrote is shown as text, never as markup.

Incidents are made the way Alertmanager makes them: posts to the receiver with Wharf's token.
A real server app on SQLite and PostgreSQL, controllers off (no cluster needed)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.integration.conftest import ADMIN_PASSWORD
from wharf.core.config import Settings
from wharf.server.app import create_app

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ROW = re.compile(r'href="/console/tenants/([\w-]+)/incidents/(\d+)"')


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key="console-test-key",
        controllers=False,
        alert_receiver_token_file=tmp_path / "receiver.token",
    )
    application = create_app(settings)
    with TestClient(application):  # runs the app's start-up once; callers share it
        yield application


@dataclass
class Person:
    """A user's own browser: its session cookie and the pages' CSRF token."""

    client: TestClient
    csrf: str

    def get(self, path: str, **params: str) -> Any:
        # No `params` when none: httpx would drop the query the path already has.
        return self.client.get(path, params=params) if params else self.client.get(path)

    def post(self, path: str, **form: str) -> Any:
        return self.client.post(path, data={"csrf": self.csrf, **form})


def browser(app: FastAPI, user: str, password: str) -> Person:
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/console/login", data={"username": user, "password": password})
    assert answer.status_code == 303, answer.text
    match = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', client.get("/console/").text)
    assert match, "every signed-in page carries the CSRF token"
    return Person(client, match.group(1))


@dataclass
class Scene:
    app: FastAPI
    api: TestClient
    admin: dict[str, str]
    tenant: str
    other: str

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        answer = self.api.request(method, path, headers=self.admin, **kw)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def receive(self, alerts: list[dict[str, Any]]) -> dict[str, int]:
        token = self.app.state.alerting.token
        body = {"version": "4", "status": alerts[0]["status"], "alerts": alerts}
        answer = self.api.post(
            "/api/v1/alerting/receiver", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, int] = answer.json()
        return result

    def incidents(self, tenant: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ok(
            "GET", f"/api/v1/tenants/{tenant}/incidents", params=params
        )["items"]
        return items


def alert(tenant: str, project: str, cluster: str, **labels: str) -> dict[str, Any]:
    summary = labels.pop("summary", "web restarts")
    return {
        "status": "firing",
        "labels": {
            "tenant": tenant,
            "project": project,
            "wharf_rule": "restarts",
            "app": "web",
            "cluster": cluster,
            **labels,
        },
        "annotations": {"summary": summary},
    }


@pytest.fixture
def scene(app: FastAPI) -> Scene:
    api = TestClient(app)
    answer = api.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    admin = {"Authorization": f"Bearer {answer.json()['token']}"}
    s = Scene(app, api, admin, f"t{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}")
    for user in ("dev", "viewer", "stranger"):
        s.ok("POST", "/api/v1/users", json={"name": user, "password": "password-123"})
    members = {
        (s.tenant, "shop"): [
            {"user": "dev", "role": "developer"},
            {"user": "viewer", "role": "viewer"},
        ],
        (s.tenant, "back"): [{"user": "dev", "role": "developer"}],
        (s.other, "shop"): [{"user": "stranger", "role": "developer"}],
    }
    for tenant in (s.tenant, s.other):
        s.ok("PUT", f"/api/v1/tenants/{tenant}", json=manifest("Tenant", tenant, {}))
    for (tenant, project), people in members.items():
        spec = {"members": people}
        body = manifest("Project", project, spec)
        s.ok("PUT", f"/api/v1/tenants/{tenant}/projects/{project}", json=body)
        rule = {"project": project, "template": "podRestarting", "severity": "critical"}
        name = "restarts" if project == "shop" else "restarts-back"
        body = manifest("AlertRule", name, rule)
        s.ok("PUT", f"/api/v1/tenants/{tenant}/alertrules/{name}", json=body)
    return s


def manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name}, "spec": spec}


def test_the_list_is_the_tenants_own_paginated_and_filtered(scene: Scene):
    s = scene
    # 55 incidents in the tenant's shop (one per cluster label), one in its project back,
    # and one in the other tenant that no page of this tenant may show.
    assert s.receive([alert(s.tenant, "shop", f"c{i:02d}") for i in range(55)])["opened"] == 55
    back = alert(s.tenant, "back", "c00", wharf_rule="restarts-back")
    assert s.receive([back])["opened"] == 1
    assert s.receive([alert(s.other, "shop", "secret-cluster")])["opened"] == 1
    dev = browser(s.app, "dev", "password-123")

    first = dev.get("/console/incidents", tenant=s.tenant)
    assert first.status_code == 200, first.text
    assert 'href="/console/incidents"' in first.text  # the navigation's link
    rows = ROW.findall(first.text)
    assert len(rows) == 50
    assert {t for t, _ in rows} == {s.tenant}
    ids = [int(i) for _, i in rows]
    assert ids == sorted(ids, reverse=True)  # newest first
    following = re.search(r'href="(/console/incidents\?[^"]+)" rel="next"', first.text)
    assert following, "a full page links to the next"
    second = dev.get(following.group(1).replace("&amp;", "&"))
    more = [int(i) for _, i in ROW.findall(second.text)]
    assert len(more) == 6
    assert max(more) < min(ids)
    assert 'rel="next"' not in second.text
    assert "secret-cluster" not in first.text + second.text

    shop_only = ROW.findall(dev.get("/console/incidents", tenant=s.tenant, project="back").text)
    assert len(shop_only) == 1
    # The viewer of shop does not read project back: not in its list.
    viewer = browser(s.app, "viewer", "password-123")
    seen = viewer.get("/console/incidents", tenant=s.tenant)
    assert seen.status_code == 200
    assert "restarts-back" not in seen.text
    # The API pages the same way.
    page = s.ok("GET", f"/api/v1/tenants/{s.tenant}/incidents", params={"limit": "50"})
    assert [i["id"] for i in page["items"]] == ids
    token = page["metadata"]["continue"]
    rest = s.ok("GET", f"/api/v1/tenants/{s.tenant}/incidents", params={"continue": token})
    assert [i["id"] for i in rest["items"]] == more
    assert rest["metadata"]["continue"] is None
    bad = s.api.get(
        f"/api/v1/tenants/{s.tenant}/incidents", params={"continue": "x"}, headers=s.admin
    )
    assert (bad.status_code, bad.json()["field"]) == (422, "continue")

    # Another tenant's developer finds nothing of this tenant.
    stranger = browser(s.app, "stranger", "password-123")
    assert stranger.get("/console/incidents", tenant=s.tenant).status_code == 404
    own = stranger.get("/console/incidents", tenant=s.other)
    assert {t for t, _ in ROW.findall(own.text)} == {s.other}


def test_people_work_on_an_incident_through_its_page(scene: Scene):
    s = scene
    s.receive([alert(s.tenant, "shop", "lab1")])
    (incident,) = s.incidents(s.tenant)
    url = f"/console/tenants/{s.tenant}/incidents/{incident['id']}"
    dev, viewer = browser(s.app, "dev", "password-123"), browser(s.app, "viewer", "password-123")

    shown = dev.get(url)
    assert shown.status_code == 200, shown.text
    assert f'href="/console/tenants/{s.tenant}/applications/web/logs"' in shown.text
    charts = f"/console/tenants/{s.tenant}/projects/shop/metrics?app=web&amp;cluster=lab1"
    assert f'href="{charts}"' in shown.text
    for action in ("ack", "resolve", "assign", "note"):
        assert f'action="{url}/{action}"' in shown.text

    # A viewer reads, is offered no form, and a post of its own is refused and changes nothing.
    read = viewer.get(url)
    assert read.status_code == 200
    assert 'method="post" action="' + url not in read.text
    for action, form in (("ack", {}), ("resolve", {}), ("note", {"text": "mine"}),
                         ("assign", {"assignee": "viewer"})):  # fmt: skip
        refused = viewer.post(f"{url}/{action}", **form)
        assert refused.status_code == 403, (action, refused.text)
    # Without the CSRF token, not even the developer.
    assert dev.client.post(f"{url}/ack", data={}).status_code == 403
    assert dev.client.post(f"{url}/ack", data={"csrf": "0" * 64}).status_code == 403
    unchanged = s.ok("GET", f"/api/v1/tenants/{s.tenant}/incidents/{incident['id']}")
    assert (unchanged["state"], unchanged["assignee"]) == ("open", "")
    assert [e["action"] for e in unchanged["timeline"]] == ["opened"]

    # Another tenant's user: 404 for the page and every action.
    stranger = browser(s.app, "stranger", "password-123")
    assert stranger.get(url).status_code == 404
    assert stranger.post(f"{url}/resolve").status_code == 404

    # The developer acknowledges, assigns, notes and resolves; each lands on the page again.
    for action, form in (("ack", {"text": "looking"}), ("assign", {"assignee": "dev"}),
                         ("note", {"text": "rolled back"}), ("resolve", {})):  # fmt: skip
        done = dev.post(f"{url}/{action}", **form)
        assert (done.status_code, done.headers["location"]) == (303, url), done.text
    assert dev.post(f"{url}/note", text="  ").status_code == 422  # a note says something
    assert dev.post(f"{url}/ack").status_code == 409  # resolved already
    after = s.ok("GET", f"/api/v1/tenants/{s.tenant}/incidents/{incident['id']}")
    assert (after["state"], after["assignee"]) == ("resolved", "dev")
    assert [(e["actor"], e["action"]) for e in after["timeline"]] == [
        ("alertmanager", "opened"),
        ("dev", "acknowledged"),
        ("dev", "assigned"),
        ("dev", "note"),
        ("dev", "resolved"),
    ]
    page = dev.get(url).text
    assert "rolled back" in page
    assert "looking" in page
    assert f'action="{url}/ack"' not in page
    assert f'action="{url}/resolve"' not in page
    listed = dev.get("/console/incidents", tenant=s.tenant, state="resolved")
    assert [int(i) for _, i in ROW.findall(listed.text)] == [incident["id"]]
    assert ROW.findall(dev.get("/console/incidents", tenant=s.tenant, state="open").text) == []


def test_what_alerts_and_people_wrote_is_text_never_markup(scene: Scene):
    s = scene
    hostile = alert(s.tenant, "shop", "lab1", summary=HOSTILE, evil=HOSTILE)
    s.receive([hostile, alert(s.tenant, "shop", "lab2", app=HOSTILE)])
    items = s.incidents(s.tenant)
    dev = browser(s.app, "dev", "password-123")
    first = next(i for i in items if i["cluster"] == "lab1")
    url = f"/console/tenants/{s.tenant}/incidents/{first['id']}"
    assert dev.post(f"{url}/note", text=HOSTILE).status_code == 303
    pages = [dev.get("/console/incidents", tenant=s.tenant).text]
    pages += [dev.get(f"/console/tenants/{s.tenant}/incidents/{i['id']}").text for i in items]
    for text in pages:
        assert "<script>alert" not in text
        assert "<img src=x" not in text
    assert "&lt;script&gt;alert(" in pages[0]  # the summary, as text
    assert pages[1].count("&lt;script&gt;alert(") + pages[2].count("&lt;script&gt;alert(") >= 3
    # An application label that is no application's name links nowhere.
    odd = next(i for i in items if i["cluster"] == "lab2")
    assert odd["links"] == {}
    odd_page = dev.get(f"/console/tenants/{s.tenant}/incidents/{odd['id']}").text
    assert "/logs" not in odd_page
