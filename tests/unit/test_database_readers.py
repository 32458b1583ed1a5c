"""On PostgreSQL, readers and the replicas' lease bookkeeping have connections of their own:
writers waiting in the database for a row lock (fifty edits a second of one project take turns
on its row) once held every connection of the one pool, a list page waited seconds for one
(bench/api_latency.py), and a lease renewal waited behind them. On SQLite the writers wait for
their turn before taking a connection (tests/unit/test_sqlite_writers.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from wharf.core.leases import PLATFORM, LeaseBook
from wharf.server.leases import LeaseKeeper
from wharf.store import Database, migrate, schema_head
from wharf.store.leases import take


def _read(db: Database) -> None:
    with db.reader() as session:
        assert session.execute(text("SELECT count(*) FROM tenants_row")).scalar() == 1


def _renew(db: Database) -> None:
    with db.control() as session:
        assert take(session, "replica/one", "one", 15) is not None


@pytest.mark.parametrize("use", [_read, _renew], ids=["a reader", "a lease renewal"])
def test_a_connection_is_there_while_every_writer_waits_for_a_row(
    postgres_url: str, use: Callable[[Database], None]
) -> None:
    db = Database(postgres_url)
    try:
        migrate(db)
        pool = db.engine.pool
        most = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
        with db.session() as session:
            session.execute(text("CREATE TABLE tenants_row (id int PRIMARY KEY)"))
            session.execute(text("INSERT INTO tenants_row VALUES (1)"))
        locked, waiting = threading.Event(), threading.Barrier(most)
        release = threading.Event()

        def holder() -> None:
            with db.session() as session:
                session.execute(text("SELECT id FROM tenants_row WHERE id = 1 FOR UPDATE"))
                locked.set()
                release.wait(60)

        def writer() -> None:
            with db.session() as session:
                session.execute(text("SELECT 1"))  # its connection taken
                waiting.wait(60)
                session.execute(text("SELECT id FROM tenants_row WHERE id = 1 FOR UPDATE"))

        threads = [threading.Thread(target=holder)]
        threads[0].start()
        locked.wait(60)
        threads += [threading.Thread(target=writer) for _ in range(most - 1)]
        for thread in threads[1:]:
            thread.start()
        try:
            with contextlib.suppress(threading.BrokenBarrierError):
                waiting.wait(60)
            # Every connection of the writers' pool is taken: one holds the row, the
            # others wait for it inside the database.
            assert pool.checkedout() == most  # type: ignore[attr-defined]
            use(db)
        finally:
            release.set()
            for thread in threads:
                thread.join(60)
    finally:
        db.dispose()


def test_a_lease_round_needs_no_api_connection_nor_a_probe_a_writers_one(
    postgres_url: str,
) -> None:
    """With every connection the API's writes use taken, a replica answers its readiness
    probe; with the reads' taken too, it still renews its leases (a lapse would stop its
    controllers)."""
    db = Database(postgres_url)
    try:
        migrate(db)
        keeper = LeaseKeeper(db, LeaseBook("one"), 15, gained=lambda _name: None)
        with contextlib.ExitStack() as taken:
            for _ in range(db.engine.pool.size()):
                taken.enter_context(db.session()).execute(text("SELECT 1"))
            assert db.ping()
            assert db.current_revision() == schema_head()
            for _ in range(db.reading_engine.pool.size()):
                taken.enter_context(db.reader()).execute(text("SELECT 1"))
            assert keeper.round() == [PLATFORM]
    finally:
        db.dispose()
