"""The Alembic migrations build exactly the schema that wharf.store.tables describes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from wharf.store import Database, migrate, schema_head
from wharf.store.resources import ResourceStore
from wharf.store.tables import metadata, resources

# Created by migration 0001 and written with plain SQL; deliberately not in the metadata.
NOT_IN_METADATA = {"installation"}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _flatten(diffs: list[Any]) -> list[tuple[Any, ...]]:
    """compare_metadata nests column changes of one table in a list; flatten to tuples."""
    out: list[tuple[Any, ...]] = []
    for item in diffs:
        if isinstance(item, list):
            out += [tuple(x) for x in item]
        else:
            out.append(tuple(item))
    return out


def _default_text(default: Any) -> str | None:
    if default is None:
        return None
    arg = getattr(default, "arg", default)
    text = str(getattr(arg, "text", arg))
    return text.strip("()'\"")


def _matters(change: tuple[Any, ...]) -> bool:
    op = change[0]
    if op == "remove_table" and change[1].name in NOT_IN_METADATA:
        return False
    if op in {"remove_index", "remove_constraint"}:
        table = getattr(change[1], "table", None)
        if table is not None and table.name in NOT_IN_METADATA:
            return False
    if op == "modify_default":
        _, _, _table, _column, _, live, declared = change
        # SQLite reflects a server default of '' as the SQL text "('')", which Alembic does
        # not match with the declared ''; the defaults are the same.
        if live is not None and declared is not None:
            return _default_text(live) != _default_text(declared)
    return True


def _schema_differences(db: Database) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return [c for c in _flatten(compare_metadata(context, metadata)) if _matters(c)]


def test_migrated_schema_matches_the_metadata(db: Database) -> None:
    assert migrate(db) == schema_head()
    assert _schema_differences(db) == []


def test_migrated_schema_has_every_table_index_and_unique_key(db: Database) -> None:
    migrate(db)
    inspector = inspect(db.engine)
    assert set(inspector.get_table_names()) >= set(metadata.tables) | NOT_IN_METADATA
    for table in metadata.tables.values():
        live = {ix["name"] for ix in inspector.get_indexes(table.name)}
        declared = {ix.name for ix in table.indexes}
        assert declared <= live, table.name
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("resources")}
    assert ("kind", "tenant", "name") in uniques


def test_migrate_records_the_head_revision(db: Database) -> None:
    assert db.current_revision() is None
    head = migrate(db)
    assert head == schema_head()
    assert db.current_revision() == head


def test_migrate_twice_is_harmless(db: Database) -> None:
    migrate(db)
    with db.session() as session:
        ResourceStore(session).create(
            "Widget", "acme", "w1", labels={"app": "web"}, annotations={}, spec={"size": 1}
        )
    tables_before = set(inspect(db.engine).get_table_names())

    assert migrate(db) == schema_head()

    assert db.current_revision() == schema_head()
    assert set(inspect(db.engine).get_table_names()) == tables_before
    assert _schema_differences(db) == []
    with db.session() as session:
        rows = session.execute(select(resources.c.name, resources.c.spec)).all()
        assert [(r.name, r.spec) for r in rows] == [("w1", {"size": 1})]
        assert [
            r.name for r in ResourceStore(session).query("Widget", selector={"app": "web"})
        ] == ["w1"]
