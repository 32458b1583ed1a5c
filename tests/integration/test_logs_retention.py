"""Retention per tenant against the real store: lines of tenants A and B from three days ago
(written into their store tenants with their own timestamps, as the collector's lines are
labelled), A's retention cut to 1d. A's search stops returning the old line at once (the
clamp, shown with the delete held back), then the controller deletes it from A's store tenant
(asked of the store directly), while B's old lines — one of them labelled as A's — stay.
Hostile retention values are 422s naming `spec.logs.retention`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Api, Wharf, wait_for
from tests.integration.test_logs_live import _site
from wharf.lab.build import BuildError, build_victorialogs
from wharf.lab.logstore import LogStore
from wharf.tenancy.model import namespace_name

STREAM = "tenant,cluster,namespace,file"


@pytest.fixture
def log_store(tmp_path: Any) -> Iterator[LogStore]:
    try:
        build_victorialogs(progress=lambda _: None)
    except BuildError as exc:
        pytest.fail(f"VictoriaLogs did not build: {exc}")
    store = LogStore(tmp_path / "logstore")  # -retentionPeriod=7d: the store's own
    store.start()
    yield store
    store.stop()


@pytest.fixture
def wharf_settings(log_store: LogStore) -> dict[str, Any]:
    return {"log_store_url": log_store.url, "log_store_retention": "7d"}


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(
    wharf: Wharf, tenant: str, cluster: str, pod: str, when: dt.datetime, text: str
) -> dict[str, str]:
    """A line as vlagent ships it with Wharf's flags (its file, its tenant's fields)."""
    namespace = namespace_name(tenant, "shop", "dev")
    return {
        "_time": _stamp(when),
        "_msg": f"{_stamp(when)} stdout F {text}",
        "file": f"/var/log/pods/{namespace}_{pod}_0a1b/web/0.log",
        "tenant": tenant,
        "tenantUid": wharf.admin.ok("GET", f"/api/v1/tenants/{tenant}")["metadata"]["uid"],
        "project": "shop",
        "environment": "dev",
        "namespace": namespace,
        "cluster": cluster,
    }


def _search(api: Api, tenant: str, **params: Any) -> dict[str, Any]:
    answer = api.get(f"/api/v1/tenants/{tenant}/applications/web/logs/search", params=params)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def _texts(page: dict[str, Any]) -> set[str]:
    return {item["line"] for item in page["items"]}


def _stored(store: LogStore, account: int) -> set[str]:
    """What the store itself holds in one store tenant over the last 6 days."""
    now = dt.datetime.now(dt.UTC)
    rows = store.query(account, "*", _stamp(now - dt.timedelta(days=6)), _stamp(now))
    return {row["_msg"].split(" F ", 1)[-1] for row in rows}


def _tenant_body(wharf: Wharf, name: str, retention: Any) -> dict[str, Any]:
    body = wharf.admin.ok("GET", f"/api/v1/tenants/{name}")
    spec = dict(body["spec"])
    spec["logs"] = {"retention": retention}
    return {"kind": "Tenant", "metadata": {"name": name}, "spec": spec}


def test_a_tenants_retention_hides_then_deletes_only_its_old_lines(
    wharf: Wharf, log_store: LogStore
):
    a, dev_a, pods_a, b, dev_b, pods_b = _site(wharf)
    history = wharf.app.state.history_logs
    account_a, account_b = history.account(a)[0], history.account(b)[0]
    now = dt.datetime.now(dt.UTC)
    old, new = now - dt.timedelta(days=3), now - dt.timedelta(minutes=1)
    log_store.insert(
        account_a,
        [
            _row(wharf, a, "lab1", pods_a["lab1"], old, "A old"),
            _row(wharf, a, "lab1", pods_a["lab1"], new, "A new"),
        ],
        STREAM,
    )
    log_store.insert(
        account_b,
        [
            _row(wharf, b, "lab1", pods_b["lab1"], old, "B old"),
            _row(wharf, b, "lab1", pods_b["lab1"], new, "B new"),
            # In B's store tenant, labelled as A's: a delete for A must not reach it either.
            _row(wharf, a, "lab1", pods_a["lab1"], old, "B old labelled A"),
        ],
        STREAM,
    )
    # The store's retention (7d) is everyone's by default: the old lines are found.
    first = _search(dev_a, a, since="4d")
    assert _texts(first) == {"A old", "A new"}
    assert first["retention"] == {
        "period": "7d",
        "oldest": first["retention"]["oldest"],
        "clamped": False,
    }
    assert _texts(_search(dev_b, b, since="4d")) == {"B old", "B new"}

    # Hostile or out-of-bounds retention: 422 naming the field, nothing stored.
    path = f"/api/v1/tenants/{a}"
    for value in ("0d", "0", "-1d", "1d; rm", "100y", "8d", "2w", "1h", "", " 7d", 7, "99999d"):
        answer = wharf.admin.put(path, _tenant_body(wharf, a, value))
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["field"] == "spec.logs.retention", (value, answer.text)
    assert "logs" not in wharf.admin.ok("GET", path)["spec"]

    # A's retention cut to 1d, the delete held back: search clamps at once.
    retention = wharf.platform.log_retention.retention
    retention.store.url = None  # the controller has no store to ask: nothing is deleted yet
    wharf.admin.ok("PUT", path, json=_tenant_body(wharf, a, "1d"))
    clamped = _search(dev_a, a, since="4d")
    assert _texts(clamped) == {"A new"}
    assert clamped["retention"]["period"] == "1d"
    assert clamped["retention"]["clamped"] is True
    assert _search(dev_a, a, since=_stamp(old - dt.timedelta(hours=1)), until="2d")["items"] == []
    assert _stored(log_store, account_a) == {"A old", "A new"}  # still in the store
    assert _texts(_search(dev_b, b, since="4d")) == {"B old", "B new"}  # B keeps 7d

    # The controller deletes A's old line from A's store tenant, and only there.
    retention.store.url = log_store.url
    wharf.platform.log_retention.controller.queue.add(a)

    def ran() -> dict[str, Any] | None:
        status = wharf.admin.ok("GET", path)["status"]
        last: dict[str, Any] | None = (status.get("logs") or {}).get("lastRetention")
        return last

    last = wait_for(ran, timeout=60, what="A's retention run")
    assert last["retention"] == "1d"
    before = dt.datetime.fromisoformat(last["before"].replace("Z", "+00:00"))
    assert abs(before - (dt.datetime.now(dt.UTC) - dt.timedelta(days=1))) < dt.timedelta(minutes=5)
    assert last["task"]
    wait_for(lambda: not log_store.deleting(), timeout=120, what="the store's delete task")
    log_store.flush()
    assert _stored(log_store, account_a) == {"A new"}
    assert _stored(log_store, account_b) == {"B old", "B new", "B old labelled A"}
    assert _texts(_search(dev_b, b, since="4d")) == {"B old", "B new"}

    # Level-triggered and rare: more reconciles within the day write nothing.
    version = wharf.admin.ok("GET", path)["metadata"]["resourceVersion"]
    for _ in range(3):
        wharf.platform.log_retention.controller.queue.add(a)
        time.sleep(2)
    assert wharf.admin.ok("GET", path)["metadata"]["resourceVersion"] == version
    assert wharf.admin.ok("GET", path)["status"]["logs"]["lastRetention"] == last
