"""Changes told between replicas (PostgreSQL's NOTIFY): what a replica hears, what it ignores,
and what it does when its listening connection breaks. Two replicas each reconciling the
clusters they hold are in test_replicas.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import create_engine, text

from tests.integration.conftest import Wharf, wait_for
from wharf.store.changes import CHANNEL, Change


def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Run one statement on its own connection (committed); its rows, if it returns any."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(text(statement), params)
            rows = list(result) if result.returns_rows else []
            connection.commit()
            return rows
    finally:
        engine.dispose()


def _listener_pids(url: str) -> list[int]:
    rows = _sql(
        url,
        "SELECT pid FROM pg_stat_activity WHERE query = :q AND datname = current_database()",
        q=f"LISTEN {CHANNEL}",
    )
    return [int(row.pid) for row in rows]


def _notify(url: str, payload: str) -> None:
    _sql(url, "SELECT pg_notify(:c, :p)", c=CHANNEL, p=payload)


def _on_postgres(wharf: Wharf, database_url: str) -> bool:
    """The replicas tell each other through PostgreSQL; SQLite has one process, which tells
    and listens to nothing (checked here; nothing more to test on it)."""
    if database_url.startswith("postgresql"):
        return True
    assert not wharf.platform.changes.enabled
    return False


def test_a_replica_hears_the_others_and_not_itself_nor_junk(
    wharf: Wharf, database_url, monkeypatch
):
    if not _on_postgres(wharf, database_url):
        return
    changes = wharf.platform.changes
    heard: list[tuple[str, str, str]] = []
    monkeypatch.setattr(wharf.platform, "_on_change", lambda *key: heard.append(key))
    wait_for(lambda: _listener_pids(database_url), what="the replica listening")
    mine = Change(changes.replica, "Project", "shop", "mine").payload()
    for junk in ("not json", json.dumps({"kind": "Project"}), json.dumps([1, 2, 3, 4]), mine):
        _notify(database_url, junk)
    _notify(database_url, Change("another", "Project", "shop", "web").payload())
    wait_for(lambda: heard, what="the other replica's change heard")
    assert heard == [("Project", "shop", "web")]


def test_a_broken_listening_connection_looks_at_everything_again(
    wharf: Wharf, database_url, monkeypatch
):
    """Changes told while a replica was not listening are gone: once it listens again it
    looks at every key it holds (the next resync could be many minutes away)."""
    if not _on_postgres(wharf, database_url):
        return
    looked = asyncio.Event()
    monkeypatch.setattr(wharf.platform.placement.controller, "queue_all", looked.set)
    pids = wait_for(lambda: _listener_pids(database_url), what="the replica listening")
    for pid in pids:
        _sql(database_url, "SELECT pg_terminate_backend(:pid)", pid=pid)

    async def looked_again() -> None:
        async with asyncio.timeout(60):
            await looked.wait()

    wharf.client.portal.call(looked_again)
    wait_for(lambda: set(_listener_pids(database_url)) - set(pids), what="listening again")


def test_a_forged_notification_naming_a_project_almost_removes_nothing(
    wharf: Wharf, database_url, kubectl
):
    """Anyone who may connect to the database may NOTIFY. A project that does not exist is
    one whose namespaces are removed, and a cluster reads the selector `project=web ` as
    `project=web`: such names are dropped when heard, and refused by the removal itself."""
    if not _on_postgres(wharf, database_url):
        return
    tenant = wharf.tenant({"cpu": "2", "memory": "2Gi"})
    wharf.project(tenant, "web", {"cpu": "1", "memory": "1Gi"})
    wharf.wait_placed(tenant, "web")
    changes = wharf.platform.changes
    wait_for(lambda: _listener_pids(database_url), what="the replica listening")
    before = changes.heard
    for name in ("web ", "web\n", "web,app.kubernetes.io/managed-by"):
        _notify(database_url, json.dumps(["x", "Project", tenant, name]))
    _notify(database_url, Change("x", "Project", tenant, "web").payload())  # heard after them
    wait_for(lambda: changes.heard > before, what="the valid notification heard")
    assert changes.heard == before + 1

    async def idle() -> None:
        async with asyncio.timeout(60):
            await wharf.platform.placement.controller.idle()

    wharf.client.portal.call(idle)
    for cluster in wharf.lab.clusters():
        found = kubectl(cluster, "get", "namespace", f"{tenant}--web-dev", check=False)
        assert found.returncode == 0, (cluster.name, found.stderr)


def test_a_change_that_fails_to_act_on_keeps_the_channel(wharf: Wharf, database_url, monkeypatch):
    """One notification whose handling fails (a name the database refuses, say) is logged;
    the connection stays, and nothing is looked at all over again."""
    if not _on_postgres(wharf, database_url):
        return
    changes = wharf.platform.changes
    pids = wait_for(lambda: _listener_pids(database_url), what="the replica listening")

    def fail(*_key: str) -> None:
        raise RuntimeError("cannot act on it")

    everything: list[str] = []
    monkeypatch.setattr(wharf.platform, "_on_change", fail)
    placement = wharf.platform.placement.controller
    monkeypatch.setattr(placement, "queue_all", lambda: everything.append("all"))
    before = changes.heard
    for name in ("one", "two"):
        _notify(database_url, Change("x", "Project", "shop", name).payload())
    wait_for(lambda: changes.heard >= before + 2, what="both heard")
    assert _listener_pids(database_url) == pids
    assert everything == []
