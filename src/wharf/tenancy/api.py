"""REST for what tenancy adds beyond the generic routes: project kubeconfigs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.tenancy.kubeconfig import issue_kubeconfig

router = APIRouter(prefix="/api/v1", tags=["Project"])


class KubeCluster(BaseModel):
    class KubeServer(BaseModel):
        """The cluster entry of Wharf's own kubeconfig for it (server, CA, …)."""

        model_config = ConfigDict(extra="allow")

        server: str
        certificate_authority_data: str | None = Field(
            default=None, alias="certificate-authority-data"
        )
        insecure_skip_tls_verify: bool | None = Field(
            default=None, alias="insecure-skip-tls-verify"
        )

    name: str
    cluster: KubeServer


class KubeUser(BaseModel):
    class KubeToken(BaseModel):
        token: str = Field(description="A service-account token of the project's namespace")

    name: str
    user: KubeToken


class KubeContext(BaseModel):
    class KubeContextEntry(BaseModel):
        cluster: str
        user: str
        namespace: str

    name: str
    context: KubeContextEntry


class Kubeconfig(BaseModel):
    """A kubeconfig file (as JSON, which kubectl reads too): one context per cluster."""

    apiVersion: str = "v1"
    kind: str = "Config"
    clusters: list[KubeCluster]
    users: list[KubeUser]
    contexts: list[KubeContext]
    current_context: str = Field(alias="current-context")


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
) -> Kubeconfig:
    state = request.app.state
    config = await issue_kubeconfig(
        state.resources, state.cluster_rules, state.connections, p, tenant, project, env, ttl
    )
    return Kubeconfig.model_validate(config)
