"""The schedule controller is queued by every change of every application: one without a
scheduled window (none listed, none in its status) costs it a read, never a write transaction
(on SQLite, a turn at the one write lock the release controller's steps wait for)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from wharf.scaling.controller import ScheduleController
from wharf.store import Database, migrate
from wharf.store.resources import ResourceStore


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def controller(db: Database, writes: list[str]) -> ScheduleController:
    def write_status(kind: str, tenant: str, name: str, build: Any) -> None:
        writes.append(name)

    service = SimpleNamespace(db=db, write_status=write_status)
    return ScheduleController(cast(Any, service), lambda _: None)


def add(db: Database, name: str, status: dict[str, Any]) -> None:
    with db.session() as session:
        ResourceStore(session).create(
            "Application",
            "acme",
            name,
            labels={},
            annotations={},
            spec={"project": "shop", "environment": "dev", "image": "web:1"},
            status=status,
        )


def test_an_application_without_a_window_is_not_written(db: Database) -> None:
    add(db, "plain", {"phase": "Available"})
    add(db, "closing", {"schedule": {"name": "office-hours"}})  # its window is to be cleared
    writes: list[str] = []
    schedules = controller(db, writes)
    at = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    assert schedules._record(("acme", "plain"), at) is False
    assert schedules._record(("acme", "gone"), at) is False
    assert writes == []  # the old code took a write transaction for each
    schedules._record(("acme", "closing"), at)
    assert writes == ["closing"]
