"""REST for what applications add beyond the generic routes: history, diff and rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from wharf.apps.model import APPLICATION
from wharf.apps.service import CHANGE_CAUSE, list_revisions, revision_spec
from wharf.core.audit import diff, mask
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
    service = _service(request)
    service.get(p, "Application", tenant, name)  # 404 unless the caller may read it
    with service.db.reader() as session:
        return {"items": list_revisions(session, tenant, name)}


@router.get("/revisions/diff", summary="What changed between two revisions")
def revision_diff(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    from_: Annotated[int, Query(alias="from", ge=1)],
    to: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    service = _service(request)
    service.get(p, "Application", tenant, name)
    with service.db.reader() as session:
        old = revision_spec(session, tenant, name, from_)
        new = revision_spec(session, tenant, name, to)
    secret = APPLICATION.secret_fields
    return {"from": from_, "to": to, "changes": diff(mask(old, secret), mask(new, secret))}


@router.post("/rollback", summary="Deliver an earlier revision again (as a new revision)")
def rollback(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    revision: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    service = _service(request)
    current = service.get(p, "Application", tenant, name)
    with service.db.reader() as session:
        spec = revision_spec(session, tenant, name, revision)
    manifest = {
        "kind": "Application",
        "metadata": {
            "name": name,
            "tenant": tenant,
            "labels": current["metadata"]["labels"],
            "annotations": {
                **current["metadata"]["annotations"],
                CHANGE_CAUSE: f"rollback to revision {revision}",
            },
        },
        "spec": spec,
    }
    obj, _ = service.apply(p, manifest, tenant, kind="Application", name=name)
    return obj
