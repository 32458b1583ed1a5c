"""Engine, sessions and migrations.

Migrations live inside the package so that an installed wheel can upgrade its own database on
start; `wharf server` runs them before it serves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from wharf.core import jsoncodec
from wharf.core.leases import fences
from wharf.store.leases import fence

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_START = 8700  # the advisory lock replicas take to migrate and seed one at a time


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def schema_head() -> str:
    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, open transactions (see _on_sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Writers take turns on one lock: a burst of them (50 applications asking for node ports
    # at once) queues behind each other, and 5 s left the last ones failing under load.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    # A writing transaction takes the write lock at its start: a read-then-write can then
    # never find its row changed underneath it (PostgreSQL gets the same from SELECT ... FOR
    # UPDATE). Readers begin deferred, so they neither wait for nor block each other.
    if connection.get_execution_options().get("wharf_reader"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        sqlite = url.startswith("sqlite")
        self.engine: Engine = self._engine(pool_size=10)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _on_sqlite_connect)
            event.listen(self.engine, "begin", _on_sqlite_begin)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Readers have connections of their own on PostgreSQL: writers waiting there for a row
        # lock (ten edits a second of one tenant's projects take turns on its row) held every
        # connection of a shared pool, and a list page waited seconds for one. (SQLite's
        # writers wait for their turn before they take a connection.)
        self.reading_engine = self.engine if sqlite else self._engine(pool_size=15)
        self._readers = sessionmaker(self.reading_engine, expire_on_commit=False)
        # The replicas' leases have their own too: a lease renewal waited for a connection
        # behind those writers, and could have lapsed.
        # 10 + 15 + 2 connections (and a listener's) a server: three replicas stay within
        # PostgreSQL's default of 100 (docs/deploy.md).
        self.control_engine = self.engine if sqlite else self._engine(pool_size=2)
        self._control = None if sqlite else sessionmaker(self.control_engine)
        # SQLite has one writer at a time. This process's writers take turns on a lock that
        # is handed over at each commit; in SQLite's busy handler they slept and polled (up to
        # 100 ms a time, each holding a pool connection): with 20 releases under way, a
        # thread was always waiting in BEGIN IMMEDIATE. Other processes still meet the busy
        # timeout. (Re-entrant: a nested writer behaves as before, on SQLite's lock.)
        self._writers = threading.RLock() if self.engine.dialect.name == "sqlite" else None

    def _engine(self, pool_size: int) -> Engine:
        if self.url.startswith("sqlite"):
            # A SQLite connection is a file handle that cannot go stale: no ping before each
            # use; its writers take turns (below), so the default pool does.
            return create_engine(
                self.url, json_serializer=jsoncodec.dumps, json_deserializer=jsoncodec.loads
            )
        return create_engine(
            self.url,
            pool_pre_ping=True,
            # No connections beyond the pool's: each was opened (a new server process and a
            # SCRAM handshake, milliseconds of CPU on both sides) for one burst and closed.
            pool_size=pool_size,
            max_overflow=0,
            json_serializer=jsoncodec.dumps,
            json_deserializer=jsoncodec.loads,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that may write; it commits at the end, or rolls back on error.
        Inside a reconcile it first checks the lease the work is done under (fencing)."""
        with ExitStack() as stack:
            if self._writers is not None:
                stack.enter_context(self._writers)
            session = stack.enter_context(self.sessions.begin())
            for lease in fences():  # by name: two writers lock lease rows in one order
                fence(session, lease)
            yield session

    @contextmanager
    def control(self) -> Iterator[Session]:
        """A writing transaction of the replicas' leases, on PostgreSQL on connections no API
        or controller read or write can hold."""
        if self._control is None:
            with self.session() as session:
                yield session
            return
        with self._control.begin() as session:
            yield session

    @contextmanager
    def exclusive(self) -> Iterator[Session]:
        """A writing transaction that runs alone among the servers sharing this database (on
        PostgreSQL an advisory lock; SQLite's writers take turns anyway): first-start work."""
        with self.session() as session:
            if self.dialect == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_START})
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A transaction that only reads (on SQLite it takes no write lock)."""
        with self._readers() as session:
            session.connection(execution_options={"wharf_reader": True})
            yield session
            session.rollback()

    def current_revision(self) -> str | None:
        # Read alembic's table directly: its MigrationContext logs two lines at info on every
        # call, and readiness probes call this every few seconds (on the readers' connections,
        # as `ping`: not behind writers waiting for a row lock).
        with self.reading_engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if version is None else str(version)

    def ping(self) -> bool:
        with self.reading_engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def dispose(self) -> None:
        self.engine.dispose()
        self.reading_engine.dispose()
        self.control_engine.dispose()


def migrate(db: Database) -> str:
    """Upgrade the schema to the newest revision; return it."""
    config = _alembic_config(db.url)
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            # Replicas starting together on an empty database: one migrates, the others wait.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_START})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return schema_head()
