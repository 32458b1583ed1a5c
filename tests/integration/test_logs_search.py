"""Log search against the real store and collector: lines a simulated pod writes are shipped
by vlagent (configured with Wharf's flags) into VictoriaLogs, in the store tenant of their
Wharf tenant, and found through the API — and the live view — of their application only.
Tenant B's token finds none of tenant A's lines however the query is bent; bounds are named;
a store that does not answer is said to be so, by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Api, Wharf, wait_for
from tests.integration.test_logs_live import _site
from wharf.lab.build import BuildError, build_victorialogs
from wharf.lab.logstore import LogStore
from wharf.logs.model import collector_flags
from wharf.tenancy.model import namespace_name


@pytest.fixture
def log_store(tmp_path: Any) -> Iterator[LogStore]:
    """A store per test: its tenants' AccountIDs are the test database's tenant row ids."""
    try:
        build_victorialogs(progress=lambda _: None)  # a cache from before log search has none
    except BuildError as exc:
        pytest.fail(f"VictoriaLogs did not build: {exc}")
    store = LogStore(tmp_path / "logstore")
    store.start()
    yield store
    store.stop()


@pytest.fixture
def wharf_settings(log_store: LogStore) -> dict[str, Any]:
    return {"log_store_url": log_store.url}


def _ship(wharf: Wharf, log_store: LogStore) -> None:
    """Run the collector with the flags Wharf renders for what is placed now."""
    sources = wharf.app.state.history_logs.sources()
    directories = {cluster.name: str(cluster.pod_log_dir) for cluster in wharf.lab.clusters()}
    log_store.ship(collector_flags(sources, directories))


def _search(api: Api, tenant: str, **params: Any) -> Any:
    params.setdefault("since", "1h")
    return api.get(f"/api/v1/tenants/{tenant}/applications/web/logs/search", params=params)


def _lines(api: Api, tenant: str, **params: Any) -> list[dict[str, str]]:
    answer = _search(api, tenant, **params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, str]] = answer.json()["items"]
    return items


def test_search_finds_a_tenants_lines_and_no_others(wharf: Wharf, log_store: LogStore):
    a, dev_a, pods_a, b, dev_b, pods_b = _site(wharf)
    _ship(wharf, log_store)
    namespace_a, namespace_b = namespace_name(a, "shop", "dev"), namespace_name(b, "shop", "dev")
    for cluster, pod in pods_a.items():
        wharf.lab.cluster(cluster).write_pod_log(namespace_a, pod, [f"order of {a} paid"])
    for cluster, pod in pods_b.items():
        wharf.lab.cluster(cluster).write_pod_log(namespace_b, pod, [f"order of {b} paid"])

    # In search: A's lines from both clusters, labelled, newest first.
    def found() -> list[dict[str, str]] | None:
        items = _lines(dev_a, a, q="paid")
        return items if len(items) == 2 else None

    items = wait_for(found, timeout=60, what="A's lines in search")
    assert {(i["cluster"], i["pod"], i["container"], i["line"]) for i in items} == {
        (cluster, pod, "web", f"order of {a} paid") for cluster, pod in pods_a.items()
    }
    # And in the live view, the same lines.
    live = dev_a.get(f"/api/v1/tenants/{a}/applications/web/logs").json()["items"]
    assert sum(i["line"] == f"order of {a} paid" for i in live) == 2

    # B's token: A's application does not exist for it.
    assert _search(dev_b, a, q="paid").status_code == 404
    wait_for(lambda: len(_lines(dev_b, b, q="paid")) == 2, what="B's own lines")

    # However B bends its own query, nothing of A's comes back.
    hostile = [
        {"q": f'"}} or {{tenant="{a}"'},
        {"q": f'" OR tenant:{a} OR "'},
        {"q": "* | union (*)"},
        {"q": ".*"},
        {"q": ".*", "regex": "true"},
        {"q": f"{a}|.*", "regex": "true"},
        {"q": a},
        {"namespace": namespace_a},  # not a parameter: ignored
        {"cluster": "lab1", "q": ".*", "regex": "true"},
    ]
    for params in hostile:
        answer = _search(dev_b, b, **params)
        assert answer.status_code == 200, (params, answer.text)
        lines = [i["line"] for i in answer.json()["items"]]
        assert not any(a in line for line in lines), (params, lines)
    everything = _lines(dev_b, b, q=".*", regex="true", limit=1000)
    assert {i["line"] for i in everything if "order" in i["line"]} == {f"order of {b} paid"}
    # Metacharacters are literal text unless regex=true.
    assert _lines(dev_b, b, q=".*") == []
    assert _lines(dev_b, b, q=f"of {b} paid") != []
    # A's pod named in B's search reads B's namespace only: nothing; a pod name that is not
    # one of the application's (another application's) is not found.
    assert _lines(dev_b, b, pod=pods_a["lab1"]) == []
    assert _search(dev_b, b, pod="api-7d9c6c8f5-abcde").status_code == 404

    # Bounds: refused with the field named.
    for params, field in (
        ({"since": ""}, "since"),
        ({"since": "8d"}, "since"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"limit": 100000}, "limit"),
        ({"limit": 0}, "limit"),
        ({"q": "(", "regex": "true"}, "q"),
        ({"continue": "garbage"}, "continue"),
        ({"pod": "../x"}, "pod"),
    ):
        answer = _search(dev_a, a, **params)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["field"] == field, (params, answer.text)

    # Pages: a continue token walks back through every line once.
    lab1 = wharf.lab.cluster("lab1")
    lab1.write_pod_log(namespace_a, pods_a["lab1"], [f"page line {n}" for n in range(5)])
    wait_for(lambda: len(_lines(dev_a, a, q="page line")) == 5, what="the paged lines")
    seen: list[str] = []
    token = None
    for _ in range(5):
        params: dict[str, Any] = {"q": "page line", "limit": 2}
        if token:
            params["continue"] = token
        page = _search(dev_a, a, **params).json()
        seen += [i["line"] for i in page["items"]]
        token = page["continue"]
        if token is None:
            break
    assert sorted(seen) == [f"page line {n}" for n in range(5)]

    # The console's search page: the same lines, escaped; B's session gets A's page as 404.
    console = wharf.client
    page = f"/console/tenants/{a}/applications/web/logs/search"
    login = {"username": dev_b.user, "password": "password-123"}
    assert console.post("/console/login", data=login, follow_redirects=False).status_code == 303
    assert console.get(page, params={"q": "paid"}).status_code == 404
    login = {"username": dev_a.user, "password": "password-123"}
    assert console.post("/console/login", data=login, follow_redirects=False).status_code == 303
    html = console.get(page, params={"q": "paid", "since": "1h"})
    assert html.status_code == 200
    assert html.text.count(f"order of {a} paid") == 2
    refused = console.get(page, params={"q": "x", "since": "30d"})
    assert refused.status_code == 200
    assert "since: the range may span 7d" in refused.text

    # The store down: said so, by name, not a server error.
    log_store.store.stop()
    answer = _search(dev_a, a, q="paid")
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "logs-unavailable"
    assert "log store" in answer.json()["message"]
    down = console.get(page, params={"q": "paid"})
    assert down.status_code == 200
    assert "the log store (VictoriaLogs) did not answer" in down.text
