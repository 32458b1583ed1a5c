"""A tenant's totals are counted in a read and written in a short write: on SQLite, counting
every project inside the write held the one writer lock — and every API write behind it —
for as long as the count took."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from wharf.core.config import Settings
from wharf.identity.model import Grant, Principal
from wharf.server.platform import Platform
from wharf.store import Database, migrate
from wharf.tenancy import controller

ADMIN = Principal("admin", frozenset({Grant("platform-admin")}))


def test_a_tenants_totals_are_counted_while_another_write_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'wharf.db'}"
    db = Database(url)
    migrate(db)
    settings = Settings(
        database_url=url,
        secret_key="unit-test-key",
        controllers=False,
        alert_receiver_token_file=tmp_path / "receiver-token",
    )
    platform = Platform(settings, db)
    for kind, name, quota in (("Tenant", "acme", "10"), ("Project", "shop", "4")):
        metadata = {"name": name, **({"tenant": "acme"} if kind == "Project" else {})}
        platform.resources.apply(
            ADMIN,
            {
                "apiVersion": "wharf.io/v1",
                "kind": kind,
                "metadata": metadata,
                "spec": {"quota": {"count/configmaps": quota}},
            },
        )
    counted = threading.Event()
    usage = controller.tenant_usage

    def counting(session: Any, tenant: str) -> dict[str, Any]:
        found = usage(session, tenant)
        counted.set()
        return found

    monkeypatch.setattr(controller, "tenant_usage", counting)
    writing, done = threading.Event(), threading.Event()

    def another_write() -> None:
        with db.session() as session:
            session.execute(text("SELECT 1"))
            writing.set()
            done.wait(30)

    writer = threading.Thread(target=another_write)
    writer.start()
    assert writing.wait(30)
    recount = threading.Thread(target=platform.placement._tenant_status, args=("acme",))
    recount.start()
    try:
        assert counted.wait(30)  # the old count waited here for the write to end
    finally:
        done.set()
        writer.join(30)
        recount.join(30)
    tenant = platform.resources.get(ADMIN, "Tenant", "", "acme")
    assert tenant["status"]["allocated"] == {"count/configmaps": "4"}
    db.dispose()
