"""The JSON codec of the database's columns and the API's answers keeps values exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from wharf.core import jsoncodec
from wharf.core.config import Settings
from wharf.server.app import create_app
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


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"x": Infinity}}', "Infinity"),
        (b'{"kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"x": NaN}}', "NaN"),
        (
            b'{"kind": "Tenant", "metadata": {"name": "acme"}, '
            b'"spec": {"displayName": "a\\ud800b"}}',
            "surrogate",
        ),
    ],
)
def test_what_is_not_json_text_or_numbers_is_refused_and_nothing_stored(
    tmp_path: Path, body: bytes, says: str
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        admin_password="password-123",
        secret_key="unit-test-key",
        controllers=False,
        alert_receiver_token_file=tmp_path / "receiver-token",
    )
    with TestClient(create_app(settings)) as client:
        login = {"username": "admin", "password": "password-123"}
        token = client.post("/api/v1/login", json=login).json()["token"]
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
        answer = client.put("/api/v1/tenants/acme", content=body, headers=headers)
        assert answer.status_code == 422, answer.text
        assert says in answer.json()["message"]
        assert answer.json()["field"] == "body"
        assert client.get("/api/v1/tenants/acme", headers=headers).status_code == 404
