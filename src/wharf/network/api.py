"""REST for the NodePort register: a tenant's ranges and held ports, and a cluster's register."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.network.service import cluster_node_ports, node_port_view, reachability
from wharf.store import Database

router = APIRouter(prefix="/api/v1", tags=["Network"])
Caller = Annotated[Principal, Depends(current_principal)]


class PortRange(BaseModel):
    cluster: str
    first: int
    last: int


class HeldPort(BaseModel):
    cluster: str
    nodePort: int = Field(description="The port on every node of the cluster")
    project: str
    namespace: str
    application: str
    service: str = Field(description="The application's Service")
    port: int = Field(description="The Service port it exposes")
    tenant: str | None = Field(default=None, description="Only in a cluster's register")


class TenantNodePorts(BaseModel):
    """A tenant's node port ranges and the ports its applications hold (those the caller's
    projects hold, for a project member)."""

    tenant: str
    ranges: list[PortRange]
    ports: list[HeldPort]


class ClusterNodePorts(BaseModel):
    """Every port of one cluster's register, by tenant (platform readers)."""

    cluster: str
    ports: list[HeldPort]


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


@router.get("/tenants/{tenant}/nodeports", summary="A tenant's node port ranges and held ports")
def tenant_node_ports(tenant: str, p: Caller, request: Request) -> TenantNodePorts:
    with _db(request).reader() as session:
        return TenantNodePorts.model_validate(node_port_view(session, p, tenant))


@router.get("/clusters/{cluster}/nodeports", summary="Every port of a cluster's register")
def node_ports_of_cluster(cluster: str, p: Caller, request: Request) -> ClusterNodePorts:
    with _db(request).reader() as session:
        ports = cluster_node_ports(session, p, cluster)
    return ClusterNodePorts.model_validate({"cluster": cluster, "ports": ports})


class Reachability(BaseModel):
    """Whether traffic may flow, by the NetworkPolicies Wharf renders, and why."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    port: int
    environment: str
    allowed: bool
    reasons: list[str] = Field(description="What the source's egress and target's ingress say")


@router.get(
    "/tenants/{tenant}/reachability",
    summary="May one endpoint reach another on a TCP port? (by the rendered NetworkPolicies)",
)
def reachable(
    tenant: str,
    p: Caller,
    request: Request,
    env: Annotated[str, Query(description="The environment, e.g. dev")],
    from_: Annotated[
        str, Query(alias="from", description="project/application, an IP address, or dns")
    ],
    to: Annotated[str, Query(description="project/application, an IP address, or dns")],
    port: Annotated[int, Query(ge=1, le=65535, description="TCP port")],
) -> Reachability:
    with _db(request).reader() as session:
        answer = reachability(session, p, tenant, env, from_, to, port)
    return Reachability.model_validate(answer)
