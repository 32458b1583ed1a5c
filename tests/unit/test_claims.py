"""Claims on platform-wide names, on SQLite and PostgreSQL: one holder each, also under races."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from wharf.core.errors import ConflictError
from wharf.store import Database, migrate
from wharf.store.claims import Holder, Wanted, held_by, hold, release

A = Holder("Project", "acme", "labs-x")
B = Holder("Project", "acme-labs", "x")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def _hold(db: Database, holder: Holder, *names: str) -> None:
    with db.session() as session:
        hold(session, "namespace", [Wanted(n, f"namespace {n}", "spec.x") for n in names], holder)


def test_a_name_has_one_holder_and_the_refusal_names_only_its_kind(db: Database):
    _hold(db, A, "acme-labs-x-dev")
    with pytest.raises(ConflictError) as refused:
        _hold(db, B, "acme-labs-x-dev")
    assert refused.value.message == (
        "spec.x: namespace acme-labs-x-dev is already held by another Project"
    )
    assert refused.value.field == "spec.x"
    # Holding again what one holds is fine; a name no longer wanted is released.
    _hold(db, A, "acme-labs-x-dev", "acme-labs-x-prod")
    _hold(db, A, "acme-labs-x-prod")
    _hold(db, B, "acme-labs-x-dev")
    with db.session() as session:
        assert held_by(session, "namespace", A) == {"acme-labs-x-prod"}
        release(session, A)
        assert held_by(session, "namespace", A) == set()


def test_long_names_are_held_by_digest(db: Database):
    long = "n" * 400
    _hold(db, A, long)
    with pytest.raises(ConflictError):
        _hold(db, B, long)


def test_racing_holders_one_wins(db: Database):
    outcomes: list[str] = []
    gate = threading.Barrier(8)

    def race(i: int) -> None:
        gate.wait()
        try:
            _hold(db, Holder("Project", f"t{i}", "p"), "contested")
            outcomes.append("held")
        except ConflictError:
            outcomes.append("refused")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held"] + ["refused"] * 7
