"""Console charts of a project or an application: server-rendered SVG, no script, no CDN.

Each chart is drawn from Wharf's own `MetricsAnswer` (the same the API answers), with the
project's quota as dashed lines. When Prometheus does not answer, each panel says so and the
rest of the page (names, range choice, links) is served as usual.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from wharf.monitoring.model import ChartAnswer, MetricsAnswer, time_range
from wharf.monitoring.service import (
    MetricsUnavailableError,
    PrometheusReader,
    charts,
    visible_scope,
)

from .web import Viewer, page, render, resources

router = APIRouter(prefix="/console", include_in_schema=False)
RANGES = {"15m": 15, "1h": 60, "6h": 360, "24h": 1440, "7d": 10080}  # minutes
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TITLES = {"cpu": "CPU", "memory": "Memory", "restarts": "Restarts", "replicas": "Replicas"}
WIDTH, HEIGHT, PAD = 560, 200, 40


def _figure(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.0f}Mi" if value < 2**30 else f"{value / 2**30:.1f}Gi"
    if unit == "cores":
        return f"{value * 1000:.0f}m" if value < 1 else f"{value:.2f}"
    return f"{value:g}"


def svg(chart: ChartAnswer, start: float, end: float) -> Markup:
    """One chart: a polyline per line, the quota dashed, the range on the x axis."""
    values = [v for line in chart.lines for _, v in line.points] + [q.value for q in chart.quota]
    top = max(values, default=1.0) * 1.1 or 1.0
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return PAD + (t - start) / span * (WIDTH - 2 * PAD)

    def y(v: float) -> float:
        return HEIGHT - PAD / 2 - v / top * (HEIGHT - PAD)

    title = f"{TITLES[chart.chart]} ({chart.unit})" if chart.unit else TITLES[chart.chart]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-chart="{chart.chart}" aria-label="{escape(title)}">',
        f'<text x="{PAD}" y="14" class="chart-title">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{WIDTH - PAD}" y2="{y(0):.1f}" class="axis"/>',
        f'<text x="2" y="{y(top / 1.1) + 4:.1f}" class="tick">'
        f"{escape(_figure(top / 1.1, chart.unit))}</text>",
    ]
    for i, line in enumerate(chart.lines):
        colour = COLOURS[i % len(COLOURS)]
        label = "/".join([*line.labels.values(), line.name])
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points)
        parts.append(
            f'<polyline class="series" data-line="{escape(label)}" fill="none" '
            f'stroke="{colour}" stroke-width="2" points="{points}"><title>{escape(label)}</title>'
            "</polyline>"
        )
        parts.append(
            f'<text x="{WIDTH - PAD + 2}" y="{24 + 12 * i}" class="legend" fill="{colour}">'
            f"{escape(label)}</text>"
        )
    for quota in chart.quota:
        parts.append(
            f'<line class="quota" data-resource="{escape(quota.resource)}" x1="{PAD}" '
            f'y1="{y(quota.value):.1f}" x2="{WIDTH - PAD}" y2="{y(quota.value):.1f}" '
            'stroke="#d62728" stroke-dasharray="6 4"/>'
            f'<text x="{PAD + 4}" y="{y(quota.value) - 3:.1f}" class="tick" fill="#d62728">'
            f"quota {escape(quota.resource)} {escape(_figure(quota.value, chart.unit))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _answer(
    request: Request, who: Viewer, tenant: str, project: str, app: str | None, range_: str
) -> tuple[MetricsAnswer | None, str]:
    scope = visible_scope(resources(request), who.principal, tenant, project, app)
    now = dt.datetime.now(dt.UTC)
    when = time_range(now - dt.timedelta(minutes=RANGES[range_]), now, None, now)
    reader = PrometheusReader(request.app.state.settings.prometheus_url)
    try:
        return charts(reader, scope, when), ""
    except MetricsUnavailableError as exc:
        return None, exc.message


@router.get("/tenants/{tenant}/projects/{project}/metrics", response_class=HTMLResponse)
def metrics_page(
    request: Request, tenant: str, project: str, app: str | None = None, range: str = "1h"
) -> Response:
    def build(who: Viewer) -> Response:
        range_ = range if range in RANGES else "1h"
        answer, unavailable = _answer(request, who, tenant, project, app or None, range_)
        drawn = (
            [svg(c, answer.start.timestamp(), answer.end.timestamp()) for c in answer.charts]
            if answer
            else []
        )
        return render(
            request,
            "metrics.html",
            who,
            tenant=tenant,
            project=project,
            app=app or "",
            range=range_,
            ranges=list(RANGES),
            answer=answer,
            charts=drawn,
            unavailable=unavailable,
        )

    return page(request, build)
