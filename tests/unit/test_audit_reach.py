"""Who reads which part of the audit trail, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wharf.audit.service import reach_of
from wharf.identity.model import Grant, Principal, TokenScope
from wharf.store import Database, migrate
from wharf.store.audit import AuditEvent, query, record


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    with database.session() as session:
        for actor, kind, tenant, project, name in (
            ("alice", "Project", "a", "web", "web"),
            ("alice", "Application", "a", "web", "shop"),
            ("bob", "Application", "a", "api", "orders"),
            ("carol", "Application", "b", "news", "feed"),
            ("dave", "User", "", "", "dave"),  # a login
            ("dave", "Application", "b", "news", "probe"),  # dave's attempt in tenant b
            ("erin", "User", "", "", "erin"),
        ):
            record(
                session,
                AuditEvent(actor, "", "apply", kind, tenant, name, "allowed", project=project),
            )
    yield database
    database.dispose()


def _names(db: Database, p: Principal, **filters: str) -> set[str]:
    with db.reader() as session:
        return {e["name"] for e in query(session, reach=reach_of(p), **filters)}  # type: ignore[arg-type]


def test_platform_readers_read_everything(db: Database):
    viewer = Principal("v", frozenset({Grant("viewer")}))
    assert _names(db, viewer) == {"web", "shop", "orders", "feed", "dave", "probe", "erin"}
    assert _names(db, viewer, tenant="b") == {"feed", "probe"}


def test_tenant_admins_read_their_tenant_and_their_own_logins(db: Database):
    admin = Principal("dave", frozenset({Grant("tenant-admin", "a")}))
    assert _names(db, admin) == {"web", "shop", "orders", "dave"}
    # Their own attempt in another tenant stays out: the view holds nothing of tenant b.
    assert _names(db, admin, tenant="b") == set()


def test_project_members_read_their_project_only(db: Database):
    developer = Principal("erin", frozenset({Grant("developer", "a", "web")}))
    assert _names(db, developer) == {"web", "shop", "erin"}
    assert _names(db, developer, project="api") == set()


def test_a_scoped_token_narrows_the_view(db: Database):
    admin = Principal("root", frozenset({Grant("platform-admin")}), TokenScope(tenant="b"))
    assert _names(db, admin) == {"feed", "probe"}
    project_token = Principal(
        "root", frozenset({Grant("platform-admin")}), TokenScope(tenant="a", project="api")
    )
    assert _names(db, project_token) == {"orders"}
