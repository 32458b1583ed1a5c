"""REST for incidents (list, read, ack, resolve, note, assign), the receiver Alertmanager
posts to, a channel's test message, and silences."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from wharf.alerts.controller import Alerting, test_channel
from wharf.alerts.service import (
    INCIDENT_PAGE,
    act_on_incident,
    create_silence,
    expire_silence,
    get_incident,
    list_incidents,
    list_silences,
    receive,
    receiver_allows,
)
from wharf.core.errors import UnauthenticatedError
from wharf.core.resources import ListMeta
from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.resources.service import ResourceService

router = APIRouter(prefix="/api/v1", tags=["Alerts"])
Caller = Annotated[Principal, Depends(current_principal)]


class IncidentAction(BaseModel):
    """What a person adds with the action: a note's text, whom to assign."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(default="", max_length=2000, description="A note, or why")
    assignee: str = Field(default="", max_length=64, description="assign: the user to assign")


class SilenceRequest(BaseModel):
    """Silence a project's alerts (or one rule's) until a time."""

    model_config = ConfigDict(extra="forbid")

    project: str
    rule: str | None = Field(default=None, description="Only this alert rule")
    endsAt: str = Field(description="RFC 3339; at most 30 days ahead")
    comment: str = Field(default="", max_length=500)


class AlertmanagerAlert(BaseModel):
    """One alert as Alertmanager's webhook sends it."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(default="", description="firing or resolved")
    labels: dict[str, str] = Field(default_factory=dict, description="The alert's labels")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="The rule's annotations (summary)"
    )


class AlertmanagerNotification(BaseModel):
    """Alertmanager's webhook body (version 4), as far as Wharf reads it."""

    model_config = ConfigDict(extra="allow")

    alerts: list[AlertmanagerAlert] = Field(default_factory=list, description="The group's alerts")


class Received(BaseModel):
    """What the receiver made of a notification."""

    opened: int
    resolved: int
    ignored: int = Field(description="Alerts naming a rule their tenant and project do not own")


class IncidentEvent(BaseModel):
    """One entry of an incident's timeline."""

    at: str
    actor: str
    action: str = Field(description="opened, acknowledged, resolved, assigned or note")
    text: str


class Incident(BaseModel):
    """An incident: an alert rule firing for one application in one cluster."""

    id: int
    tenant: str
    project: str
    rule: str
    application: str
    cluster: str
    state: str = Field(description="open, acknowledged or resolved")
    severity: str
    summary: str
    assignee: str
    labels: dict[str, str] = Field(description="The alert's labels")
    openedAt: str
    resolvedAt: str | None
    links: dict[str, str] = Field(
        description="The console's pages of the application: its live logs, its project's charts"
    )
    timeline: list[IncidentEvent] | None = None


class IncidentList(BaseModel):
    """A page of incidents, newest first, and where the page ends."""

    metadata: ListMeta = Field(description="Pagination")
    items: list[Incident]


class ChannelTest(BaseModel):
    """Whether the test message was delivered, and why not."""

    delivered: bool
    error: str


class Silence(BaseModel):
    """A silence of a project's alerts, held by Alertmanager."""

    id: str
    project: str | None
    rule: str | None
    endsAt: str
    createdBy: str = ""
    comment: str = ""


class SilenceList(BaseModel):
    items: list[Silence]


class Expired(BaseModel):
    id: str
    state: str


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


def _alerting(request: Request) -> Alerting:
    alerting: Alerting = request.app.state.alerting
    return alerting


@router.post("/alerting/receiver", summary="Alertmanager's webhook (bearer token only)")
async def receiver(
    request: Request,
    payload: AlertmanagerNotification,
    authorization: Annotated[str | None, Header()] = None,
) -> Received:
    if not receiver_allows(_alerting(request).token, authorization):
        raise UnauthenticatedError("the receiver takes Wharf's alerting token only")
    counts = await asyncio.to_thread(receive, _service(request), payload.model_dump())
    return Received.model_validate(counts)


@router.get("/tenants/{tenant}/incidents", summary="Incidents of the projects you read")
def incidents(
    tenant: str,
    p: Caller,
    request: Request,
    project: str | None = None,
    state: Literal["open", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=INCIDENT_PAGE)] = INCIDENT_PAGE,
    continue_: Annotated[str | None, Query(alias="continue")] = None,
) -> IncidentList:
    found = list_incidents(_service(request), p, tenant, project, state, limit, continue_)
    return IncidentList.model_validate({"metadata": {"continue": found.next}, "items": found.items})


# An incident's number: a row id, so within the databases' 64-bit integers (a larger one is a
# 422 naming the parameter, not an overflow in the query).
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the incident's number")]


@router.get("/tenants/{tenant}/incidents/{incident_id}", summary="An incident and its timeline")
def incident(tenant: str, incident_id: IncidentId, p: Caller, request: Request) -> Incident:
    return Incident.model_validate(get_incident(_service(request), p, tenant, incident_id))


@router.post(
    "/tenants/{tenant}/incidents/{incident_id}/{action}",
    summary="ack, resolve, note or assign an incident (audited)",
)
def act(
    tenant: str,
    incident_id: IncidentId,
    action: Literal["ack", "resolve", "note", "assign"],
    p: Caller,
    request: Request,
    body: IncidentAction,
) -> Incident:
    done = act_on_incident(
        _service(request), p, tenant, incident_id, action, body.text, body.assignee
    )
    return Incident.model_validate(done)


@router.post(
    "/tenants/{tenant}/notificationchannels/{name}/test",
    summary="Send a test message on the channel now (audited)",
)
async def test(tenant: str, name: str, p: Caller, request: Request) -> ChannelTest:
    answer = await test_channel(_service(request), _alerting(request), p, tenant, name)
    return ChannelTest.model_validate(answer)


@router.get("/tenants/{tenant}/silences", summary="Active silences of the projects you read")
def silences(tenant: str, p: Caller, request: Request) -> SilenceList:
    url = _alerting(request).alertmanager_url
    items = list_silences(_service(request), p, url, tenant)
    return SilenceList.model_validate({"items": items})


@router.post("/tenants/{tenant}/silences", summary="Silence a project's alerts (audited)")
def silence(tenant: str, body: SilenceRequest, p: Caller, request: Request) -> Silence:
    url = _alerting(request).alertmanager_url
    return Silence.model_validate(
        create_silence(_service(request), p, url, tenant, body.model_dump())
    )


@router.delete("/tenants/{tenant}/silences/{silence_id}", summary="End a silence now (audited)")
def unsilence(tenant: str, silence_id: str, p: Caller, request: Request) -> Expired:
    url = _alerting(request).alertmanager_url
    expire_silence(_service(request), p, url, tenant, silence_id)
    return Expired(id=silence_id, state="expired")
