"""GET /api/v1/audit: the caller's view of the audit trail, newest first, filterable."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from wharf.audit.service import reach_of
from wharf.core.errors import InvalidError
from wharf.identity.api import current_principal, database
from wharf.identity.model import Principal
from wharf.store import audit

router = APIRouter(prefix="/api/v1", tags=["audit"])


class FieldChange(BaseModel):
    """One leaf that changed; secrets are masked."""

    path: str = Field(description="Dotted path of the field, e.g. spec.quota.cpu")
    old: Any = Field(description="The value before (null when added)")
    new: Any = Field(description="The value after (null when removed)")


class AuditEvent(BaseModel):
    id: int = Field(description="Pass as ?before= for older events")
    time: str = Field(description="RFC 3339, UTC")
    actor: str = Field(description="The user who asked")
    source: str = Field(description="Their address")
    action: str = Field(description="apply, delete, login, rollback, …")
    kind: str
    tenant: str
    project: str
    name: str
    outcome: str = Field(description="allowed, denied or failed")
    reason: str = Field(description="Why it was denied or failed")
    diff: list[FieldChange] = Field(description="What an allowed change changed")


class AuditPage(BaseModel):
    class AuditPageMeta(BaseModel):
        continue_: int | None = Field(
            alias="continue", description="Pass as ?before= for the next page; null at the end"
        )

    items: list[AuditEvent]
    metadata: AuditPageMeta


@router.get("/audit", summary="Audit events, newest first")
def list_events(
    request: Request,
    p: Annotated[Principal, Depends(current_principal)],
    tenant: str | None = None,
    project: str | None = None,
    actor: str | None = None,
    kind: str | None = None,
    action: str | None = None,
    outcome: Annotated[str | None, Query(pattern="^(allowed|denied|failed)$")] = None,
    name: str | None = None,
    since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    # Bounded as the database's 64-bit ids are (a larger number overflowed SQLite: a 500).
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="continue below this event id")
    ] = None,
) -> AuditPage:
    when = None
    if since:
        try:
            when = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidError("since: use an ISO 8601 time", field="since") from None
    with database(request).reader() as session:
        items = audit.query(
            session,
            reach=reach_of(p),
            tenant=tenant,
            project=project,
            actor=actor,
            kind=kind,
            action=action,
            outcome=outcome,
            name=name,
            since=when,
            before_id=before,
            limit=limit,
        )
    return AuditPage.model_validate(
        {
            "items": items,
            "metadata": {"continue": items[-1]["id"] if len(items) == limit else None},
        }
    )
