"""The console's release page: an application's release as a timeline of steps per cluster
(step, cluster, state, when it began, what its analysis measured), streamed live as the
application page streams its status (re-read from the database once a second)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from wharf.apps.model import APPLICATION, CanaryStep, ReleaseStrategy
from wharf.core.errors import NotFoundError, WharfError
from wharf.releases.service import release_status

from .web import SignedOut, Viewer, page, render, resources, sse_event, templates, viewer

router = APIRouter(prefix="/console", include_in_schema=False)
STREAM_POLL_SECONDS = 1.0
STREAM_LIFETIME_SECONDS = 300  # the browser reconnects; a long-lived stream never goes stale
BLUE_GREEN = ("preview", "switch the live Service", "keep the old pods")


def step_name(step: CanaryStep) -> str:
    if step.setWeight is not None:
        return f"setWeight {step.setWeight}"
    if step.setReplicas is not None:
        return f"setReplicas {step.setReplicas}"
    if step.pause is not None:
        return f"pause {step.pause.duration} s" if step.pause.duration else "pause until promoted"
    assert step.analysis is not None
    return f"analysis {', '.join(step.analysis.templates)}"


def step_names(strategy: ReleaseStrategy) -> list[str]:
    if strategy.type == "blueGreen":
        return list(BLUE_GREEN)
    return [step_name(s) for s in strategy.canary.steps] if strategy.canary else []


def _state(cluster: dict[str, Any], step: int) -> str:
    current = int(cluster.get("step", 0))
    if step in cluster.get("skippedAnalysis", []):
        return "Skipped"
    if step < current:
        return "Passed"
    return str(cluster.get("phase", "Pending"))


def timeline(release: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """One row per step each cluster has begun, in the order of waves and steps, with the
    analysis measurements taken at it."""
    rows = []
    for wave, members in enumerate(release["waves"]):
        for cluster in members:
            state = release["clusters"].get(cluster, {})
            started = state.get("stepsStartedAt") or {}
            for step in sorted(int(s) for s in started):
                measured = [
                    m
                    for m in release["measurements"]
                    if (m["cluster"], m["step"]) == (cluster, step)
                ]
                rows.append(
                    {
                        "wave": wave,
                        "cluster": cluster,
                        "step": step,
                        "name": names[step] if step < len(names) else "promote",
                        "state": _state(state, step),
                        "time": started[str(step)],
                        "weight": state.get("weight"),
                        "analysis": measured,
                    }
                )
            if not started:
                rows.append(
                    {
                        "wave": wave,
                        "cluster": cluster,
                        "step": None,
                        "name": "",
                        "state": state.get("phase", "Pending"),
                        "time": "",
                        "weight": None,
                        "analysis": [],
                    }
                )
    return rows


def _read(request: Request, who: Viewer, tenant: str, name: str) -> dict[str, Any]:
    """The release and its timeline; 404 unless the caller may read the application."""
    service = resources(request)
    app, spec = service.read(who.principal, APPLICATION, tenant, name)
    release = release_status(service, who.principal, tenant, name)
    return {
        "app": app,
        "release": release,
        "rows": timeline(release, step_names(spec.strategy)),
    }


@router.get("/tenants/{tenant}/applications/{name}/release", response_class=HTMLResponse)
def release_page(request: Request, tenant: str, name: str) -> Response:
    def build(who: Viewer) -> Response:
        return render(request, "release.html", who, **_read(request, who, tenant, name))

    return page(request, build)


@router.get("/tenants/{tenant}/applications/{name}/release/stream")
async def release_stream(request: Request, tenant: str, name: str) -> Response:
    """Server-sent events: the timeline again whenever the release changes; the session and
    the caller's right to read the application are checked on every poll."""
    try:
        who = await run_in_threadpool(viewer, request)
        await run_in_threadpool(_read, request, who, tenant, name)
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
                now = await run_in_threadpool(viewer, request)
                context = await run_in_threadpool(_read, request, now, tenant, name)
            except SignedOut:
                yield "event: signed-out\ndata: the session ended\n\n"
                return
            except NotFoundError:
                yield "event: gone\ndata: deleted\n\n"
                return
            except WharfError:
                return
            html = templates.get_template("release_timeline.html").render(me=now, **context)
            if html != seen:
                seen = html
                yield sse_event("timeline", html)
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
