"""The console's incidents: a tenant's list (by project and state, a page at a time) and an
incident's page with its timeline, links to its application's logs and charts, and the forms
to acknowledge, resolve, assign and annotate it.

Every read and action goes through wharf.alerts.service, as the REST API's do: a project's
viewers read but may not act (403, nothing changes), another tenant's users find nothing
(404). The forms carry the session's CSRF token like every console form."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, Response

from wharf.alerts.service import act_on_incident, get_incident, list_incidents, may_act
from wharf.core.errors import InvalidError

from .web import Viewer, page, render, resources, see_other, tenant_names

router = APIRouter(prefix="/console", include_in_schema=False)
STATES = ("open", "acknowledged", "resolved")
LIST_PAGE = 50
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Action = Literal["ack", "resolve", "note", "assign"]


def incident_url(tenant: str, incident_id: int) -> str:
    return f"/console/tenants/{tenant}/incidents/{incident_id}"


@router.get("/incidents", response_class=HTMLResponse)
def incidents(request: Request, tenant: str = "", project: str = "", state: str = "") -> Response:
    def build(who: Viewer) -> Response:
        tenants = tenant_names(request, who)
        chosen = tenant or (tenants[0] if len(tenants) == 1 else "")
        if state and state not in STATES:
            raise InvalidError(f"state: choose one of {', '.join(STATES)}", field="state")
        found = None
        if chosen:
            token = request.query_params.get("continue") or None
            found = list_incidents(
                resources(request), who.principal, chosen, project or None, state or None,
                LIST_PAGE, token,
            )  # fmt: skip
        return render(
            request,
            "incidents.html",
            who,
            tenants=tenants,
            tenant=chosen,
            project=project,
            state=state,
            states=STATES,
            items=found.items if found else [],
            next=found.next if found else None,
        )

    return page(request, build)


@router.get("/tenants/{tenant}/incidents/{incident_id}", response_class=HTMLResponse)
def incident(request: Request, tenant: str, incident_id: IncidentId) -> Response:
    def build(who: Viewer) -> Response:
        found = get_incident(resources(request), who.principal, tenant, incident_id)
        can_act = may_act(who.principal, tenant, found["project"])
        return render(request, "incident.html", who, incident=found, can_act=can_act)

    return page(request, build)


@router.post("/tenants/{tenant}/incidents/{incident_id}/{action}")
def act(
    request: Request,
    tenant: str,
    incident_id: IncidentId,
    action: Action,
    csrf: Annotated[str, Form()] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
    assignee: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        service = resources(request)
        act_on_incident(service, who.principal, tenant, incident_id, action, text, assignee.strip())
        return see_other(incident_url(tenant, incident_id))

    return page(request, build, csrf)
