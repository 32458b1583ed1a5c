"""REST for a release: its status, and promote, pause, resume, abort (each audited)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from wharf.core.resources import Condition
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.releases.service import operate, release_status
from wharf.resources.service import ResourceService

router = APIRouter(prefix="/api/v1/tenants/{tenant}/applications/{name}/release", tags=["Release"])
Caller = Annotated[Principal, Depends(current_principal)]


class ClusterRelease(BaseModel):
    """Where the release stands in one cluster."""

    model_config = ConfigDict(extra="allow")

    phase: str = Field(
        description="Pending, Progressing, WaitingPromote, Inconclusive, Promoting, Promoted, "
        "Failed or RolledBack"
    )
    step: int = Field(default=0, description="Index of the canary step it is at")
    weight: int | None = Field(default=None, description="The canary's weight, percent")
    message: str = Field(default="", description="Why it waits or stopped")
    stepStartedAt: str | None = Field(default=None, description="When the step began (UTC)")
    stepsStartedAt: dict[str, str] = Field(
        default_factory=dict, description="When each step it reached began (UTC), by index"
    )


class Measurement(BaseModel):
    """One analysis measurement, as stored before it was acted on."""

    cluster: str
    step: int
    template: str
    metric: str
    phase: str = Field(description="Successful, Failed, Inconclusive or Error")
    value: float | None = Field(description="The query's result; null for an error")
    message: str = Field(description="Why a measurement is an error")
    time: str = Field(description="RFC 3339, UTC")


class ReleaseStatus(BaseModel):
    """A release of one revision through the environment's clusters, wave by wave."""

    application: str
    revision: int = Field(description="The revision being released")
    stableRevision: int = Field(description="The revision it started from")
    phase: str = Field(description="Progressing, Succeeded, Failed, Aborted or Superseded")
    paused: bool = Field(description="Paused by a person (resume goes on)")
    wave: int = Field(description="Index of the wave under way")
    waves: list[list[str]] = Field(description="Clusters of each wave, in order")
    clusters: dict[str, ClusterRelease]
    message: str
    conditions: list[Condition]
    measurements: list[Measurement]


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


@router.get("", summary="The application's latest release: waves, clusters, steps, measurements")
def status(tenant: str, name: str, p: Caller, request: Request) -> ReleaseStatus:
    return ReleaseStatus.model_validate(release_status(_service(request), p, tenant, name))


@router.post(
    "/{operation}",
    summary="Promote, pause, resume, abort, retry (a failed or aborted release, from its first "
    "step) or skip-analysis (clusters at an analysis step go past it)",
)
def act(
    tenant: str,
    name: str,
    operation: Literal["promote", "pause", "resume", "abort", "retry", "skip-analysis"],
    p: Caller,
    request: Request,
) -> ReleaseStatus:
    return ReleaseStatus.model_validate(operate(_service(request), p, tenant, name, operation))
