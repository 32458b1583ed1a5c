"""Console pages over HTTP, without a browser: sign-in redirects, pagination and filters on the
server, CSRF, and answers for wrong input. A real server app on SQLite and PostgreSQL, with its
controllers off (these pages need no cluster)."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select, update

from tests.integration.conftest import ADMIN_PASSWORD
from wharf.core.config import Settings
from wharf.server.app import create_app
from wharf.store.tables import api_tokens


@pytest.fixture
def console(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key="console-test-key",
        controllers=False,
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, user: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    answer = client.post("/console/login", data={"username": user, "password": password})
    assert answer.status_code == 303, answer.text
    page = client.get("/console/")
    match = re.search(r'name="csrf-token" content="([0-9a-f]{64})"', page.text)
    assert match, "every signed-in page carries the CSRF token"
    return match.group(1)


def bearer(client: TestClient) -> dict[str, str]:
    answer = client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_pages_send_strangers_to_the_login_and_back(console: TestClient):
    answer = console.get("/console/applications?tenant=x")
    assert answer.status_code == 303
    assert (
        answer.headers["location"] == "/console/login?next=%2Fconsole%2Fapplications%3Ftenant%3Dx"
    )
    answer = console.post(
        "/console/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/console/audit"},
    )
    assert answer.headers["location"] == "/console/audit"
    # Only the console's own pages: never a redirect to another site.
    for target in ("https://evil.example/", "//evil.example/console/", "/api/v1/users"):
        answer = console.post(
            "/console/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "next": target},
        )
        assert answer.headers["location"] == "/console/", target
    wrong = console.post("/console/login", data={"username": "admin", "password": "nope"})
    assert wrong.status_code == 401
    assert "Wrong username or password." in wrong.text


def test_project_lists_paginate_and_filter_on_the_server(console: TestClient):
    headers = bearer(console)
    for tenant in ("alpha", "beta"):
        console.put(
            f"/api/v1/tenants/{tenant}",
            json={"kind": "Tenant", "metadata": {"name": tenant}, "spec": {}},
            headers=headers,
        ).raise_for_status()
    for i in range(60):
        tenant = "alpha" if i < 55 else "beta"
        console.put(
            f"/api/v1/tenants/{tenant}/projects/p{i:02d}",
            json={"kind": "Project", "metadata": {"name": f"p{i:02d}"}, "spec": {}},
            headers=headers,
        ).raise_for_status()
    sign_in(console)
    first = console.get("/console/projects")
    rows = re.findall(r'href="/console/tenants/(\w+)/projects/(p\d+)"', first.text)
    assert len(rows) == 50
    assert rows[0] == ("alpha", "p00")
    next_link = re.search(r'href="(/console/projects\?continue=[^"]+)" rel="next"', first.text)
    assert next_link, "a full page links to the next"
    second = console.get(next_link.group(1).replace("&amp;", "&"))
    rows = re.findall(r'href="/console/tenants/(\w+)/projects/(p\d+)"', second.text)
    assert rows == [("alpha", f"p{i}") for i in range(50, 55)] + [
        ("beta", f"p{i}") for i in range(55, 60)
    ]
    assert 'rel="next"' not in second.text
    filtered = console.get("/console/projects?tenant=beta")
    rows = re.findall(r'href="/console/tenants/(\w+)/projects/(p\d+)"', filtered.text)
    assert rows == [("beta", f"p{i}") for i in range(55, 60)]


def test_changes_need_the_csrf_token_and_bad_input_says_what_is_wrong(console: TestClient):
    headers = bearer(console)
    console.put(
        "/api/v1/tenants/alpha",
        json={"kind": "Tenant", "metadata": {"name": "alpha"}, "spec": {}},
        headers=headers,
    ).raise_for_status()
    csrf = sign_in(console)
    form = {"yaml": "apiVersion: wharf.io/v1\nkind: Tenant\nmetadata: {name: gamma}\nspec: {}\n"}
    assert console.post("/console/apply", data=form).status_code == 403
    assert console.post("/console/apply", data={**form, "csrf": "0" * 64}).status_code == 403
    assert console.get("/api/v1/tenants/gamma", headers=headers).status_code == 404
    done = console.post("/console/apply", data={**form, "csrf": csrf})
    assert done.status_code == 200
    assert re.search(r"Tenant <a [^>]*>gamma</a> created", done.text)
    # Wrong input: a 4xx that names the field, and nothing changed.
    bad = console.post(
        "/console/apply",
        data={
            "csrf": csrf,
            "yaml": "apiVersion: wharf.io/v1\nkind: Tenant\nmetadata: {name: delta}\n"
            "spec: {quota: {cpu: lots}}\n",
        },
    )
    assert bad.status_code == 422
    assert "spec.quota" in bad.text
    assert console.get("/api/v1/tenants/delta", headers=headers).status_code == 404
    # A rollback to a revision that does not exist, and an unknown application.
    missing = console.post(
        "/console/tenants/alpha/applications/nosuch/rollback",
        data={"csrf": csrf, "revision": "1"},
    )
    assert missing.status_code == 404
    assert "not found" in missing.text
    token = console.post("/console/tokens", data={"csrf": csrf, "name": "ci", "days": "9999"})
    assert token.status_code == 422
    assert "text/html" in token.headers["content-type"]
    assert "days: Input should be less than or equal to 365" in token.text
    audit = console.get("/console/audit?outcome=maybe")
    assert audit.status_code == 422
    assert "outcome: one of allowed, denied, failed" in audit.text


def test_expired_login_tokens_do_not_pile_up(console: TestClient):
    sign_in(console)
    db = console.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        session.execute(
            update(api_tokens)
            .where(api_tokens.c.user == "admin")
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
    sign_in(console)
    with db.reader() as session:
        names = [r.name for r in session.execute(select(api_tokens.c.name))]
    assert names == ["console"]  # the one just made; the expired ones are gone


def test_what_users_wrote_is_shown_as_text_never_as_markup(console: TestClient):
    headers = bearer(console)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    console.put(
        "/api/v1/tenants/alpha",
        json={"kind": "Tenant", "metadata": {"name": "alpha"}, "spec": {"displayName": evil}},
        headers=headers,
    ).raise_for_status()
    sign_in(console)
    for path in ("/console/tenants", "/console/tenants/alpha", "/console/edit/Tenant/-/alpha"):
        page = console.get(path).text
        assert "<script>alert" not in page, path
        assert "<img src=x" not in page, path
        assert "&lt;script&gt;alert(" in page, path


def test_the_bare_address_leads_to_the_console_and_docs_stay(console: TestClient):
    # People type http://127.0.0.1:8700/ rather than the /console/ the README shows.
    for method in ("GET", "HEAD"):
        answer = console.request(method, "/")
        assert answer.status_code == 307, (method, answer.status_code)
        assert answer.headers["location"] == "/console/"
    assert console.get("/console/").headers["location"].startswith("/console/login")
    assert console.get("/docs").status_code == 200
    assert "/" not in console.get("/openapi.json").json()["paths"]


def test_the_yaml_editor_refuses_what_changed_meanwhile_but_not_a_status(console: TestClient):
    headers = bearer(console)
    path = "/api/v1/tenants/alpha"
    tenant = {"kind": "Tenant", "metadata": {"name": "alpha"}, "spec": {"displayName": "A"}}
    console.put(path, json=tenant, headers=headers).raise_for_status()
    csrf = sign_in(console)

    def opened() -> tuple[str, str]:
        page = console.get("/console/edit/Tenant/-/alpha").text
        text = re.search(r'<textarea id="yaml"[^>]*>(.*?)</textarea>', page, re.S)
        seen = re.search(r'name="seen" value="([^"]+)"', page)
        assert text, "the editor shows the manifest"
        assert seen, "the form carries the mark of what it shows"
        return html.unescape(text.group(1)), seen.group(1)

    def submit(text: str, seen: str | None) -> Response:
        form = {"yaml": text, "csrf": csrf, **({"seen": seen} if seen else {})}
        return console.post("/console/edit/Tenant/-/alpha", data=form)

    def stored() -> dict[str, Any]:
        got: dict[str, Any] = console.get(path, headers=headers).json()
        return got

    # A controller writes the status while the editor is open: the edit still lands.
    text, seen = opened()
    assert "resourceVersion" not in text
    service = console.app.state.resources  # type: ignore[attr-defined]
    assert service.write_status("Tenant", "", "alpha", lambda s: {"note": "written meanwhile"})
    answer = submit(text.replace("displayName: A", "displayName: B"), seen)
    assert answer.status_code == 303, answer.text
    assert stored()["spec"]["displayName"] == "B"

    # Someone else changes the spec while it is open: refused, theirs kept, and refused
    # again when sent again from the page that said so.
    text, seen = opened()
    console.put(
        path, json={**tenant, "spec": {"displayName": "theirs"}}, headers=headers
    ).raise_for_status()
    answer = submit(text.replace("displayName: B", "displayName: mine"), seen)
    assert answer.status_code == 409
    assert "changed by someone else since you opened it" in answer.text
    assert f'name="seen" value="{seen}"' in answer.text
    assert submit(text.replace("displayName: B", "displayName: mine"), seen).status_code == 409
    assert stored()["spec"]["displayName"] == "theirs"

    # Only a label changed (no new generation): refused all the same, the label kept.
    text, seen = opened()
    labelled = {**tenant, "metadata": {"name": "alpha", "labels": {"tier": "quarantined"}}}
    console.put(
        path, json={**labelled, "spec": {"displayName": "theirs"}}, headers=headers
    ).raise_for_status()
    answer = submit(text.replace("displayName: theirs", "displayName: mine"), seen)
    assert answer.status_code == 409, answer.text
    assert stored()["metadata"]["labels"] == {"tier": "quarantined"}

    # A resourceVersion typed into the manifest still pins it, as for the API.
    text, seen = opened()
    pinned = text.replace("metadata:\n", "metadata:\n  resourceVersion: '1'\n", 1)
    assert submit(pinned.replace("theirs", "pinned"), seen).status_code == 409
    assert stored()["spec"]["displayName"] == "theirs"

    # A form that came without a mark is not given one on its error page.
    answer = submit("kind: [", None)
    assert answer.status_code == 422
    assert 'name="seen"' not in answer.text
