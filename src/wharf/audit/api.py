"""GET /api/v1/audit: the caller's view of the audit trail, newest first, filterable."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from wharf.core.errors import InvalidError
from wharf.identity.api import current_principal, database
from wharf.identity.model import Principal
from wharf.store import audit

router = APIRouter(prefix="/api/v1", tags=["audit"])


def visible_tenants(p: Principal, tenant: str | None) -> set[str] | None:
    """Platform readers see all events; tenant admins and viewers their tenants' events."""
    if p.can("read"):
        return {tenant} if tenant is not None else None
    mine = {g.tenant for g in p.grants if g.tenant and p.can("read", g.tenant)}
    if p.token_scope.tenant:
        mine &= {p.token_scope.tenant}
    return mine & {tenant} if tenant is not None else mine


@router.get("/audit", summary="Audit events, newest first")
def list_events(
    request: Request,
    p: Annotated[Principal, Depends(current_principal)],
    tenant: str | None = None,
    actor: str | None = None,
    kind: str | None = None,
    action: str | None = None,
    outcome: Annotated[str | None, Query(pattern="^(allowed|denied|failed)$")] = None,
    name: str | None = None,
    since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(description="continue below this event id")] = None,
) -> dict[str, Any]:
    tenants = visible_tenants(p, tenant)
    when = None
    if since:
        try:
            when = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidError("since: use an ISO 8601 time", field="since") from None
    if tenants is not None and not tenants:
        return {"items": [], "metadata": {"continue": None}}
    with database(request).reader() as session:
        items = audit.query(
            session,
            tenants=tenants,
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
