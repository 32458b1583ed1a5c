"""Live logs of an application across both lab clusters: lines a simulated pod writes reach the
API labelled by cluster and pod, followed as server-sent events; reads are bounded; and another
tenant's token reaches none of them — not by the application's name, not by a pod's name, not by
a namespace slipped into the query."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from tests.integration.conftest import Api, Wharf, wait_for
from wharf.logs.service import ACCESS_CHECK_SECONDS, MAX_FOLLOWED_PER_USER
from wharf.tenancy.model import namespace_name

IMAGE = "registry.example/shop/web:1.0.0"
PROJECT_QUOTA = {"cpu": "2", "memory": "4Gi", "pods": "10"}


def _application(tenant: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "project": "shop",
            "environment": "dev",
            "template": {"name": "web-service", "version": "1.0.0"},
            "values": {"name": name, "image": IMAGE, "replicas": 1},
        },
    }


def _delivered(wharf: Wharf, dev: Api, tenant: str) -> dict[str, str]:
    """The application `web` of the tenant, running in both clusters: its pod per cluster."""
    dev.ok("PUT", f"/api/v1/tenants/{tenant}/applications/web", json=_application(tenant, "web"))

    def pods() -> dict[str, str] | None:
        answer = dev.get(f"/api/v1/tenants/{tenant}/applications/web/pods")
        items = answer.json().get("items", []) if answer.status_code == 200 else []
        found = {item["cluster"]: item["pod"] for item in items}
        return found if set(found) == {"lab1", "lab2"} else None

    found: dict[str, str] = wait_for(pods, timeout=120, what=f"{tenant}/web's pods")
    return found


def _site(wharf: Wharf) -> tuple[str, Api, dict[str, str], str, Api, dict[str, str]]:
    """Tenants A and B, each with a developer and an application `web` on both clusters."""
    site = []
    for _ in range(2):
        dev = wharf.user()
        tenant = wharf.tenant({"cpu": "4", "memory": "8Gi", "pods": "20"})
        wharf.project(
            tenant,
            "shop",
            PROJECT_QUOTA,
            members=[{"user": dev.user, "role": "developer"}],
        )
        wharf.wait_placed(tenant, "shop")
        site.append((tenant, dev, _delivered(wharf, dev, tenant)))
    (a, dev_a, pods_a), (b, dev_b, pods_b) = site
    return a, dev_a, pods_a, b, dev_b, pods_b


def _lines(api: Api, path: str, **params: Any) -> list[dict[str, str]]:
    answer = api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, str]] = answer.json()["items"]
    return items


def _follow(api: Api, path: str, timeout: int) -> Any:
    """A followed stream of lab1's lines of the application, from its last line on."""
    params = {"follow": "true", "cluster": "lab1", "tail": 1, "timeout": timeout}
    headers = {"Authorization": f"Bearer {api.token}"}
    return api.client.stream("GET", path, params=params, headers=headers)


def test_live_logs_of_an_application_across_clusters_and_tenants(wharf: Wharf):
    a, dev_a, pods_a, b, dev_b, pods_b = _site(wharf)
    namespace_a = namespace_name(a, "shop", "dev")
    for cluster, pod in pods_a.items():
        wharf.lab.cluster(cluster).write_pod_log(namespace_a, pod, [f"secret of {a} in {cluster}"])
    logs = f"/api/v1/tenants/{a}/applications/web/logs"

    def both() -> list[dict[str, str]] | None:
        items = _lines(dev_a, logs)
        return items if sum("secret of" in i["line"] for i in items) == 2 else None

    items = wait_for(both, what="A's lines from both clusters")
    secret = {(i["cluster"], i["pod"]) for i in items if i["line"].startswith("secret of")}
    assert secret == set(pods_a.items())
    assert [i["time"] for i in items] == sorted(i["time"] for i in items)

    # One pod, one cluster, the last line only.
    pod = pods_a["lab2"]
    one = _lines(dev_a, f"/api/v1/tenants/{a}/applications/web/pods/{pod}/logs", tail=1)
    assert [(i["cluster"], i["pod"], i["line"]) for i in one] == [
        ("lab2", pod, f"secret of {a} in lab2")
    ]

    # Followed: what is there first, then a line written while the stream is open.
    with _follow(dev_a, logs, timeout=20) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        seen: list[str] = []
        for line in stream.iter_lines():
            if not line.startswith("data: {"):
                continue
            seen.append(json.loads(line[6:])["line"])
            if len(seen) == 1:
                wharf.lab.cluster("lab1").write_pod_log(namespace_a, pods_a["lab1"], ["later"])
            else:
                break
    assert seen == [f"secret of {a} in lab1", "later"]

    # A member removed while following stops receiving lines: the stream asks again whether
    # its caller may read the application before it sends more, and ends saying why.
    with _follow(dev_a, logs, timeout=30) as stream:
        assert stream.status_code == 200
        events: list[str] = []
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line)
            if line.startswith("data: {") and len(events) == 1:
                wharf.project(a, "shop", PROJECT_QUOTA, members=[])
                time.sleep(ACCESS_CHECK_SECONDS + 0.5)
                lab1 = wharf.lab.cluster("lab1")
                lab1.write_pod_log(namespace_a, pods_a["lab1"], ["after the member left"])
            if line.startswith("data: {") and "after the member left" in line:
                raise AssertionError("a removed member still received a line")
    assert events == ["event: line", "event: denied"]
    assert dev_a.get(logs).status_code == 404
    wharf.project(
        a,
        "shop",
        PROJECT_QUOTA,
        members=[{"user": dev_a.user, "role": "developer"}],
    )

    # The same when nothing is written after the member left: a quiet stream asks too, and
    # ends, giving back its slot and Wharf's watches, instead of lasting to its bound.
    with _follow(dev_a, logs, timeout=60) as stream:
        assert stream.status_code == 200
        events = []
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line)
            if line.startswith("data: {") and len(events) == 1:
                wharf.project(a, "shop", PROJECT_QUOTA, members=[])
    assert events == ["event: line", "event: denied"]
    assert wharf.app.state.live_logs.slots.held(dev_a.user) == 0
    wharf.project(
        a,
        "shop",
        PROJECT_QUOTA,
        members=[{"user": dev_a.user, "role": "developer"}],
    )

    # Bounds: refused with the field named, never unbounded.
    for params, field in (
        ({"tail": 0}, "tail"),
        ({"since": "30d"}, "since"),
        ({"since": "x"}, "since"),
    ):
        answer = dev_a.get(logs, params=params)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field

    # Tenant B: A's application, A's pods, A's namespace are not there for it.
    assert dev_b.get(logs).status_code == 404
    assert dev_b.get(f"{logs}", params={"follow": "true"}).status_code == 404
    own = f"/api/v1/tenants/{b}/applications/web"
    for cluster, pod in pods_a.items():
        assert dev_b.get(f"/api/v1/tenants/{a}/applications/web/pods/{pod}/logs").status_code == 404
        answer = dev_b.get(f"{own}/pods/{pod}/logs", params={"cluster": cluster})
        assert answer.status_code == 404, answer.text
        answer = dev_b.get(f"{own}/logs", params={"pod": pod})
        assert answer.status_code == 404, answer.text
    answer = dev_b.get(f"{own}/logs", params={"pod": f"{namespace_a}/{pods_a['lab1']}"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "pod"
    # A namespace parameter is no parameter: B reads its own pods only.
    items = _lines(dev_b, f"{own}/logs", namespace=namespace_a)
    assert items
    assert all(i["pod"] in pods_b.values() for i in items)
    assert not any(a in i["line"] for i in items)

    # One user follows at most so many streams at once (each holds watches on the clusters,
    # opened with Wharf's credentials): one more is 429 and says when to try again; another
    # user is not held back; a stream that ends gives its slot back.
    slots = wharf.app.state.live_logs.slots
    # Streams the test left early above (the client closed them) lapse after their bound.
    wait_for(lambda: slots.held(dev_a.user) == 0, timeout=60, what="earlier streams ended")
    with contextlib.ExitStack() as held:
        for _ in range(MAX_FOLLOWED_PER_USER - 1):
            assert held.enter_context(_follow(dev_a, logs, timeout=15)).status_code == 200
        short = held.enter_context(_follow(dev_a, logs, timeout=2))
        assert short.status_code == 200
        assert slots.held(dev_a.user) == MAX_FOLLOWED_PER_USER
        refused = dev_a.get(logs, params={"follow": "true", "timeout": 5})
        assert refused.status_code == 429, refused.text
        assert "already follows" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        with _follow(dev_b, own + "/logs", timeout=1) as other:
            assert other.status_code == 200
        assert "event: end" in list(short.iter_lines())
        assert slots.held(dev_a.user) == MAX_FOLLOWED_PER_USER - 1
        with _follow(dev_a, logs, timeout=1) as again:
            assert again.status_code == 200
