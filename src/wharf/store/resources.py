"""Storage of every kind of resource in one table, with optimistic concurrency.

Each write bumps `resource_version`; an update names the version it read and fails with a
conflict when the row moved on. `generation` moves only when the spec changes, so that
controllers can tell desired-state changes (observedGeneration) from status writes.

A delete is two steps: `mark_deleting` records it (the row stays, hidden from every read that
does not ask for rows being deleted), and `delete` drops the row once the owning controller has
removed what the object owns in the clusters. The record is what a restarted server resumes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from wharf.core.errors import ConflictError, StaleError
from wharf.store.tables import resource_labels, resources


# Which rows a caller may see: (tenant or "*" for any, names or None for all) pairs, OR-ed.
@dataclass(frozen=True)
class LabelIn:
    """A scope by label rather than by name: rows whose label `key` is one of `values`."""

    key: str
    values: frozenset[str]


# (tenant or "*", the names in it or a label scope or None for all) pairs a caller may list.
Scopes = Sequence[tuple[str, Collection[str] | LabelIn | None]]


@dataclass(frozen=True)
class StoredResource:
    id: int
    kind: str
    tenant: str
    name: str
    uid: str
    generation: int
    resource_version: int
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: dict[str, Any]
    status: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    deleting_since: dt.datetime | None = None


@dataclass(frozen=True)
class SpecPart:
    """Some top-level fields of a stored spec, read without the rest of its row: what a check
    needs of each of many rows. Typed with `spec_of` and a model of those fields."""

    kind: str
    tenant: str
    name: str
    spec: dict[str, Any]
    uid: str
    resource_version: int


FIELDS = tuple(StoredResource.__dataclass_fields__)
# A whole row of the table holds the fields in the dataclass's order, so it is passed as it
# comes (a list page makes a hundred of these; reading each column by name was a tenth of it).
if tuple(resources.c.keys()) != FIELDS:
    raise RuntimeError("StoredResource's fields must follow the resources table's columns")


def _row(row: Any) -> StoredResource:
    return StoredResource(*row)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ResourceStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(
        self,
        kind: str,
        tenant: str,
        name: str,
        *,
        lock: bool = False,
        with_deleting: bool = False,
    ) -> StoredResource | None:
        """One resource; `lock` holds its row until the transaction ends (read-then-write).
        A row being deleted is found only `with_deleting`."""
        query = select(resources).where(
            resources.c.kind == kind, resources.c.tenant == tenant, resources.c.name == name
        )
        if not with_deleting:
            query = query.where(resources.c.deleting_since.is_(None))
        row = self.session.execute(query.with_for_update() if lock else query).first()
        return _row(row) if row else None

    def _filtered(
        self,
        kind: str,
        scopes: Scopes | None,
        selector: Mapping[str, str] | None,
        deleting: bool = False,
    ) -> Any:
        query = select(resources).where(
            resources.c.kind == kind,
            resources.c.deleting_since.is_not(None)
            if deleting
            else resources.c.deleting_since.is_(None),
        )
        if scopes is not None and not any(t == "*" and n is None for t, n in scopes):
            clauses = []
            for tenant, names in scopes:
                clause = resources.c.tenant == tenant if tenant != "*" else None
                if isinstance(names, LabelIn):
                    by_label = (
                        select(resource_labels.c.resource_id)
                        .where(
                            resource_labels.c.resource_id == resources.c.id,
                            resource_labels.c.key == names.key,
                            resource_labels.c.value.in_(sorted(names.values)),
                        )
                        .exists()
                    )
                    clause = by_label if clause is None else and_(clause, by_label)
                elif names is not None:
                    by_name = resources.c.name.in_(sorted(names))
                    clause = by_name if clause is None else and_(clause, by_name)
                if clause is not None:
                    clauses.append(clause)
            query = query.where(or_(*clauses) if clauses else resources.c.id.is_(None))
        for key, value in (selector or {}).items():
            query = query.where(
                select(resource_labels.c.resource_id)
                .where(
                    resource_labels.c.resource_id == resources.c.id,
                    resource_labels.c.key == key,
                    resource_labels.c.value == value,
                )
                .exists()
            )
        return query

    def query(
        self,
        kind: str,
        *,
        scopes: Scopes | None = None,
        selector: Mapping[str, str] | None = None,
        limit: int | None = None,
        after: tuple[str, str] | None = None,
        deleting: bool = False,
    ) -> list[StoredResource]:
        """Resources of a kind ordered by (tenant, name); `after` continues a previous page.
        Live ones, or with `deleting` those whose delete is acknowledged but not finished."""
        query = self._filtered(kind, scopes, selector, deleting)
        if after is not None:
            # A row-value comparison, so both databases seek the (kind, tenant, name) index
            # instead of filtering every row before the page.
            query = query.where(
                tuple_(resources.c.tenant, resources.c.name) > tuple_(after[0], after[1])
            )
        query = query.order_by(resources.c.tenant, resources.c.name)
        if limit is not None:
            query = query.limit(limit)
        return [_row(r) for r in self.session.execute(query)]

    def spec_parts(
        self, kind: str, fields: Sequence[str], *, scopes: Scopes | None = None
    ) -> list[SpecPart]:
        """`fields` of the spec of each live resource of a kind (in `scopes`): the database
        picks them out, so neither the rest of the spec nor labels and status are decoded."""
        columns = [resources.c.spec[f].label(f"spec_{i}") for i, f in enumerate(fields)]
        keys = (resources.c.tenant, resources.c.name, resources.c.uid, resources.c.resource_version)
        query = self._filtered(kind, scopes, None).with_only_columns(*keys, *columns)
        parts = []
        for row in self.session.execute(query):
            values = {f: row[4 + i] for i, f in enumerate(fields) if row[4 + i] is not None}
            parts.append(
                SpecPart(kind, row.tenant, row.name, values, row.uid, row.resource_version)
            )
        return parts

    def count(
        self,
        kind: str,
        *,
        scopes: Scopes | None = None,
        selector: Mapping[str, str] | None = None,
    ) -> int:
        query = self._filtered(kind, scopes, selector).subquery()
        return int(self.session.execute(select(func.count()).select_from(query)).scalar_one())

    def get_many(self, kind: str, keys: Collection[tuple[str, str]]) -> list[StoredResource]:
        if not keys:
            return []
        query = select(resources).where(
            resources.c.kind == kind,
            resources.c.deleting_since.is_(None),
            tuple_(resources.c.tenant, resources.c.name).in_(list(keys)),
        )
        return [_row(r) for r in self.session.execute(query)]

    def create(
        self,
        kind: str,
        tenant: str,
        name: str,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        spec: dict[str, Any],
        status: dict[str, Any] | None = None,
    ) -> StoredResource:
        where = f" in tenant {tenant}" if tenant else ""
        exists = ConflictError(f"{kind} {name!r} already exists{where}", field="metadata.name")
        if self.get(kind, tenant, name, with_deleting=True) is not None:
            raise exists
        now = _now()
        values: dict[str, Any] = {
            "kind": kind,
            "tenant": tenant,
            "name": name,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resource_version": 1,
            "labels": labels,
            "annotations": annotations,
            "spec": spec,
            "status": status or {},
            "created_at": now,
            "updated_at": now,
            "deleting_since": None,
        }
        try:
            new_id = int(
                self.session.execute(
                    insert(resources).values(**values).returning(resources.c.id)
                ).scalar_one()
            )
        except IntegrityError:
            # Created by a concurrent transaction after our read (PostgreSQL reads committed
            # rows only, so both saw none): the unique constraint decides, and says so as 409.
            raise exists from None
        self._write_labels(new_id, labels)
        return StoredResource(id=new_id, **values)

    def _write_labels(self, resource_id: int, labels: Mapping[str, str]) -> None:
        self.session.execute(
            delete(resource_labels).where(resource_labels.c.resource_id == resource_id)
        )
        if labels:
            self.session.execute(
                insert(resource_labels),
                [{"resource_id": resource_id, "key": k, "value": v} for k, v in labels.items()],
            )

    def _update(self, old: StoredResource, expected_version: int, **values: Any) -> StoredResource:
        values["resource_version"] = max(old.resource_version, expected_version) + 1
        values["updated_at"] = _now()
        result = self.session.execute(
            update(resources)
            .where(resources.c.id == old.id, resources.c.resource_version == expected_version)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleError(
                f"{old.kind} {old.name!r} was changed by someone else (resourceVersion "
                f"{expected_version} is stale): read it again and retry",
                field="metadata.resourceVersion",
            )
        fields = {k: getattr(old, k) for k in StoredResource.__dataclass_fields__}
        return StoredResource(**{**fields, **values})

    def update(
        self,
        old: StoredResource,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        spec: dict[str, Any],
        expected_version: int | None = None,
    ) -> StoredResource:
        """Replace labels, annotations and spec; None when nothing differs (no write at all)."""
        if (labels, annotations, spec) == (old.labels, old.annotations, old.spec):
            if expected_version is not None and expected_version != old.resource_version:
                self._update(old, expected_version)  # raises the conflict
            return old
        generation = old.generation + (1 if spec != old.spec else 0)
        new = self._update(
            old,
            old.resource_version if expected_version is None else expected_version,
            labels=labels,
            annotations=annotations,
            spec=spec,
            generation=generation,
        )
        if labels != old.labels:
            self._write_labels(old.id, labels)
        return new

    def reseal(self, old: StoredResource, spec: dict[str, Any]) -> StoredResource:
        """Replace a spec whose meaning is unchanged (its secrets sealed anew, under another
        key): a new resourceVersion, but the same generation, so controllers see no change."""
        return self._update(old, old.resource_version, spec=spec)

    def write_status(self, old: StoredResource, status: dict[str, Any]) -> StoredResource:
        """Replace the status; writes nothing when it is unchanged."""
        if status == old.status:
            return old
        return self._update(old, old.resource_version, status=status)

    def mark_deleting(
        self, old: StoredResource, annotations: dict[str, str] | None = None
    ) -> StoredResource:
        """Record that the object is being deleted (with `annotations` saying how, for its
        controller); its controller finishes and drops it."""
        if old.deleting_since is not None:
            return old
        if annotations:
            return self._update(
                old,
                old.resource_version,
                deleting_since=_now(),
                annotations={**old.annotations, **annotations},
            )
        return self._update(old, old.resource_version, deleting_since=_now())

    def delete(self, old: StoredResource) -> None:
        """Drop the row (and its labels) for good."""
        self.session.execute(delete(resource_labels).where(resource_labels.c.resource_id == old.id))
        self.session.execute(delete(resources).where(resources.c.id == old.id))


def spec_marker(session: Session) -> tuple[int, int, int]:
    """A figure that moves whenever any object is created, deleted, marked for deletion or its
    spec changed (not at status writes): a resync that finds it unmoved knows that no change
    went unannounced since it last looked."""
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(resources.c.generation), 0),
            func.count(resources.c.deleting_since),
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])
