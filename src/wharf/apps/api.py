"""REST for what applications add beyond the generic routes: history, diff and rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from wharf.apps.service import history, revision_changes, rollback
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.service import ResourceService

router = APIRouter(prefix="/api/v1/tenants/{tenant}/applications/{name}", tags=["Application"])
Caller = Annotated[Principal, Depends(current_principal)]


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


@router.get("/revisions", summary="Every delivery of the application, oldest first")
def revisions(tenant: str, name: str, p: Caller, request: Request) -> dict[str, Any]:
    return {"items": history(_service(request), p, tenant, name)}


@router.get("/revisions/diff", summary="What changed between two revisions")
def revision_diff(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    from_: Annotated[int, Query(alias="from", ge=1)],
    to: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    changes = revision_changes(_service(request), p, tenant, name, from_, to)
    return {"from": from_, "to": to, "changes": changes}


@router.post("/rollback", summary="Deliver an earlier revision again (as a new revision)")
def rollback_to(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    revision: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    return rollback(_service(request), p, tenant, name, revision)
