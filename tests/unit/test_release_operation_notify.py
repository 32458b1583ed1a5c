"""An operation on a release wakes the release controller; delivery (every object of the
application in every cluster) follows only when the operation changed what it renders from
the release: the revisions pinned and the canary's weights."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from wharf.identity.model import Grant, Principal
from wharf.releases.service import RELEASE, create_release, operate
from wharf.store import Database, migrate

ADMIN = Principal(user="admin", grants=frozenset({Grant(role="platform-admin")}))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def run(db: Database, phase: str, operation: Any) -> list[str]:
    with db.session() as session:
        create_release(
            session,
            "acme",
            "web",
            2,
            1,
            {
                "waves": [["lab1"]],
                "wave": 0,
                "clusters": {"lab1": {"phase": phase, "step": 5, "weight": 30}},
            },
        )
    told: list[str] = []
    resources = SimpleNamespace(
        db=db,
        get=lambda *_: {"spec": {"project": "shop"}},
        notify=lambda kind, tenant, name: told.append(kind),
    )
    operate(cast(Any, resources), ADMIN, "acme", "web", operation)
    return told


def test_a_promote_past_a_pause_is_the_release_controllers_alone(db: Database) -> None:
    assert run(db, "WaitingPromote", "promote") == [RELEASE]  # the old code: "Application"


def test_a_pause_is_the_release_controllers_alone(db: Database) -> None:
    assert run(db, "Progressing", "pause") == [RELEASE]


def test_an_abort_is_delivered_the_canarys_weight_goes(db: Database) -> None:
    assert run(db, "Progressing", "abort") == ["Application"]
