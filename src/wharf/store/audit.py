"""Writing and reading audit events. A write goes in the caller's transaction, so that an
allowed change and its audit event commit or roll back together."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, insert, or_, select
from sqlalchemy.orm import Session

from wharf.store.tables import audit_events


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    source: str
    action: str
    kind: str
    tenant: str
    name: str
    outcome: str
    reason: str = ""
    diff: list[dict[str, Any]] | None = None
    project: str = ""


def record(session: Session, event: AuditEvent) -> None:
    values = {
        "actor": event.actor,
        "source": event.source,
        "action": event.action,
        "kind": event.kind,
        "tenant": event.tenant,
        "project": event.project,
        "name": event.name,
        "outcome": event.outcome,
        "reason": event.reason,
    }
    session.execute(
        insert(audit_events).values(
            time=dt.datetime.now(dt.UTC),
            diff=event.diff or [],
            **{k: _fit(k, v) for k, v in values.items()},
        )
    )


def _fit(column: str, value: str) -> str:
    """A refused request is audited with what it named, which may be anything a caller typed:
    cut to the column's length (PostgreSQL refuses longer; SQLite would keep it whole)."""
    length = getattr(audit_events.c[column].type, "length", None)
    return value if length is None or len(value) <= length else value[: length - 1] + "…"


@dataclass(frozen=True)
class Reach:
    """The part of the trail a reader may see: whole tenants, single projects, and the reader's
    own actions outside any tenant (logins, tokens). `everything` is the platform reader's view.
    A reader's own attempts on another tenant stay out, so the view holds nothing of it."""

    everything: bool = False
    tenants: frozenset[str] = frozenset()
    projects: frozenset[tuple[str, str]] = frozenset()
    actor: str = ""

    def condition(self) -> ColumnElement[bool]:
        c = audit_events.c
        parts: list[ColumnElement[bool]] = []
        if self.tenants:
            parts.append(c.tenant.in_(sorted(self.tenants)))
        parts.extend(and_(c.tenant == t, c.project == p) for t, p in sorted(self.projects))
        if self.actor:
            parts.append(and_(c.actor == self.actor, c.tenant == ""))
        return or_(*parts) if parts else false()


def query(
    session: Session,
    *,
    reach: Reach,
    tenant: str | None = None,
    project: str | None = None,
    actor: str | None = None,
    kind: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    name: str | None = None,
    since: dt.datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; `before_id` continues a previous page."""
    q = select(audit_events)
    if not reach.everything:
        q = q.where(reach.condition())
    for column, value in (
        ("tenant", tenant),
        ("project", project),
        ("actor", actor),
        ("kind", kind),
        ("action", action),
        ("outcome", outcome),
        ("name", name),
    ):
        if value:
            q = q.where(audit_events.c[column] == value)
    if since is not None:
        q = q.where(audit_events.c.time >= since)
    if before_id is not None:
        q = q.where(audit_events.c.id < before_id)
    q = q.order_by(audit_events.c.id.desc()).limit(limit)
    rows = []
    for row in session.execute(q):
        item = dict(row._mapping)
        when = item["time"]
        if when.tzinfo is None:  # SQLite returns naive datetimes
            when = when.replace(tzinfo=dt.UTC)
        item["time"] = when.isoformat(timespec="seconds").replace("+00:00", "Z")
        rows.append(item)
    return rows
