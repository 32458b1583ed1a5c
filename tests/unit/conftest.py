"""Unit-test fixtures shared by the files that drive a whole platform by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wharf.core.config import Settings
from wharf.server.platform import Platform
from wharf.store import Database, migrate


@pytest.fixture
def idle_platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A whole platform on the test's database whose controllers do not run: a test starts
    or drives them itself. Its database is disposed of afterwards."""
    db = Database(database_url)
    migrate(db)
    settings = Settings(
        database_url=database_url,
        secret_key="unit-test-key",
        controllers=False,
        alert_receiver_token_file=tmp_path / "receiver-token",
    )
    try:
        yield Platform(settings, db)
    finally:
        db.dispose()
