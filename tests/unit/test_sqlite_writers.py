"""On SQLite, the server's writers take turns in the process: a writer waits for the one
before it on a lock that hands over at its commit, not in SQLite's busy handler (which
sleeps and polls, up to 100 ms a time, while holding one of the pool's connections)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from wharf.store import Database, database, migrate


def test_a_second_writer_waits_in_the_process_not_in_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun: list[str] = []
    sqlite_begin = database._on_sqlite_begin

    def on_begin(connection: Any) -> None:  # noted before SQLite is asked for its lock
        if not connection.get_execution_options().get("wharf_reader"):
            begun.append(threading.current_thread().name)
        sqlite_begin(connection)

    monkeypatch.setattr(database, "_on_sqlite_begin", on_begin)
    db = Database(f"sqlite:///{tmp_path / 'wharf.db'}")
    migrate(db)
    # Two connections in the pool first (a new one's PRAGMAs would wait for the writer too).
    with db.reader() as one, db.reader() as two:
        one.execute(text("SELECT 1"))
        two.execute(text("SELECT 1"))
    begun.clear()  # the migration's
    holding, done = threading.Event(), threading.Event()

    def first() -> None:
        with db.session() as session:
            session.execute(text("SELECT 1"))
            holding.set()
            done.wait(10)

    def second() -> None:
        with db.session() as session:
            session.execute(text("SELECT 1"))

    one = threading.Thread(target=first, name="first")
    two = threading.Thread(target=second, name="second")
    one.start()
    assert holding.wait(10)
    two.start()
    time.sleep(0.3)
    assert begun == ["first"]  # the old code had the second one polling inside SQLite
    done.set()
    one.join(10)
    two.join(10)
    assert begun == ["first", "second"]
    db.dispose()
