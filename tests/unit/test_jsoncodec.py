"""The JSON codec of the database's columns and the API's answers keeps values exactly."""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import text

from wharf.core import jsoncodec
from wharf.store import Database, migrate
from wharf.store.resources import ResourceStore


def test_integers_of_any_size_and_unicode_round_trip_exactly() -> None:
    value = {"big": 2**80, "negative": -(2**70), "text": "ünïcode ✓", "nested": [1.5, None]}
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.loads(jsoncodec.encode(value)) == value


def test_what_only_the_standard_library_reads_is_still_read() -> None:
    # NaN and Infinity are not JSON; an older release's json.dumps wrote them.
    assert math.isnan(jsoncodec.loads('{"x": NaN}')["x"])
    assert jsoncodec.loads("[Infinity]") == [math.inf]


def test_a_stored_spec_keeps_a_big_integer_and_an_old_nan(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(db)
    with db.session() as session:
        ResourceStore(session).create(
            "Tenant", "", "acme", labels={}, annotations={}, spec={"n": 2**80}
        )
    with db.session() as session:  # as a release writing NaN left it
        session.execute(text("UPDATE resources SET status = '{\"score\": NaN}'"))
    with db.reader() as session:
        stored = ResourceStore(session).get("Tenant", "", "acme")
    assert stored is not None
    assert stored.spec == {"n": 2**80}
    assert math.isnan(stored.status["score"])
