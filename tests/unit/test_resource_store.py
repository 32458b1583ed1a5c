"""The generic resource table on SQLite and PostgreSQL: versions, labels, scopes and pages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from wharf.core.errors import ConflictError
from wharf.store import Database, migrate
from wharf.store.resources import LabelIn, ResourceStore, Scopes, StoredResource
from wharf.store.tables import resource_labels, resources

KIND = "Widget"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def _create(
    db: Database,
    tenant: str,
    name: str,
    *,
    kind: str = KIND,
    labels: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> StoredResource:
    with db.session() as session:
        return ResourceStore(session).create(
            kind,
            tenant,
            name,
            labels=labels or {},
            annotations={"note": "made by a test"},
            spec=spec if spec is not None else {"size": 1},
        )


def _get(db: Database, tenant: str, name: str, kind: str = KIND) -> StoredResource | None:
    with db.session() as session:
        return ResourceStore(session).get(kind, tenant, name)


def _must_get(db: Database, tenant: str, name: str) -> StoredResource:
    stored = _get(db, tenant, name)
    assert stored is not None
    return stored


def _content(r: StoredResource) -> tuple[Any, ...]:
    """Everything but the timestamps (SQLite hands them back without a time zone)."""
    return (
        r.id,
        r.kind,
        r.tenant,
        r.name,
        r.uid,
        r.generation,
        r.resource_version,
        r.labels,
        r.annotations,
        r.spec,
        r.status,
    )


def _label_rows(db: Database, resource_id: int) -> dict[str, str]:
    with db.session() as session:
        rows = session.execute(
            select(resource_labels.c.key, resource_labels.c.value).where(
                resource_labels.c.resource_id == resource_id
            )
        )
        return {row.key: row.value for row in rows}


# --- create and get ---------------------------------------------------------------------------


def test_create_then_get_returns_what_was_stored(db: Database) -> None:
    spec = {"size": 3, "nested": {"list": [1, "two", None], "flag": True}, "ratio": 0.5}
    with db.session() as session:
        created = ResourceStore(session).create(
            KIND,
            "acme",
            "w1",
            labels={"app": "web", "wharf.io/tier": "front"},
            annotations={"note": "hello"},
            spec=spec,
            status={"phase": "Pending"},
        )
    assert created.generation == 1
    assert created.resource_version == 1
    assert len(created.uid) == 36
    got = _get(db, "acme", "w1")
    assert got is not None
    assert _content(got) == _content(created)
    assert got.spec == spec
    assert got.status == {"phase": "Pending"}
    assert got.created_at is not None
    assert got.updated_at is not None
    assert _label_rows(db, created.id) == {"app": "web", "wharf.io/tier": "front"}


def test_get_of_an_absent_resource_is_none(db: Database) -> None:
    _create(db, "acme", "w1")
    assert _get(db, "acme", "w2") is None
    assert _get(db, "other", "w1") is None
    assert _get(db, "acme", "w1", kind="Gadget") is None


def test_status_defaults_to_empty(db: Database) -> None:
    created = _create(db, "acme", "w1")
    assert created.status == {}
    assert _must_get(db, "acme", "w1").status == {}


def test_creating_the_same_kind_tenant_and_name_twice_is_a_conflict(db: Database) -> None:
    first = _create(db, "acme", "w1")
    with pytest.raises(ConflictError) as caught:
        _create(db, "acme", "w1", spec={"size": 99})
    assert caught.value.field == "metadata.name"
    assert _content(_must_get(db, "acme", "w1")) == _content(first)


def test_the_same_name_may_exist_in_other_tenants_and_kinds(db: Database) -> None:
    a = _create(db, "acme", "w1")
    b = _create(db, "other", "w1")
    c = _create(db, "", "w1")
    d = _create(db, "acme", "w1", kind="Gadget")
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert len({a.uid, b.uid, c.uid, d.uid}) == 4


# --- update ---------------------------------------------------------------------------------


def _update(db: Database, old: StoredResource, **changes: Any) -> StoredResource:
    values: dict[str, Any] = {
        "labels": old.labels,
        "annotations": old.annotations,
        "spec": old.spec,
    }
    values.update(changes)
    with db.session() as session:
        return ResourceStore(session).update(old, **values)


def test_update_with_a_stale_version_is_a_conflict_and_changes_nothing(db: Database) -> None:
    v1 = _create(db, "acme", "w1", labels={"app": "web"})
    v2 = _update(db, v1, spec={"size": 2}, expected_version=1)
    assert v2.resource_version == 2
    with pytest.raises(ConflictError) as caught:
        _update(db, v1, labels={"app": "db"}, spec={"size": 3}, expected_version=1)
    assert caught.value.field == "metadata.resourceVersion"
    after = _must_get(db, "acme", "w1")
    assert _content(after) == _content(v2)
    assert after.spec == {"size": 2}
    assert _label_rows(db, v1.id) == {"app": "web"}


def test_update_from_a_stale_read_without_expected_version_is_a_conflict(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    v2 = _update(db, v1, spec={"size": 2})
    with pytest.raises(ConflictError):
        _update(db, v1, spec={"size": 3})
    assert _content(_must_get(db, "acme", "w1")) == _content(v2)


def test_every_write_moves_resource_version_past_the_version_it_replaced(db: Database) -> None:
    # "Each write bumps resource_version": a write that matched version 2 must leave a version
    # above 2, or a client still holding version 2 could overwrite it without a conflict.
    v1 = _create(db, "acme", "w1")
    v2 = _update(db, v1, spec={"size": 2})
    written = _update(db, v1, spec={"size": 3}, expected_version=v2.resource_version)
    stored = _must_get(db, "acme", "w1")
    assert stored.resource_version > v2.resource_version
    assert written.resource_version == stored.resource_version
    with pytest.raises(ConflictError):
        _update(db, v2, spec={"size": 4}, expected_version=v2.resource_version)
    assert _must_get(db, "acme", "w1").spec == {"size": 3}


def test_identical_update_with_a_stale_version_is_still_a_conflict(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    v2 = _update(db, v1, spec={"size": 2})
    with pytest.raises(ConflictError):
        _update(db, v2, expected_version=1)
    assert _must_get(db, "acme", "w1").resource_version == 2


def test_an_identical_update_writes_nothing(db: Database) -> None:
    v1 = _create(db, "acme", "w1", labels={"app": "web"})
    before = _must_get(db, "acme", "w1")
    same = _update(
        db,
        v1,
        labels={"app": "web"},
        annotations=dict(v1.annotations),
        spec={"size": 1},
        expected_version=1,
    )
    assert same.resource_version == 1
    assert same.generation == 1
    after = _must_get(db, "acme", "w1")
    assert _content(after) == _content(before)
    assert after.updated_at == before.updated_at


def test_a_spec_change_bumps_generation_and_resource_version(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    v2 = _update(db, v1, spec={"size": 2}, expected_version=1)
    assert (v2.generation, v2.resource_version) == (2, 2)
    stored = _must_get(db, "acme", "w1")
    assert (stored.generation, stored.resource_version) == (2, 2)
    assert stored.spec == {"size": 2}
    assert stored.uid == v1.uid
    v3 = _update(db, v2, spec={"size": 3})
    assert (v3.generation, v3.resource_version) == (3, 3)


def test_a_labels_only_change_bumps_only_resource_version(db: Database) -> None:
    v1 = _create(db, "acme", "w1", labels={"app": "web"})
    v2 = _update(db, v1, labels={"app": "web", "tier": "front"})
    assert (v2.generation, v2.resource_version) == (1, 2)
    stored = _must_get(db, "acme", "w1")
    assert (stored.generation, stored.resource_version) == (1, 2)
    assert stored.labels == {"app": "web", "tier": "front"}
    assert _label_rows(db, v1.id) == {"app": "web", "tier": "front"}


def test_an_annotations_only_change_bumps_only_resource_version(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    v2 = _update(db, v1, annotations={"note": "changed"})
    assert (v2.generation, v2.resource_version) == (1, 2)
    assert _must_get(db, "acme", "w1").annotations == {"note": "changed"}


def test_removing_labels_removes_their_rows(db: Database) -> None:
    v1 = _create(db, "acme", "w1", labels={"app": "web", "tier": "front"})
    _update(db, v1, labels={"tier": "back"})
    assert _label_rows(db, v1.id) == {"tier": "back"}
    with db.session() as session:
        store = ResourceStore(session)
        assert store.query(KIND, selector={"app": "web"}) == []
        assert [r.name for r in store.query(KIND, selector={"tier": "back"})] == ["w1"]


# --- status ---------------------------------------------------------------------------------


def test_write_status_with_an_unchanged_status_writes_nothing(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    with db.session() as session:
        v2 = ResourceStore(session).write_status(v1, {"phase": "Ready"})
    assert (v2.generation, v2.resource_version) == (1, 2)
    before = _must_get(db, "acme", "w1")
    with db.session() as session:
        same = ResourceStore(session).write_status(v2, {"phase": "Ready"})
    assert same.resource_version == 2
    after = _must_get(db, "acme", "w1")
    assert _content(after) == _content(before)
    assert after.updated_at == before.updated_at
    assert after.status == {"phase": "Ready"}


def test_write_status_on_a_stale_read_is_a_conflict(db: Database) -> None:
    v1 = _create(db, "acme", "w1")
    _update(db, v1, spec={"size": 2})
    with pytest.raises(ConflictError), db.session() as session:
        ResourceStore(session).write_status(v1, {"phase": "Ready"})
    assert _must_get(db, "acme", "w1").status == {}


# --- query and count ------------------------------------------------------------------------

# (tenant, name, labels). Names with '-' and digits check that the database orders by
# plain character order, as Python does (a linguistic collation would put "a1" before "a-2").
FIXTURE = [
    ("umbrella", "zeta", {"app": "web", "tier": "front"}),
    ("acme", "a1", {"app": "db"}),
    ("", "platform-thing", {"app": "web"}),
    ("acme", "a-2", {"app": "web", "tier": "back"}),
    ("acme", "beta", {"app": "web", "tier": "front"}),
    ("umbrella", "alpha", {}),
    ("acme-corp", "alpha", {"app": "web"}),
    ("acme", "a10", {"app": "db", "tier": "back"}),
]
ORDERED = sorted((t, n) for t, n, _ in FIXTURE)


@pytest.fixture
def filled(db: Database) -> Database:
    for tenant, name, labels in FIXTURE:
        _create(db, tenant, name, labels=labels)
    _create(db, "acme", "beta", kind="Gadget", labels={"app": "web"})
    return db


def _keys(
    db: Database,
    *,
    scopes: Scopes | None = None,
    selector: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    with db.session() as session:
        store = ResourceStore(session)
        found = store.query(KIND, scopes=scopes, selector=selector)
        assert store.count(KIND, scopes=scopes, selector=selector) == len(found)
        assert all(r.kind == KIND for r in found)
        return [(r.tenant, r.name) for r in found]


def test_query_orders_by_tenant_then_name(filled: Database) -> None:
    assert _keys(filled) == ORDERED


def test_query_with_label_selectors(filled: Database) -> None:
    def expected(selector: dict[str, str]) -> list[tuple[str, str]]:
        return sorted((t, n) for t, n, labels in FIXTURE if selector.items() <= labels.items())

    for selector in (
        {"app": "web"},
        {"app": "db"},
        {"tier": "back"},
        {"app": "web", "tier": "front"},
        {"app": "db", "tier": "back"},
        {"app": "web", "tier": "nope"},
        {"missing": "x"},
        {},
    ):
        assert _keys(filled, selector=selector) == expected(selector), selector
    assert _keys(filled, selector={"app": "web", "tier": "front"}) == [
        ("acme", "beta"),
        ("umbrella", "zeta"),
    ]


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (None, ORDERED),
        ([("*", None)], ORDERED),
        ([], []),
        ([("acme", None)], [("acme", "a-2"), ("acme", "a1"), ("acme", "a10"), ("acme", "beta")]),
        ([("", None)], [("", "platform-thing")]),
        ([("nobody", None)], []),
        ([("acme", {"beta", "a1", "zeta"})], [("acme", "a1"), ("acme", "beta")]),
        ([("acme", set())], []),
        (
            [("acme", {"beta"}), ("umbrella", None)],
            [("acme", "beta"), ("umbrella", "alpha"), ("umbrella", "zeta")],
        ),
        ([("*", {"alpha"})], [("acme-corp", "alpha"), ("umbrella", "alpha")]),
        (
            [("*", {"alpha"}), ("acme", {"beta"})],
            [("acme", "beta"), ("acme-corp", "alpha"), ("umbrella", "alpha")],
        ),
        ([("acme", None), ("*", None)], ORDERED),
        (
            [("acme", None), ("acme", {"beta"})],
            [("acme", "a-2"), ("acme", "a1"), ("acme", "a10"), ("acme", "beta")],
        ),
    ],
)
def test_query_with_scopes(
    filled: Database, scopes: Scopes | None, expected: list[tuple[str, str]]
) -> None:
    assert _keys(filled, scopes=scopes) == expected


def test_query_with_scopes_and_selector_together(filled: Database) -> None:
    got = _keys(filled, scopes=[("acme", None), ("umbrella", {"zeta"})], selector={"app": "web"})
    assert got == [("acme", "a-2"), ("acme", "beta"), ("umbrella", "zeta")]


@pytest.mark.parametrize("page_size", [1, 2, 3, 100])
def test_pagination_with_after_walks_every_row_once(filled: Database, page_size: int) -> None:
    seen: list[tuple[str, str]] = []
    after: tuple[str, str] | None = None
    with filled.session() as session:
        store = ResourceStore(session)
        for _ in range(len(FIXTURE) + 2):
            page = store.query(KIND, limit=page_size, after=after)
            assert len(page) <= page_size
            if not page:
                break
            seen += [(r.tenant, r.name) for r in page]
            after = (page[-1].tenant, page[-1].name)
    assert seen == ORDERED


def test_pagination_respects_scopes_and_selectors(filled: Database) -> None:
    with filled.session() as session:
        store = ResourceStore(session)
        first = store.query(KIND, selector={"app": "web"}, limit=2)
        rest = store.query(KIND, selector={"app": "web"}, after=(first[-1].tenant, first[-1].name))
    assert [(r.tenant, r.name) for r in first + rest] == _keys(filled, selector={"app": "web"})
    assert len(first) == 2


def test_after_a_key_that_is_not_stored_starts_at_the_next_one(filled: Database) -> None:
    with filled.session() as session:
        page = ResourceStore(session).query(KIND, after=("acme", "b"), limit=2)
    assert [(r.tenant, r.name) for r in page] == [("acme", "beta"), ("acme-corp", "alpha")]


def test_count_counts_per_kind(filled: Database) -> None:
    with filled.session() as session:
        store = ResourceStore(session)
        assert store.count(KIND) == len(FIXTURE)
        assert store.count("Gadget") == 1
        assert store.count("Nothing") == 0
        assert store.count(KIND, scopes=[("acme", None)], selector={"tier": "back"}) == 2


def test_get_many_fetches_exactly_the_named_keys(filled: Database) -> None:
    with filled.session() as session:
        store = ResourceStore(session)
        found = store.get_many(KIND, [("acme", "beta"), ("umbrella", "zeta"), ("acme", "zeta")])
        assert sorted((r.tenant, r.name) for r in found) == [("acme", "beta"), ("umbrella", "zeta")]
        assert store.get_many(KIND, []) == []


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_row_and_its_labels(filled: Database) -> None:
    victim = _must_get(filled, "acme", "beta")
    assert _label_rows(filled, victim.id) == {"app": "web", "tier": "front"}
    with filled.session() as session:
        ResourceStore(session).delete(victim)
    assert _get(filled, "acme", "beta") is None
    assert _label_rows(filled, victim.id) == {}
    with filled.session() as session:
        assert (
            session.execute(
                select(func.count()).select_from(resources).where(resources.c.id == victim.id)
            ).scalar_one()
            == 0
        )
    assert ("acme", "beta") not in _keys(filled, selector={"app": "web"})
    assert _get(filled, "acme", "beta", kind="Gadget") is not None
    assert len(_keys(filled)) == len(FIXTURE) - 1


def test_a_deleted_name_can_be_created_again_as_a_new_object(db: Database) -> None:
    first = _create(db, "acme", "w1", labels={"app": "web"})
    with db.session() as session:
        ResourceStore(session).delete(first)
    second = _create(db, "acme", "w1", labels={"app": "db"})
    assert second.uid != first.uid
    assert second.resource_version == 1
    assert _keys(db, selector={"app": "web"}) == []
    assert _keys(db, selector={"app": "db"}) == [("acme", "w1")]


def test_a_row_being_deleted_is_hidden_kept_and_holds_its_name(filled: Database) -> None:
    victim = _must_get(filled, "acme", "beta")
    with filled.session() as session:
        marked = ResourceStore(session).mark_deleting(victim)
    assert marked.deleting_since is not None
    assert marked.resource_version > victim.resource_version
    # Hidden from every ordinary read: get, query, count, get_many, selectors.
    assert _get(filled, "acme", "beta") is None
    assert ("acme", "beta") not in _keys(filled)
    assert ("acme", "beta") not in _keys(filled, selector={"app": "web"})
    with filled.session() as session:
        store = ResourceStore(session)
        assert store.count(KIND) == len(FIXTURE) - 1
        assert store.get_many(KIND, [("acme", "beta")]) == []
        # … but there for the controller that finishes it, and the name is still taken.
        assert [r.name for r in store.query(KIND, deleting=True)] == ["beta"]
        kept = store.get(KIND, "acme", "beta", with_deleting=True)
        assert kept is not None
        assert kept.uid == victim.uid
        with pytest.raises(ConflictError):
            store.create(KIND, "acme", "beta", labels={}, annotations={}, spec={})
        store.delete(kept)
    with filled.session() as session:
        assert ResourceStore(session).query(KIND, deleting=True) == []


def test_a_scope_by_label_lists_only_the_rows_with_one_of_its_values(db: Database) -> None:
    for tenant, name, team in (
        ("a", "w1", "red"),
        ("a", "w2", "blue"),
        ("a", "w3", "green"),
        ("b", "w4", "red"),
    ):
        _create(db, tenant, name, labels={"team": team})
    scopes: Scopes = [("a", LabelIn("team", frozenset({"red", "green"}))), ("b", None)]
    with db.session() as session:
        store = ResourceStore(session)
        found = [(r.tenant, r.name) for r in store.query(KIND, scopes=scopes)]
        assert found == [("a", "w1"), ("a", "w3"), ("b", "w4")]
        assert store.count(KIND, scopes=scopes) == 3
        # Pages continue across the label scope as anywhere else.
        page = store.query(KIND, scopes=scopes, limit=1, after=("a", "w1"))
        assert [(r.tenant, r.name) for r in page] == [("a", "w3")]


def test_two_concurrent_creates_of_one_name_give_one_row_and_a_conflict(db: Database) -> None:
    """The second transaction read before the first committed; the database's unique
    constraint decides, and the loser gets a 409, not a server error."""
    outcome: list[BaseException | None] = []
    first_in = threading.Event()

    def second() -> None:
        first_in.wait()
        try:
            _create(db, "t", "race")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    with db.session() as session:
        ResourceStore(session).create(
            KIND, "t", "race", labels={}, annotations={}, spec={"size": 1}
        )
        first_in.set()
        time.sleep(0.5)  # let the second one read (nothing yet) and try to insert
    thread.join(timeout=30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConflictError), outcome
    with db.session() as session:
        assert ResourceStore(session).count(KIND) == 1


def test_spec_parts_read_only_the_named_fields_of_live_rows_in_scope(db: Database) -> None:
    _create(db, "acme", "alpha", spec={"quota": {"cpu": "2"}, "members": [{"user": "ann"}]})
    _create(db, "acme", "beta", spec={"members": []})  # no quota: the field is left out
    gone = _create(db, "acme", "gamma", spec={"quota": {"cpu": "1"}})
    _create(db, "other", "alpha", spec={"quota": {"cpu": "9"}})
    with db.session() as session:
        ResourceStore(session).mark_deleting(gone)
    with db.reader() as session:
        parts = ResourceStore(session).spec_parts(KIND, ["quota"], scopes=[("acme", None)])
    assert sorted((p.tenant, p.name, p.spec) for p in parts) == [
        ("acme", "alpha", {"quota": {"cpu": "2"}}),
        ("acme", "beta", {}),
    ]
