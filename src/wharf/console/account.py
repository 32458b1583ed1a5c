"""Console pages for the audit trail (filterable, newest first) and the caller's API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from wharf.audit.service import reach_of
from wharf.core.errors import InvalidError
from wharf.identity import service as identity
from wharf.identity.api import database, throttle
from wharf.store import audit

from .web import PAGE, Viewer, page, render, see_other

router = APIRouter(prefix="/console", include_in_schema=False)
FILTERS = ("tenant", "project", "actor", "kind", "action", "outcome", "name")
OUTCOMES = ("allowed", "denied", "failed")


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        filters = {f: request.query_params.get(f, "").strip() for f in FILTERS}
        if filters["outcome"] and filters["outcome"] not in OUTCOMES:
            raise InvalidError(f"outcome: one of {', '.join(OUTCOMES)}", field="outcome")
        before = request.query_params.get("before", "")
        if before and not before.isdigit():
            raise InvalidError("before: an event id", field="before")
        with database(request).reader() as session:
            events = audit.query(
                session,
                reach=reach_of(who.principal),
                before_id=int(before) if before else None,
                limit=PAGE,
                tenant=filters["tenant"] or None,
                project=filters["project"] or None,
                actor=filters["actor"] or None,
                kind=filters["kind"] or None,
                action=filters["action"] or None,
                outcome=filters["outcome"] or None,
                name=filters["name"] or None,
            )
        return render(
            request,
            "audit.html",
            who,
            events=events,
            filters=filters,
            outcomes=OUTCOMES,
            next=events[-1]["id"] if len(events) == PAGE else None,
        )

    return page(request, build)


@router.get("/tokens", response_class=HTMLResponse)
def tokens(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        with database(request).reader() as session:
            items = identity.list_tokens(session, who.user)
        return render(request, "tokens.html", who, tokens=items, created=None, error=None)

    return page(request, build)


@router.post("/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    name: Annotated[str, Form()],
    days: Annotated[int, Form(ge=1, le=365)] = 30,
    tenant: Annotated[str, Form()] = "",
    project: Annotated[str, Form()] = "",
    read_only: Annotated[bool, Form()] = False,
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        if not name.strip():
            raise InvalidError("name: give the token a name", field="name")
        with database(request).session() as session:
            created = identity.create_token(
                session,
                who.principal,
                name.strip(),
                dt.timedelta(days=days),
                tenant.strip(),
                project.strip(),
                read_only,
                password or None,
                throttle=throttle(request),
            )
        with database(request).reader() as session:
            items = identity.list_tokens(session, who.user)
        # The secret is shown on this response only; it is kept nowhere but as a hash.
        return render(request, "tokens.html", who, tokens=items, created=created, error=None)

    return page(request, build, csrf)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, csrf: Annotated[str, Form()] = "") -> Response:
    def build(who: Viewer) -> Response:
        with database(request).session() as session:
            identity.delete_token(session, who.principal, token_id)
        return see_other("/console/tokens")

    return page(request, build, csrf)
