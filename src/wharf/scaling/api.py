"""REST for scaling an application by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from wharf.apps.model import APPLICATION
from wharf.core.resources import resource_model
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.openapi import response_of
from wharf.resources.service import ResourceService
from wharf.scaling.service import scale

router = APIRouter(prefix="/api/v1/tenants/{tenant}/applications/{name}", tags=["Scaling"])
Caller = Annotated[Principal, Depends(current_principal)]


class ScaleRequest(BaseModel):
    """A replica count for the application's Deployments and StatefulSets."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=1000, description="The new number of replicas")
    cluster: str | None = Field(
        default=None, description="Only in this cluster; leave out for every cluster"
    )


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


@router.post(
    "/scale",
    summary="Scale the application by hand (checked against the quota, audited)",
    response_model=None,
    responses=response_of(resource_model(APPLICATION), "The Application, scaled"),
)
def scale_application(
    tenant: str, name: str, body: ScaleRequest, p: Caller, request: Request
) -> JSONResponse:
    return JSONResponse(scale(_service(request), p, tenant, name, body.replicas, body.cluster))
