"""Leases in PostgreSQL: one holder at a time, takeover only after expiry, and fencing: a
replica that lost its lease (paused past it) cannot write under it any more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.conftest import fresh_postgres
from wharf.core.leases import WORKING_UNDER, Lease, LeaseLost, fenced_by
from wharf.store import Database, migrate
from wharf.store.leases import holdings, release, take


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    with fresh_postgres() as url:
        database = Database(url)
        migrate(database)
        yield database
        database.dispose()


def _take(db: Database, name: str, holder: str, seconds: float) -> int | None:
    with db.session() as session:
        return take(session, name, holder, seconds)


def _expire(db: Database, name: str) -> None:
    """Time passing, without waiting for it: the lease's expiry moves into the past."""
    with db.session() as session:
        session.execute(
            text("UPDATE leases SET expires_at = clock_timestamp() - interval '1s' WHERE name=:n"),
            {"n": name},
        )


def test_a_held_lease_is_not_taken_until_it_expires(db: Database) -> None:
    assert _take(db, "cluster/a", "r1", 30) == 1
    assert _take(db, "cluster/a", "r2", 30) is None  # held: r2 waits
    assert _take(db, "cluster/a", "r1", 30) == 1  # a renewal keeps the epoch
    _expire(db, "cluster/a")
    assert _take(db, "cluster/a", "r2", 30) == 2  # expired: taken over, a new epoch
    with db.reader() as session:
        assert [(h.name, h.holder) for h in holdings(session)] == [("cluster/a", "r2")]


def test_a_released_lease_is_taken_at_once(db: Database) -> None:
    assert _take(db, "cluster/b", "r1", 30) == 1
    with db.session() as session:
        release(session, ["cluster/b"], "r1")
    assert _take(db, "cluster/b", "r2", 30) == 2


def test_a_replica_that_lost_its_lease_cannot_write(db: Database) -> None:
    epoch = _take(db, "cluster/c", "r1", 30)
    assert epoch is not None
    mine = Lease("cluster/c", "r1", epoch)
    token = WORKING_UNDER.set(mine)
    try:
        with db.session() as session:  # held: the write goes through
            session.execute(text("CREATE TABLE fenced_writes (n int)"))
        _expire(db, "cluster/c")  # r1 pauses past its lease ...
        WORKING_UNDER.reset(token)
        assert _take(db, "cluster/c", "r2", 30) == epoch + 1  # ... and r2 takes it over
        token = WORKING_UNDER.set(mine)
        with pytest.raises(LeaseLost), db.session() as session:
            session.execute(text("INSERT INTO fenced_writes VALUES (1)"))
    finally:
        WORKING_UNDER.reset(token)
    with db.reader() as session:
        assert session.execute(text("SELECT count(*) FROM fenced_writes")).scalar() == 0


def test_a_status_of_several_clusters_is_written_only_under_all_their_leases(
    db: Database,
) -> None:
    """A project's or application's status carries one part per cluster, written under each
    cluster's lease: one of them lost, and the whole write is refused."""
    held = [
        Lease(name, "r1", _take(db, name, "r1", 30) or 0) for name in ("cluster/d", "cluster/e")
    ]
    with db.session() as session:
        session.execute(text("CREATE TABLE status_writes (n int)"))
    with fenced_by(*held), db.session() as session:
        session.execute(text("INSERT INTO status_writes VALUES (1)"))
    _expire(db, "cluster/e")
    assert _take(db, "cluster/e", "r2", 30) == held[1].epoch + 1
    with pytest.raises(LeaseLost), fenced_by(*held), db.session() as session:
        session.execute(text("INSERT INTO status_writes VALUES (2)"))
    with db.reader() as session:
        assert session.execute(text("SELECT n FROM status_writes")).scalars().all() == [1]
