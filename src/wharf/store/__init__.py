"""The database: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL, migrated by Alembic."""

from wharf.store.database import Database, migrate, schema_head

__all__ = ["Database", "migrate", "schema_head"]
