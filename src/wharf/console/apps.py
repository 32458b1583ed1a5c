"""Console pages for applications: the list, live status (server-sent events), revisions with
diff, configuration versions, roll back, and delivery from the catalog through a form built
from the template's parameter schema."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from wharf.apps.model import APP_TEMPLATE, APPLICATION
from wharf.apps.service import CHANGE_CAUSE, list_revisions, revision_changes, rollback
from wharf.core.audit import diff
from wharf.core.errors import ForbiddenError, InvalidError, NotFoundError, WharfError
from wharf.identity.api import authenticate_request
from wharf.logs.model import LiveBounds, LogLine, LogSearch
from wharf.logs.service import (
    DENIED,
    AccessEndedError,
    HistoryLogs,
    LiveLogs,
    LogsUnavailableError,
)
from wharf.tenancy.model import PROJECT_LABEL

from .forms import fields_of, values_from
from .web import (
    SignedOut,
    Viewer,
    error_page,
    listing,
    login_redirect,
    page,
    render,
    resources,
    see_other,
    sse_event,
    templates,
    tenant_names,
    viewer,
)

router = APIRouter(prefix="/console", include_in_schema=False)
STREAM_POLL_SECONDS = 1.0
STREAM_LIFETIME_SECONDS = 300  # the browser reconnects; a long-lived stream never goes stale
LOG_VIEW_LINES = 100  # the log view starts with each container's last lines


def _app_url(tenant: str, name: str) -> str:
    return f"/console/tenants/{tenant}/applications/{name}"


@router.get("/applications", response_class=HTMLResponse)
def applications(request: Request, tenant: str = "", project: str = "") -> Response:
    def build(who: Viewer) -> Response:
        if project and not tenant:
            raise InvalidError("project: choose the tenant too", field="project")
        selector = f"{PROJECT_LABEL}={project}" if project else None
        apps, following = listing(request, who, "Application", tenant or None, selector)
        return render(
            request,
            "applications.html",
            who,
            apps=apps,
            next=following,
            tenants=tenant_names(request, who),
            tenant=tenant,
            project=project,
        )

    return page(request, build)


def _config_versions(revisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The revisions that changed the configuration, each with what changed in it (from the
    revisions already read, secrets masked there)."""
    versions = []
    for before, after in itertools.pairwise(revisions):
        old, new = before["spec"].get("config"), after["spec"].get("config")
        if old != new:
            versions.append(
                {
                    "revision": after["revision"],
                    "actor": after["actor"],
                    "time": after["time"],
                    "changes": diff(old, new, "config"),
                }
            )
    return versions


@router.get("/tenants/{tenant}/applications/{name}", response_class=HTMLResponse)
def application(request: Request, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        service = resources(request)
        app, spec = service.read(who.principal, APPLICATION, tenant, name)
        with service.db.reader() as session:  # the read above has authorized this one
            revisions = list_revisions(session, tenant, name)
        project = spec.project
        return render(
            request,
            "application.html",
            who,
            app=app,
            revisions=list(reversed(revisions)),
            config_versions=list(reversed(_config_versions(revisions))),
            can_deliver=who.principal.can_deliver(tenant, project),
        )

    return page(request, build)


@router.get("/tenants/{tenant}/applications/{name}/status", response_class=HTMLResponse)
def application_status(request: Request, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        app = resources(request).get(who.principal, "Application", tenant, name)
        return render(request, "app_status.html", who, app=app)

    return page(request, build)


@router.get("/tenants/{tenant}/applications/{name}/stream")
async def application_stream(request: Request, tenant: str, name: str) -> Response:
    """Server-sent events: the status fragment again whenever the application changes.

    It reads the database rather than listening in-process, so a status written by another
    replica's controllers reaches the browser too."""
    try:
        who = await run_in_threadpool(viewer, request)
        service = resources(request)
        await run_in_threadpool(service.get, who.principal, "Application", tenant, name)
    except SignedOut:
        return Response("sign in first", status_code=401)
    except WharfError as exc:
        return Response(exc.message, status_code=exc.status)

    async def events() -> AsyncIterator[str]:
        seen = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_LIFETIME_SECONDS
        yield "retry: 2000\n\n"
        while loop.time() < deadline and not await request.is_disconnected():
            try:
                # The session is checked again on every poll: a logout, an expiry, a disabled
                # user or a revoked role ends the stream at once, not when it would time out.
                now = await run_in_threadpool(viewer, request)
                app = await run_in_threadpool(
                    service.get, now.principal, "Application", tenant, name
                )
            except SignedOut:
                yield "event: signed-out\ndata: the session ended\n\n"
                return
            except NotFoundError:
                yield "event: gone\ndata: deleted\n\n"
                return
            except WharfError:
                return
            version = app["metadata"]["resourceVersion"]
            if version != seen:
                seen = version
                html = templates.get_template("app_status.html").render(app=app, me=who)
                yield sse_event("status", html)
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/tenants/{tenant}/applications/{name}/logs", response_class=HTMLResponse)
def application_logs(request: Request, tenant: str, name: str) -> Response:
    """The application's live log view, a page of its own: its stream ends and reconnects
    while the application has no pods, which must not disturb the status page's stream."""

    def build(who: Viewer) -> Response:
        app, _spec = resources(request).read(who.principal, APPLICATION, tenant, name)
        return render(request, "logs.html", who, app=app)

    return page(request, build)


def log_event(entry: LogLine) -> str:
    """A log line as the log view appends it: an escaped HTML row in one event."""
    return sse_event("line", templates.get_template("log_line.html").render(entry=entry))


@router.get("/tenants/{tenant}/applications/{name}/logs/stream")
async def application_log_stream(request: Request, tenant: str, name: str) -> Response:
    """Server-sent events: the application's last log lines from every cluster, then each new
    one as its pod writes it, as an HTML row (escaped) to append to the log view."""
    service: LiveLogs = request.app.state.live_logs
    try:
        who = await run_in_threadpool(viewer, request)
        service.slots.check(who.principal.user)  # a user at the cap costs no cluster read
        places, pairs = await service.targets(who.principal, tenant, name)
    except SignedOut:
        return Response("sign in first", status_code=401)
    except WharfError as exc:
        return Response(exc.message, status_code=exc.status, headers=exc.headers())
    bounds = LiveBounds.of(lines=LOG_VIEW_LINES, timeout=STREAM_LIFETIME_SECONDS)

    caller = partial(authenticate_request, request)
    allowed = service.may_read(caller, tenant, name, None, places)
    try:
        give_back = service.slots.take(who.principal.user, bounds.timeout, len(pairs))
    except WharfError as exc:
        return Response(exc.message, status_code=exc.status, headers=exc.headers())

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            async for entry in service.follow(places, pairs, bounds, allowed):
                if await request.is_disconnected():
                    return
                yield log_event(entry)
        except AccessEndedError:
            yield f"event: denied\ndata: {DENIED}\n\n"
        finally:
            give_back()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/tenants/{tenant}/applications/{name}/logs/search", response_class=HTMLResponse)
async def application_log_search(
    request: Request,
    tenant: str,
    name: str,
    q: str = "",
    since: str = "1h",
    regex: bool = False,
    token: Annotated[str | None, Query(alias="continue")] = None,
) -> Response:
    """A page of the application's collected lines (newest first). A refused search or a log
    store that does not answer is said on the page, in words, with the form to try again."""
    try:
        who = await run_in_threadpool(viewer, request)
    except SignedOut:
        return login_redirect(request)
    except WharfError as exc:
        return error_page(request, None, exc)
    history: HistoryLogs = request.app.state.history_logs
    try:
        app, _spec = await run_in_threadpool(
            resources(request).read, who.principal, APPLICATION, tenant, name
        )
    except WharfError as exc:
        return error_page(request, who, exc)
    context: dict[str, Any] = {"app": app, "q": q, "since": since, "regex": regex}
    try:
        search = LogSearch.of(since, None, q or None, regex, token=token)
        answer = await history.search(who.principal, tenant, name, search)
        cursor = answer.cursor
        context.update(
            lines=answer.lines,
            next=cursor.token() if cursor else None,
            kept=answer.kept.as_dict(answer.clamped),
        )
    except (InvalidError, LogsUnavailableError) as exc:
        context.update(lines=[], problem=exc)
    except WharfError as exc:
        return error_page(request, who, exc)
    return render(request, "logs_search.html", who, **context)


@router.get("/tenants/{tenant}/applications/{name}/diff", response_class=HTMLResponse)
def application_diff(
    request: Request,
    tenant: str,
    name: str,
    old: Annotated[int, Query(alias="from")] = 0,
    new: Annotated[int, Query(alias="to")] = 0,
) -> Response:
    def build(who: Viewer) -> Response:
        if old < 1 or new < 1:
            raise InvalidError("from, to: name two revisions (numbers from 1)", field="from")
        changes = revision_changes(resources(request), who.principal, tenant, name, old, new)
        fragment = request.headers.get("HX-Request") == "true"
        return render(
            request,
            "diff.html",
            who,
            changes=changes,
            old=old,
            new=new,
            fragment=fragment,
            app_url=_app_url(tenant, name),
            name=name,
        )

    return page(request, build)


@router.post("/tenants/{tenant}/applications/{name}/rollback")
def application_rollback(
    request: Request,
    tenant: str,
    name: str,
    revision: Annotated[int, Form(ge=1)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    def build(who: Viewer) -> Response:
        rollback(resources(request), who.principal, tenant, name, revision)
        return see_other(_app_url(tenant, name))

    return page(request, build, csrf)


# -- delivery from the catalog -----------------------------------------------------------------
def _deliver_context(
    request: Request, who: Viewer, tenant: str, project: str, query: dict[str, str]
) -> dict[str, Any]:
    """The project, the current application (when changing one), the catalog and the chosen
    template version with its parameter schema."""
    service = resources(request)
    proj = service.get(who.principal, "Project", tenant, project)
    if not who.principal.can_deliver(tenant, project):
        raise ForbiddenError(f"{who.user} may not deliver into project {project!r}")
    app_name = query.get("app", "")
    current, spec = (
        service.read(who.principal, APPLICATION, tenant, app_name) if app_name else (None, None)
    )
    if spec is not None and spec.project != project:
        raise NotFoundError(f"Application {app_name!r} not found in project {project!r}")
    catalog = service.list_(who.principal, "AppTemplate", limit=500)["items"]
    template = query.get("template") or (spec.template.name if spec else "")
    if not template and catalog:
        template = catalog[0]["metadata"]["name"]
    chosen = next((t for t in catalog if t["metadata"]["name"] == template), None)
    if chosen is None:
        raise InvalidError(f"template: no template {template!r} in the catalog", field="template")
    published = [v for v in APP_TEMPLATE.read(chosen).versions if v.published]
    if not published:
        raise InvalidError(f"template: {template!r} has no published version", field="template")
    version = query.get("version") or (spec.template.version if spec else "")
    picked = next((v for v in published if v.version == version), published[-1])
    return {
        "project": proj,
        "current": current,
        "current_spec": spec,
        "catalog": catalog,
        "template": chosen,
        "version": picked,
        "versions": [v.version for v in published],
    }


@router.get("/tenants/{tenant}/projects/{project}/deliver", response_class=HTMLResponse)
def deliver_page(request: Request, tenant: str, project: str) -> Response:
    def build(who: Viewer) -> Response:
        query = dict(request.query_params)
        context = _deliver_context(request, who, tenant, project, query)
        spec = context["current_spec"]
        values = spec.values if spec else {}
        environment = spec.environment if spec else ""
        return render(
            request,
            "deliver.html",
            who,
            fields=fields_of(context["version"].parameters, values),
            form={"name": query.get("app", ""), "environment": environment},
            error=None,
            **context,
        )

    return page(request, build)


@router.post("/tenants/{tenant}/projects/{project}/deliver")
async def deliver(request: Request, tenant: str, project: str) -> Response:
    posted = {k: str(v) for k, v in (await request.form()).items()}

    def build(who: Viewer) -> Response:
        context = _deliver_context(request, who, tenant, project, posted)
        schema = context["version"].parameters
        name = (posted.get("app") or posted.get("name", "")).strip()
        current = context["current"]
        try:
            if not name:
                raise InvalidError(
                    "metadata.name: give the application a name", field="metadata.name"
                )
            values = values_from(schema, posted)
            spec: dict[str, Any] = {
                **(current["spec"] if current else {}),
                "project": project,
                "environment": posted.get("environment", ""),
                "template": {
                    "name": context["template"]["metadata"]["name"],
                    "version": context["version"].version,
                },
                "values": values,
            }
            annotations = dict(current["metadata"]["annotations"]) if current else {}
            annotations[CHANGE_CAUSE] = posted.get("reason", "").strip() or (
                "changed in the console" if current else "delivered from the console"
            )
            manifest = {
                "kind": "Application",
                "metadata": {
                    "name": name,
                    "tenant": tenant,
                    "labels": current["metadata"]["labels"] if current else {},
                    "annotations": annotations,
                },
                "spec": spec,
            }
            resources(request).apply(
                who.principal, manifest, tenant, "Application", name, create_only=current is None
            )
        except WharfError as exc:
            if exc.status in (401, 403, 404):
                raise
            return render(
                request,
                "deliver.html",
                who,
                status_code=exc.status,
                fields=fields_of(
                    schema, {k[2:]: v for k, v in posted.items() if k.startswith("v.")}
                ),
                form={"name": name, "environment": posted.get("environment", "")},
                error=exc,
                **context,
            )
        return see_other(_app_url(tenant, name))

    return await run_in_threadpool(page, request, build, posted.get("csrf", ""))
