"""REST for what tenancy adds beyond the generic routes: project kubeconfigs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.tenancy.kubeconfig import issue_kubeconfig

router = APIRouter(prefix="/api/v1", tags=["Project"])


@router.post(
    "/tenants/{tenant}/projects/{project}/kubeconfig",
    summary="A kubeconfig reaching only this project's namespaces of one environment",
)
async def project_kubeconfig(
    request: Request,
    tenant: str,
    project: str,
    p: Annotated[Principal, Depends(current_principal)],
    env: Annotated[str, Query(description="the environment, e.g. dev")],
    ttl: Annotated[int, Query(description="token lifetime in seconds")] = 8 * 3600,
) -> dict[str, Any]:
    state = request.app.state
    return await issue_kubeconfig(
        state.resources, state.cluster_rules, state.connections, p, tenant, project, env, ttl
    )
