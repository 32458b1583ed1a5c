"""The console's live status stream (server-sent events) from a real server process: the first
event carries the status, later ones follow changes, another tenant's stream is a 404, and an
open stream does not hold up the server's shutdown."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import httpx

from tests.integration.conftest import ServerProcess, register_clusters, wait_for

IMAGE = "registry.example/shop/web:1.0.0"


def _events(lines, wanted: int) -> list[tuple[str, str]]:
    """Read `wanted` events (name, data) from an SSE line iterator."""
    events: list[tuple[str, str]] = []
    name, data = "", []
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name:
            events.append((name, "\n".join(data)))
            name, data = "", []
            if len(events) == wanted:
                break
    return events


def _site(process: ServerProcess, lab) -> tuple[Any, dict[str, Any]]:
    """Two tenants (sse-a, sse-b, each with an admin of that name) and the application
    sse-a/web; the platform admin's API client and the application's manifest."""
    admin = process.login()
    register_clusters(admin, lab)
    for tenant in ("sse-a", "sse-b"):
        admin.ok("POST", "/api/v1/users", json={"name": tenant, "password": "password-123"})
        admin.ok(
            "PUT",
            f"/api/v1/tenants/{tenant}",
            json={
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {"quota": {"cpu": "2"}, "clusters": ["lab1"], "admins": [tenant]},
            },
        )
    admin.ok(
        "PUT",
        "/api/v1/tenants/sse-a/projects/web",
        json={
            "kind": "Project",
            "metadata": {"name": "web"},
            "spec": {
                "quota": {"cpu": "1"},
                "environments": [{"name": "dev", "clusters": ["lab1"]}],
            },
        },
    )
    app = {
        "kind": "Application",
        "metadata": {"name": "web"},
        "spec": {
            "project": "web",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": "web", "image": IMAGE, "replicas": 1},
        },
    }
    wait_for(
        lambda: (
            admin.request("PUT", "/api/v1/tenants/sse-a/applications/web", json=app).status_code
            in (200, 201)
        ),
        what="the application accepted once its project is placed",
    )
    return admin, app


def test_the_status_stream_follows_changes_stays_in_its_tenant_and_ends_on_shutdown(lab, tmp_path):
    process = ServerProcess(tmp_path)
    process.start()
    try:
        admin, app = _site(process, lab)
        url = f"{process.url}/console/tenants/sse-a/applications/web/stream"
        assert httpx.get(url).status_code == 401  # no session

        def session(user: str) -> httpx.Client:
            client = httpx.Client(base_url=process.url, timeout=60)
            answer = client.post(
                "/console/login", data={"username": user, "password": "password-123"}
            )
            assert answer.status_code == 303
            return client

        other = session("sse-b")
        assert other.get("/console/tenants/sse-a/applications/web/stream").status_code == 404
        assert other.get("/console/tenants/sse-a/applications/nosuch/stream").status_code == 404

        owner = session("sse-a")
        with owner.stream("GET", "/console/tenants/sse-a/applications/web/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first = _events(lines, 1)
            assert first[0][0] == "status"
            assert 'id="app-state"' in first[0][1]
            # A change (the controllers' status, or a new spec) is the next event.
            app["spec"]["values"]["replicas"] = 2
            admin.ok("PUT", "/api/v1/tenants/sse-a/applications/web", json=app)
            following = _events(lines, 1)
            assert following[0][0] == "status"
            # The stream is open; the server still stops when told to.
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
            try:
                process.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("an open console stream held up the shutdown") from None
    finally:
        process.stop()


def _session(process: ServerProcess, user: str) -> httpx.Client:
    client = httpx.Client(base_url=process.url, timeout=httpx.Timeout(60, read=15))
    answer = client.post("/console/login", data={"username": user, "password": "password-123"})
    assert answer.status_code == 303
    return client


def test_the_status_stream_stops_when_its_session_ends(lab, tmp_path):
    process = ServerProcess(tmp_path)
    process.start()
    try:
        _site(process, lab)
        owner = _session(process, "sse-a")
        page = owner.get("/console/tenants/sse-a/applications/web").text
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        with owner.stream("GET", "/console/tenants/sse-a/applications/web/stream") as stream:
            lines = stream.iter_lines()
            assert _events(lines, 1)[0][0] == "status"
            assert owner.post("/console/logout", data={"csrf": csrf}).status_code == 303
            # The next poll finds the session gone: one last event, and the stream ends.
            assert _events(lines, 1) == [("signed-out", "the session ended")]
            assert list(lines) == []
    finally:
        process.stop()
