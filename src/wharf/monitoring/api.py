"""REST for a project's and an application's metrics, read from Prometheus by Wharf.

The caller names a project, maybe an application, charts and a time range; Wharf writes the
PromQL with the tenant and project matchers of what the caller may read (404 otherwise). No
selector or expression is taken from the caller.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from wharf.identity.api import current_principal
from wharf.identity.model import Principal
from wharf.monitoring.model import CHARTS, Chart, MetricsAnswer, TopAnswer, time_range
from wharf.monitoring.service import PrometheusReader, charts, top, visible_scope
from wharf.resources.service import ResourceService

router = APIRouter(prefix="/api/v1/tenants/{tenant}/projects/{project}", tags=["Monitoring"])
Caller = Annotated[Principal, Depends(current_principal)]
AppQuery = Annotated[
    str | None, Query(description="One application of the project; leave out for all")
]


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


def reader(request: Request) -> PrometheusReader:
    return PrometheusReader(request.app.state.settings.prometheus_url)


@router.get(
    "/metrics",
    summary="CPU, memory, restarts and replicas over a time range, with the project's quota",
    description="503 (code metrics-unavailable) when Prometheus does not answer.",
)
def project_metrics(
    tenant: str,
    project: str,
    p: Caller,
    request: Request,
    app: AppQuery = None,
    start: Annotated[
        dt.datetime | None, Query(description="Default: an hour before end (at most 7 days)")
    ] = None,
    end: Annotated[dt.datetime | None, Query(description="Default: now")] = None,
    step: Annotated[
        int | None, Query(description="Seconds between points (at most 1100 points)")
    ] = None,
    chart: Annotated[list[Chart] | None, Query(description="Charts (default: all)")] = None,
) -> MetricsAnswer:
    scope = visible_scope(_service(request), p, tenant, project, app)
    when = time_range(start, end, step, dt.datetime.now(dt.UTC))
    return charts(reader(request), scope, when, tuple(chart or CHARTS))


@router.get("/top", summary="Each pod's latest CPU, memory, restarts and readiness")
def project_top(
    tenant: str, project: str, p: Caller, request: Request, app: AppQuery = None
) -> TopAnswer:
    scope = visible_scope(_service(request), p, tenant, project, app)
    return top(reader(request), scope)
