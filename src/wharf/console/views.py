"""Console pages. Every page reads through the same services as the REST API, with the same
authorization; the session is a login token in an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from wharf.core.errors import UnauthenticatedError, WharfError
from wharf.identity import service as identity
from wharf.identity.api import SESSION_COOKIE as COOKIE
from wharf.identity.api import current_principal, database
from wharf.identity.model import Principal
from wharf.resources.service import ResourceService
from wharf.store.audit import AuditEvent, record

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)


def _principal(request: Request) -> Principal | None:
    try:
        return current_principal(request)
    except UnauthenticatedError:
        return None


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"user": None, "error": None})


@router.post("/login")
def login(
    request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]
) -> Response:
    source = request.client.host if request.client else ""
    with database(request).session() as session:
        ok = identity.verify_password(session, username, password)
        record(
            session,
            AuditEvent(
                username, source, "login", "User", "", username, "allowed" if ok else "denied"
            ),
        )
        token = (
            identity.issue_token(session, username, "console", dt.timedelta(hours=12))
            if ok
            else None
        )
    if token is None:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"user": None, "error": "Wrong username or password."},
            status_code=401,
        )
    response = RedirectResponse("/console/", status_code=303)
    response.set_cookie(COOKIE, token["token"], httponly=True, samesite="strict", max_age=43200)
    return response


@router.post("/logout")
def logout() -> Response:
    response = _login_redirect()
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def projects(request: Request, tenant: str = "", continue_: str = "") -> Response:
    p = _principal(request)
    if p is None:
        return _login_redirect()
    service: ResourceService = request.app.state.resources
    token = request.query_params.get("continue") or continue_ or None
    try:
        page = service.list_(p, "Project", tenant or None, None, 50, token)
        tenants = [t["metadata"]["name"] for t in service.list_(p, "Tenant", limit=500)["items"]]
    except WharfError as exc:
        return HTMLResponse(f"<p>{exc.message}</p>", status_code=exc.status)
    context: dict[str, Any] = {
        "user": p.user,
        "projects": page["items"],
        "next": page["metadata"]["continue"],
        "tenants": tenants,
        "tenant": tenant,
    }
    return templates.TemplateResponse(request, "projects.html", context)
