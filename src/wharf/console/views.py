"""Console pages for the platform's structure: login, overview, clusters, tenants, projects.

Every page reads and writes through the same services as the REST API, with the same
authorization; the session is a login token in an HttpOnly, SameSite=Strict cookie, and every
form that changes something carries the session's CSRF token.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from wharf.audit.service import reach_of
from wharf.clusters.model import NODE_POOL
from wharf.core.errors import ForbiddenError, InvalidError, ThrottledError, WharfError
from wharf.identity import service as identity
from wharf.identity.api import SESSION_COOKIE, database
from wharf.registry.service import project_images, registered
from wharf.store import audit
from wharf.tenancy.model import PROJECT_LABEL, TENANT

from .web import (
    FILTER_TENANTS,
    PAGE,
    Viewer,
    listing,
    page,
    render,
    resources,
    see_other,
    tenant_names,
)

router = APIRouter(prefix="/console", include_in_schema=False)
SESSION_HOURS = 12


def _safe_next(target: str) -> str:
    """Only the console's own pages, never another site (no open redirect)."""
    return target if target.startswith("/console/") and not target.startswith("//") else ""


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "") -> Response:
    return render(request, "login.html", None, error=None, next=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "",
) -> Response:
    source = request.client.host if request.client else ""
    ttl = dt.timedelta(hours=SESSION_HOURS)
    throttle = request.app.state.login_throttle
    try:
        token = identity.log_in(
            database(request), username, password, source, "console", ttl, throttle
        )
    except ThrottledError as exc:
        page = render(
            request, "login.html", None, status_code=429, error=exc.message, next=_safe_next(next)
        )
        page.headers.update(exc.headers())
        return page
    if token is None:
        return render(
            request,
            "login.html",
            None,
            status_code=401,
            error="Wrong username or password.",
            next=_safe_next(next),
        )
    response = see_other(_safe_next(next) or "/console/")
    response.set_cookie(
        SESSION_COOKIE,
        token["token"],
        httponly=True,
        samesite="strict",
        max_age=SESSION_HOURS * 3600,
        path="/",
        secure=_secure(request),
    )
    return response


def _secure(request: Request) -> bool:
    """Session cookies travel over HTTPS only when the console is served over HTTPS, or when
    the setting says so (TLS ends at a proxy in front: WHARF_SECURE_COOKIES)."""
    return request.url.scheme == "https" or bool(request.app.state.settings.secure_cookies)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    def build(who: Viewer) -> Response:
        with database(request).session() as session:
            identity.log_out(session, who.user, request.cookies.get(SESSION_COOKIE, ""))
        response = see_other("/console/login")
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
        )
        return response

    return page(request, build, csrf)


# -- overview ----------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        service = resources(request)
        p = who.principal
        clusters = service.list_(p, "Cluster", limit=PAGE)["items"] if who.platform_reader else []
        tenants = service.list_(p, "Tenant", limit=20)
        with database(request).reader() as session:
            events = audit.query(session, reach=reach_of(p), limit=10)
        return render(
            request,
            "overview.html",
            who,
            clusters=clusters,
            tenants=tenants["items"],
            more_tenants=bool(tenants["metadata"]["continue"]),
            events=events,
        )

    return page(request, build)


# -- clusters ----------------------------------------------------------------------------------
def _platform_page(who: Viewer) -> None:
    if not who.platform_reader:
        raise ForbiddenError(f"{who.user} may not see the platform's clusters")


@router.get("/clusters", response_class=HTMLResponse)
def clusters(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        _platform_page(who)
        items, following = listing(request, who, "Cluster")
        return render(request, "clusters.html", who, clusters=items, next=following)

    return page(request, build)


@router.get("/clusters/{name}", response_class=HTMLResponse)
def cluster(request: Request, name: str) -> Response:
    def build(who: Viewer) -> Response:
        _platform_page(who)
        service = resources(request)
        obj = service.get(who.principal, "Cluster", "", name)
        pools = [
            pool
            for pool in service.list_(who.principal, "NodePool", limit=500)["items"]
            if NODE_POOL.read(pool).cluster == name
        ]
        return render(request, "cluster.html", who, cluster=obj, pools=pools)

    return page(request, build)


# -- tenants -----------------------------------------------------------------------------------
@router.get("/tenants", response_class=HTMLResponse)
def tenants(request: Request) -> Response:
    def build(who: Viewer) -> Response:
        if not who.tenant_reader:
            raise ForbiddenError(f"{who.user} administers no tenant")
        items, following = listing(request, who, "Tenant")
        return render(request, "tenants.html", who, tenants=items, next=following)

    return page(request, build)


@router.get("/tenants/{tenant}", response_class=HTMLResponse)
def tenant(request: Request, tenant: str) -> Response:
    def build(who: Viewer) -> Response:
        obj = resources(request).get(who.principal, "Tenant", "", tenant)
        items, following = listing(request, who, "Project", tenant)
        return render(
            request,
            "tenant.html",
            who,
            tenant=obj,
            projects=items,
            next=following,
            admin=who.principal.is_tenant_admin(tenant),
        )

    return page(request, build)


# -- projects ----------------------------------------------------------------------------------
@router.get("/projects", response_class=HTMLResponse)
def projects(request: Request, tenant: str = "") -> Response:
    def build(who: Viewer) -> Response:
        items, following = listing(request, who, "Project", tenant or None)
        names = tenant_names(request, who)
        return render(
            request,
            "projects.html",
            who,
            projects=items,
            next=following,
            tenants=names,
            tenant=tenant,
            can_create=any(who.principal.is_tenant_admin(t) for t in names),
        )

    return page(request, build)


@router.get("/tenants/{tenant}/projects/{name}", response_class=HTMLResponse)
def project(request: Request, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        obj = resources(request).get(who.principal, "Project", tenant, name)
        apps, following = listing(request, who, "Application", tenant, f"{PROJECT_LABEL}={name}")
        return render(
            request,
            "project.html",
            who,
            project=obj,
            apps=apps,
            next=following,
            can_deliver=who.principal.can_deliver(tenant, name),
        )

    return page(request, build)


@router.get("/tenants/{tenant}/projects/{name}/images", response_class=HTMLResponse)
def images(request: Request, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        signer = request.app.state.platform.token_signer
        found = project_images(database(request), signer, who.principal, tenant, name)
        return render(
            request,
            "images.html",
            who,
            tenant=tenant,
            project=name,
            images=found["items"],
            unreachable=found["unreachable"],
            registries=found["items"] or found["unreachable"] or registered(database(request)),
        )

    return page(request, build)


QUOTA_FIELDS = ("cpu", "memory", "pods")


def _new_project_context(request: Request, who: Viewer) -> dict[str, Any]:
    service = resources(request)
    mine = [
        t
        for t in service.list_(who.principal, "Tenant", limit=FILTER_TENANTS)["items"]
        if who.principal.is_tenant_admin(t["metadata"]["name"])
    ]
    if not mine:
        raise ForbiddenError(f"{who.user} administers no tenant, so cannot create projects")
    clusters = sorted({c for t in mine for c in TENANT.read(t).clusters})
    return {"tenants": [t["metadata"]["name"] for t in mine], "clusters": clusters}


@router.get("/projects/new", response_class=HTMLResponse)
def new_project_page(request: Request, tenant: str = "") -> Response:
    def build(who: Viewer) -> Response:
        context = _new_project_context(request, who)
        form = {"tenant": tenant, "environment": "dev", "clusters": context["clusters"]}
        return render(request, "project_new.html", who, form=form, error=None, **context)

    return page(request, build)


def _members(text: str) -> list[dict[str, str]]:
    members = []
    for part in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        user, _, role = part.partition("=")
        members.append({"user": user.strip(), "role": role.strip() or "developer"})
    return members


@router.post("/projects/new")
async def create_project(request: Request) -> Response:
    form = await request.form()
    fields = {k: str(v) for k, v in form.items()}
    chosen = [str(c) for c in form.getlist("clusters")]

    def build(who: Viewer) -> Response:
        context = _new_project_context(request, who)
        tenant, name = fields.get("tenant", ""), fields.get("name", "").strip()
        manifest = {
            "kind": "Project",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {
                "displayName": fields.get("displayName", ""),
                "quota": {q: fields[q].strip() for q in QUOTA_FIELDS if fields.get(q, "").strip()},
                "members": _members(fields.get("members", "")),
                "environments": [
                    {"name": fields.get("environment", "").strip(), "clusters": chosen}
                ],
            },
        }
        try:
            if not name:
                raise InvalidError("metadata.name: give the project a name", field="metadata.name")
            resources(request).apply(who.principal, manifest, tenant, "Project", name, True)
        except WharfError as exc:
            if exc.status in (401, 403, 404):
                raise
            return render(
                request,
                "project_new.html",
                who,
                status_code=exc.status,
                form={**fields, "clusters": chosen},
                error=exc,
                **context,
            )
        return see_other(f"/console/tenants/{tenant}/projects/{name}")

    return await run_in_threadpool(page, request, build, fields.get("csrf", ""))
