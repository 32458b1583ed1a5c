"""REST for an application's logs: the last lines of its pods, or followed as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from wharf.identity.api import authenticate_request, current_principal
from wharf.identity.model import Principal
from wharf.logs.model import LiveBounds, LogLine, LogSearch
from wharf.logs.service import DENIED, AccessEndedError, HistoryLogs, LiveLogs
from wharf.resources.openapi import response_of

router = APIRouter(prefix="/api/v1/tenants/{tenant}/applications/{name}", tags=["Logs"])
Caller = Annotated[Principal, Depends(current_principal)]


class LogLineModel(BaseModel):
    time: str = Field(description="When the container wrote it (RFC 3339, nanoseconds)")
    cluster: str
    pod: str
    container: str
    line: str


class LogLines(BaseModel):
    items: list[LogLineModel] = Field(description="Oldest first, from every pod, merged by time")


class PodModel(BaseModel):
    cluster: str
    pod: str
    containers: list[str]


class PodList(BaseModel):
    items: list[PodModel]


def live_logs(request: Request) -> LiveLogs:
    service: LiveLogs = request.app.state.live_logs
    return service


Since = Annotated[str | None, Query(description="How far back: 30s, 5m, 2h, 1d (default 1h)")]
Tail = Annotated[int | None, Query(description="Lines, from the end (default 500, max 5000)")]
LimitBytes = Annotated[
    int | None, Query(alias="limitBytes", description="Bytes of text at most (default 1 MiB)")
]
Timeout = Annotated[
    float | None,
    Query(alias="timeout", description="Seconds a followed stream stays open (default 300)"),
]
Follow = Annotated[bool, Query(description="Keep the stream open (server-sent events)")]


@router.get(
    "/pods",
    summary="The application's pods in every cluster it is placed on",
    response_model=None,
    responses=response_of(PodList, "Pods, by cluster"),
)
async def application_pods(
    tenant: str, name: str, p: Caller, request: Request, cluster: str | None = None
) -> JSONResponse:
    service = live_logs(request)
    _, pairs = await service.targets(p, tenant, name, cluster)
    pods: dict[tuple[str, str], PodModel] = {}
    for ref, _container in pairs:
        pods[(ref.cluster, ref.pod)] = PodModel(
            cluster=ref.cluster, pod=ref.pod, containers=list(ref.containers)
        )
    return JSONResponse({"items": [pod.model_dump() for pod in pods.values()]})


@router.get(
    "/logs",
    summary="Logs of the application's pods across its clusters (follow: server-sent events)",
    response_model=None,
    responses=response_of(LogLines, "Lines labelled by cluster and pod"),
)
async def application_logs(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    cluster: str | None = None,
    pod: str | None = None,
    container: str | None = None,
    since: Since = None,
    tail: Tail = None,
    limit_bytes: LimitBytes = None,
    seconds: Timeout = None,
    follow: Follow = False,
) -> Response:
    bounds = LiveBounds.of(since, tail, limit_bytes, seconds)
    service = live_logs(request)
    if follow:
        service.slots.check(p.user)  # a user at the cap costs no cluster read
    places, pairs = await service.targets(p, tenant, name, cluster, pod, container)
    if follow:
        caller = partial(authenticate_request, request)
        allowed = service.may_read(caller, tenant, name, cluster, places)
        give_back = service.slots.take(p.user, bounds.timeout, len(pairs))
        return _events(request, service.follow(places, pairs, bounds, allowed), give_back)
    lines = await service.read(places, pairs, bounds)
    return JSONResponse({"items": [entry.as_dict() for entry in lines]})


@router.get(
    "/pods/{pod}/logs",
    summary="Logs of one of the application's pods (follow: server-sent events)",
    response_model=None,
    responses=response_of(LogLines, "Lines labelled by cluster and pod"),
)
async def pod_logs(
    tenant: str,
    name: str,
    pod: str,
    p: Caller,
    request: Request,
    cluster: str | None = None,
    container: str | None = None,
    since: Since = None,
    tail: Tail = None,
    limit_bytes: LimitBytes = None,
    seconds: Timeout = None,
    follow: Follow = False,
) -> Response:
    return await application_logs(
        tenant,
        name,
        p,
        request,
        cluster,
        pod,
        container,
        since,
        tail,
        limit_bytes,
        seconds,
        follow,
    )


class FoundLineModel(LogLineModel):
    pass


class RetentionModel(BaseModel):
    period: str = Field(description="How long the tenant's lines are kept (spec.logs.retention)")
    oldest: str = Field(description="The oldest instant searched: now less the period")
    clamped: bool = Field(description="`since` was older, and was moved up to `oldest`")


class SearchPage(BaseModel):
    items: list[FoundLineModel] = Field(description="Newest first")
    retention: RetentionModel = Field(
        description="Lines older than the tenant's retention are never returned"
    )
    continue_: str | None = Field(
        None, alias="continue", description="Pass as `continue` for the next page (same query)"
    )


def history_logs(request: Request) -> HistoryLogs:
    service: HistoryLogs = request.app.state.history_logs
    return service


@router.get(
    "/logs/search",
    summary="Search the application's collected logs over a bounded time range (paginated)",
    description="The log store (VictoriaLogs) holds each tenant's lines in its own store "
    "tenant. `since` is required; the range may span 7d; a `since` older than the tenant's "
    "retention (spec.logs.retention) is moved up to it (`retention.clamped`); `limit` at "
    "most 1000; `q` is text the line contains (taken literally) or, with `regex=true`, an "
    "RE2 pattern. 503 (code logs-unavailable) when the log store does not answer.",
    response_model=None,
    responses=response_of(SearchPage, "A page of lines, newest first"),
)
async def search_logs(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    since: Annotated[
        str | None, Query(description="Start: a duration back (1h) or an RFC 3339 time")
    ] = None,
    until: Annotated[str | None, Query(description="End (default now), same forms")] = None,
    q: Annotated[str | None, Query(description="Text the line contains (literal)")] = None,
    regex: Annotated[bool, Query(description="`q` is an RE2 regular expression")] = False,
    cluster: str | None = None,
    pod: str | None = None,
    container: str | None = None,
    limit: Annotated[int | None, Query(description="Lines per page (100, at most 1000)")] = None,
    token: Annotated[str | None, Query(alias="continue", description="The last page's")] = None,
) -> JSONResponse:
    search = LogSearch.of(since, until, q, regex, cluster, pod, container, limit, token)
    answer = await history_logs(request).search(p, tenant, name, search)
    return JSONResponse(
        {
            "items": [entry.as_dict() for entry in answer.lines],
            "continue": answer.cursor.token() if answer.cursor else None,
            "retention": answer.kept.as_dict(answer.clamped),
        }
    )


def _events(
    request: Request, lines: AsyncIterator[LogLine], give_back: Callable[[], None]
) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            async for entry in lines:
                if await request.is_disconnected():
                    return
                yield f"event: line\ndata: {json.dumps(entry.as_dict())}\n\n"
        except AccessEndedError:
            yield f"event: denied\ndata: {DENIED}\n\n"
            return
        finally:
            give_back()
        yield "event: end\ndata: the stream reached its bounds\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
