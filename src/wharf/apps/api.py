"""REST for what applications add beyond the generic routes: history, diff and rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from wharf.apps.model import APPLICATION, TemplateRef
from wharf.apps.service import history, revision_changes, rollback
from wharf.audit.api import FieldChange
from wharf.core.resources import resource_model
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.openapi import response_of
from wharf.resources.service import ResourceService

router = APIRouter(prefix="/api/v1/tenants/{tenant}/applications/{name}", tags=["Application"])
Caller = Annotated[Principal, Depends(current_principal)]


class Revision(BaseModel):
    revision: int = Field(description="1 for the first delivery, then one more each time")
    actor: str = Field(description="Who delivered it")
    reason: str = Field(description="Why: the change-cause annotation, or a rollback")
    time: str = Field(description="RFC 3339, UTC")
    template: TemplateRef
    # As `get` shows an Application's spec: config.secrets masked to a fingerprint (a string),
    # which the ApplicationSpec model would refuse (that answer was a 500 once it had secrets).
    spec: dict[str, Any] = Field(
        description="The spec delivered: an ApplicationSpec with config.secrets masked"
    )


class RevisionList(BaseModel):
    items: list[Revision]


class RevisionDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    changes: list[FieldChange]


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


@router.get("/revisions", summary="Every delivery of the application, oldest first")
def revisions(tenant: str, name: str, p: Caller, request: Request) -> RevisionList:
    return RevisionList.model_validate({"items": history(_service(request), p, tenant, name)})


@router.get("/revisions/diff", summary="What changed between two revisions")
def revision_diff(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    from_: Annotated[int, Query(alias="from", ge=1)],
    to: Annotated[int, Query(ge=1)],
) -> RevisionDiff:
    changes = revision_changes(_service(request), p, tenant, name, from_, to)
    return RevisionDiff.model_validate({"from": from_, "to": to, "changes": changes})


@router.post(
    "/rollback",
    summary="Deliver an earlier revision again (as a new revision)",
    response_model=None,
    responses=response_of(resource_model(APPLICATION), "The Application, rolled back"),
)
def rollback_to(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    revision: Annotated[int, Query(ge=1)],
) -> JSONResponse:
    return JSONResponse(rollback(_service(request), p, tenant, name, revision))
