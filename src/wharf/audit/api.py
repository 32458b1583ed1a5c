"""GET /api/v1/audit: the caller's view of the audit trail, newest first, filterable."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from wharf.audit.service import reach_of
from wharf.core.errors import InvalidError
from wharf.identity.api import current_principal, database
from wharf.identity.model import Principal
from wharf.store import audit

router = APIRouter(prefix="/api/v1", tags=["audit"])


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
    before: Annotated[int | None, Query(description="continue below this event id")] = None,
) -> dict[str, Any]:
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
    return {
        "items": items,
        "metadata": {"continue": items[-1]["id"] if len(items) == limit else None},
    }
