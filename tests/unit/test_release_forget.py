"""An application deleted takes its releases along in the delete's own transaction: one made
again under the same name (perhaps in another project, by other people) starts with none of the
old one's history, whether or not the release controller has run since."""

from __future__ import annotations

import datetime as dt

from wharf.identity.model import Principal
from wharf.releases.service import (
    add_measurement,
    create_release,
    latest_release,
    measurements,
)
from wharf.server.platform import Platform
from wharf.store.resources import StoredResource


def test_deleting_an_application_drops_its_releases_and_measurements(
    idle_platform: Platform,
):
    platform = idle_platform
    db = platform.db
    now = dt.datetime.now(dt.UTC)
    old = StoredResource(
        id=1, kind="Application", tenant="acme", name="web", uid="u1", generation=2,
        resource_version=3, labels={}, annotations={}, spec={"project": "shop"}, status={},
        created_at=now, updated_at=now,
    )  # fmt: skip
    with db.session() as session:
        made = create_release(session, "acme", "web", 2, 1, {"clusters": {}})
        add_measurement(session, made, "lab1", 1, "error-rate", "errors", "Successful", 0.0, "")
        other = create_release(session, "acme", "api", 2, 1, {"clusters": {}})
    with db.session() as session:
        platform.application_rules.after_write(session, None, old, Principal(user="admin"))
    with db.reader() as session:
        assert latest_release(session, "acme", "web") is None
        kept = latest_release(session, "acme", "api")
        assert kept is not None
        assert kept.id == other.id
        assert measurements(session, made.id) == []
